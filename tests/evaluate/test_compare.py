"""``compare``: two model families on one catalogue, one table and one self-contained page; a second run reuses
what the first finished (a killed or extended comparison continues)."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest
from typer.testing import CliRunner

from fashion_retrieval.cli import app
from fashion_retrieval.config import ModelConfig
from fashion_retrieval.data.synthetic import make_catalog
from fashion_retrieval.errors import FashionRetrievalError
from fashion_retrieval.evaluate.compare import CompareConfig, compare_models, memory_per_million
from fashion_retrieval.model.tiny_families import build_tiny


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    catalog = make_catalog(folder / "cat", n=40, seed=11, image_size=48)
    captions = pd.read_csv(catalog)["caption"].tolist()
    return catalog, {f: build_tiny(f, folder / f, captions) for f in ("clip", "siglip")}


def test_two_families_one_table_and_page(setup, tmp_path, caplog):
    catalog, bases = setup
    models = tuple(ModelConfig(str(bases[f]), device="cpu", dtype="fp32") for f in ("clip", "siglip"))
    config = CompareConfig(
        str(catalog), models, out=str(tmp_path / "out"), sample=30, workers=0, precision_attributes=("garment",)
    )
    result = compare_models(config, progress=False)
    assert result["items"] == 30
    by_family = {m["family"]: m for m in result["models"]}
    assert set(by_family) == {"clip", "siglip"}
    assert by_family["clip"]["dim"] == 64 and by_family["siglip"]["dim"] == 32
    for model in result["models"]:
        metrics = model["metrics"]
        assert 0.0 <= metrics["recall@1"] <= metrics["recall@10"] <= 1.0 and 0.0 < metrics["mrr"] <= 1.0
        assert 0.0 <= metrics["attribute_precision@10"] <= 1.0
        assert metrics["composed_recall@10"] is not None  # the synthetic catalogue has the modifiers' attributes
        assert model["speed"]["images_per_second"] > 0 and model["speed"]["captions_per_second"] > 0
        assert model["memory_mb_per_million"] == memory_per_million(model["dim"])
    stored = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert stored["models"] == result["models"] and stored["machine"]["cpu"]["model"]
    page = (tmp_path / "out" / "compare.html").read_text()
    assert page.count("<tr>") == 3 and "(clip)" in page and "(siglip)" in page and "data:image/png;base64," in page
    assert "http" not in page.replace("http-equiv", "")  # self-contained: nothing fetched

    caplog.set_level(logging.INFO, logger="fashion_retrieval")
    again = compare_models(config, progress=False)
    assert again["models"] == result["models"]
    assert sum("result of an earlier run reused" in r.getMessage() for r in caplog.records) == 2


def test_cli_continues_a_comparison_with_a_model_added(setup, tmp_path):
    catalog, bases = setup
    out = tmp_path / "out"
    common = [str(catalog), "--out", str(out), "--sample", "20", "--workers", "0", "--device", "cpu", "--no-compose"]
    first = CliRunner().invoke(app, ["compare", *common, "--base", str(bases["clip"]), "--json"])
    assert first.exit_code == 0, first.output
    both = ["--base", str(bases["clip"]), "--base", str(bases["siglip"])]
    second = CliRunner().invoke(app, ["compare", *common, *both])
    assert second.exit_code == 0, second.output
    assert "R@10" in second.stdout and "(clip)" in second.stdout and "(siglip)" in second.stdout
    assert second.output.count("result of an earlier run reused") == 1  # the first model's; the second is new
    assert "already complete" in second.output
    assert (out / "compare.html").is_file()


def test_checkpoints_pair_with_bases_or_are_refused(setup, tmp_path):
    catalog, bases = setup
    args = ["compare", str(catalog), "--base", str(bases["clip"]), "--base", str(bases["siglip"])]
    result = CliRunner().invoke(app, [*args, "--checkpoint", "x.pth", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "one --checkpoint per --base" in result.output
    with pytest.raises(ValueError, match="at least one --base"):
        CompareConfig(str(catalog), ())
    with pytest.raises(FashionRetrievalError):
        compare_models(CompareConfig(str(tmp_path / "missing.csv"), (ModelConfig(str(bases["clip"])),)))
