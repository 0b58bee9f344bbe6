"""`eval` and `report` on a real embeddings folder; the report opened in Chromium."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fashion_retrieval.cli import app
from fashion_retrieval.embeddings import load_embeddings
from fashion_retrieval.evaluate.evaluate import EvalConfig, evaluate_embeddings
from fashion_retrieval.evaluate.metrics import recall_report
from fashion_retrieval.evaluate.report import ReportConfig, write_report
from tests.serve.test_page import ARTIFACTS, launch_chromium
from tests.store.conftest import embeddings_dir, store_catalog, store_encoder  # noqa: F401


def test_eval_cli_json_matches_library(embeddings_dir):  # noqa: F811
    result = CliRunner().invoke(app, ["eval", str(embeddings_dir), "--ks", "1,3,10", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["text_to_image"]) == {"recall@1", "recall@3", "recall@10", "mrr", "median_rank", "mean_rank"}
    data = load_embeddings(embeddings_dir)
    direct = recall_report(data.image_embeddings, data.text_embeddings, data.metadata["id"].tolist(), (1, 3, 10))
    assert report["text_to_image"] == pytest.approx(direct["text_to_image"])
    assert report["queries"] == 48 and "gender" in report["breakdown_text_to_image"]
    by_attr = evaluate_embeddings(EvalConfig(str(embeddings_dir), relevance="attributes:gender"))
    assert by_attr["text_to_image"]["recall@10"] >= report["text_to_image"]["recall@10"]  # more items relevant
    marqo = evaluate_embeddings(EvalConfig(str(embeddings_dir), protocol="marqo", queries=10, seed=1))
    assert marqo["queries"] == 10 and marqo["gallery"] == 48
    bad = CliRunner().invoke(app, ["eval", str(embeddings_dir), "--relevance", "attributes:fabric"])
    assert bad.exit_code == 2 and "unknown attribute(s) fabric" in bad.output


@pytest.mark.browser
def test_report_has_every_section_and_renders(embeddings_dir, tmp_path):  # noqa: F811
    from playwright.sync_api import sync_playwright

    out = tmp_path / "report" / "report.html"
    summary = write_report(ReportConfig(str(embeddings_dir), str(out), duplicate_threshold=0.9), progress=False)
    page_html = out.read_text()
    for section in (
        "Counts",
        "Similarity of matched vs random",
        "Embedding map",
        "Modality gap",
        "Recall@K per attribute",
        "Sample queries",
        "Near-duplicate images",
    ):
        assert section in page_html, section
    for png in ("similarity.png", "embedding_map.png", "recall_by_attribute.png"):
        assert (out.parent / png).stat().st_size > 1000
    data = load_embeddings(embeddings_dir)
    gap = np.linalg.norm(data.image_embeddings.mean(0) - data.text_embeddings.mean(0))
    assert summary["modality_gap"] == pytest.approx(gap, abs=1e-5)
    assert "src='data:image/png;base64," in page_html  # self-contained
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(out.as_uri())
        assert page.locator("img.plot").count() == 3
        widths = page.locator("img.plot").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
        assert min(widths) > 100  # the inlined plots decoded
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        browser.close()


def test_near_duplicates_are_the_most_similar_pairs(tmp_path):
    """The list is sorted before it is cut: the most similar pairs of the whole folder, not the first found."""
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from fashion_retrieval.embeddings import EmbeddingSet
    from fashion_retrieval.evaluate.report import duplicates_section

    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 256)).astype(np.float32)
    vectors = np.concatenate([base] * 2)  # item i and i + 40 are near-duplicates
    # the later the pair, the closer: a list cut before sorting (first pairs found) would miss the best ones
    vectors[40:] += rng.normal(scale=np.linspace(0.2, 0.001, 40)[:, None], size=(40, 256)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"i{n}" for n in range(80)]
    meta = pd.DataFrame({"id": ids, "path": [str(tmp_path / "none.jpg")] * 80, "caption": ids})
    data = EmbeddingSet(Path(tmp_path), vectors, vectors, meta, {"model": {}}, [])
    html, count = duplicates_section(data, threshold=0.5, shown=3)
    assert count >= 30
    # the three least-noised pairs (39, 79), (38, 78), (37, 77), best first
    positions = [html.index(f"i{a}<br>i{a + 40}") for a in (39, 38, 37)]
    assert positions == sorted(positions)
    assert "i0<br>i40" not in html
