"""The composed-retrieval benchmark: mapping, triplets, ranks, and an end-to-end run on a tiny real BLIP."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fashion_retrieval.cli import app
from fashion_retrieval.data.synthetic import COLORS, GARMENTS, PATTERNS, sample_items
from fashion_retrieval.embeddings import load_embeddings
from fashion_retrieval.errors import FashionRetrievalError
from fashion_retrieval.evaluate.compose import ComposeEvalConfig, evaluate_compose, format_compose_report
from fashion_retrieval.evaluate.compose_tasks import (
    ComposeMapping,
    Triplet,
    build_triplets,
    first_target_ranks,
    synthetic_mapping,
)
from tests.store.conftest import embeddings_dir, store_catalog, store_encoder  # noqa: F401

ATTRIBUTES = ["garment", "color", "pattern", "gender"]


def synthetic_metadata(n: int = 400) -> pd.DataFrame:
    items = sample_items(n, seed=3)
    return pd.DataFrame(
        {
            "id": [i.image_id for i in items],
            "caption": [i.caption for i in items],
            **{a: [getattr(i, a) for i in items] for a in ATTRIBUTES},
        }
    )


def test_synthetic_mapping_covers_the_catalogue_and_round_trips(tmp_path):
    mapping = synthetic_mapping()
    assert set(mapping.attributes) == set(ATTRIBUTES)
    assert set(mapping.attributes["color"].modifiers) == set(COLORS)
    assert set(mapping.attributes["pattern"].modifiers) == set(PATTERNS)
    assert set(mapping.attributes["garment"].modifiers) == set(GARMENTS)
    values = {"garment": "dress", "color": "red", "pattern": "striped", "gender": "WOMEN"}
    assert mapping.description(values) == "The lady wears a red striped dress."
    assert mapping.description(values, omit="color") == "The lady wears a striped dress."
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(mapping.to_dict()))
    assert ComposeMapping.from_json(path) == mapping
    with pytest.raises(FashionRetrievalError, match="negative attribute"):
        ComposeMapping.from_dict({**mapping.to_dict(), "negative_attributes": ["fabric"]})
    with pytest.raises(FashionRetrievalError, match="expected"):
        ComposeMapping.from_dict({"describe": "x"})


def test_triplets_change_exactly_one_attribute():
    meta = synthetic_metadata()
    mapping = synthetic_mapping()
    references = list(range(0, 400, 7))
    triplets = build_triplets(meta, mapping, references)
    assert triplets and {t.reference for t in triplets} <= set(references)
    assert {t.attribute for t in triplets} == set(ATTRIBUTES)
    for t in triplets:
        ref = meta.iloc[t.reference]
        assert t.old == ref[t.attribute] != t.new
        assert t.modifier == mapping.attributes[t.attribute].modifiers[t.new]
        assert len(t.targets) and t.reference not in t.targets
        targets = meta.iloc[t.targets]
        assert (targets[t.attribute] == t.new).all()
        for other in ATTRIBUTES:
            if other != t.attribute:
                assert (targets[other] == ref[other]).all()
        # every item that qualifies is a target: none is missed
        others = [a for a in ATTRIBUTES if a != t.attribute]
        qualifies = (meta[others] == ref[others]).all(axis=1) & (meta[t.attribute] == t.new)
        assert set(np.flatnonzero(qualifies.to_numpy())) == set(t.targets)
    missing = meta.drop(columns=["pattern"])
    with pytest.raises(FashionRetrievalError, match="no attribute"):
        build_triplets(missing, mapping, references)


def test_target_ranks_skip_the_excluded_rows_and_keep_gallery_order_on_ties():
    scores = np.array([[0.9, 0.8, 0.8, 0.1], [0.5, 0.9, 0.2, 0.2]])
    triplets = [
        Triplet(0, "color", "red", "blue", "in blue", np.array([2])),
        Triplet(1, "color", "red", "blue", "in blue", np.array([3, 1])),
    ]
    # query 0: its reference (row 0) is left out; target 2 ties with row 1, which comes first -> rank 2
    # query 1: rows 1 (a target, already shown) and 0 left out; target 3 ties with row 2 -> rank 2
    ranks = first_target_ranks(scores, triplets, [np.array([0]), np.array([0, 1])])
    np.testing.assert_array_equal(ranks, [2, 2])
    assert first_target_ranks(scores[:1], triplets[:1], [np.array([2])])[0] == np.inf


def test_compose_benchmark_end_to_end(embeddings_dir, store_encoder, tmp_path):  # noqa: F811
    data = load_embeddings(embeddings_dir)
    ids = tmp_path / "heldout.txt"
    ids.write_text("\n".join(data.metadata["id"][:6]) + "\n")
    config = ComposeEvalConfig(str(embeddings_dir), query_ids=str(ids), device="cpu")
    report = evaluate_compose(config, encoder=store_encoder)
    triplets = build_triplets(data.metadata, synthetic_mapping(), range(6))
    assert report["references"] == 6 and report["triplets"] == len(triplets) and report["gallery"] == 48
    names = list(report["methods"])
    assert names[:2] == ["image only", "text only"] and names[2].startswith("weighted sum (alpha ")
    assert {"delta (edited, w 1.0)", "caption (edited)", "delta (appended, w 1.0)"} <= set(names)
    for method in report["methods"].values():
        assert 0.0 <= method["recall@10"] <= method["recall@50"] <= 1.0
        assert sum(a["triplets"] for a in method["by_attribute"].values()) == len(triplets)
    # image only, recomputed independently: a target among the 10 best images other than the reference
    hits = []
    for t in triplets:
        scores = data.image_embeddings @ data.image_embeddings[t.reference]
        order = [i for i in np.argsort(-scores, kind="stable") if i != t.reference]
        hits.append(bool(set(order[:10]) & set(t.targets)))
    assert report["methods"]["image only"]["recall@10"] == pytest.approx(np.mean(hits), abs=1e-4)
    best = report["best_new_method"]
    assert report["gain_recall@10"] == pytest.approx(
        report["methods"][best]["recall@10"] - report["methods"][report["best_baseline"]]["recall@10"], abs=1e-4
    )
    assert set(report["sweep"]["sum alpha -> recall@10"]) == {str(a / 10) for a in range(1, 10)}
    for attribute in ("color", "pattern"):
        negatives = report["negatives"][attribute]
        assert negatives["queries"] <= 6 and {"no negative", "default", "penalty 1.0"} <= set(negatives)
        for variant in ("no negative", "default"):
            assert 0.0 <= negatives[variant]["free_of_y@10"] <= 1.0
    feedback = report["feedback"]
    assert feedback["queries"] <= len(triplets)
    if feedback["queries"]:
        assert 0.0 <= feedback["recall@10_before"] <= 1.0 and 0.0 <= feedback["recall@10_after_liked"] <= 1.0
    text = format_compose_report(report)
    assert "image only" in text and "negatives on color" in text and "feedback" in text
    json.dumps(report)  # the CLI prints it as JSON


def test_eval_cli_compose_task(embeddings_dir, tmp_path):  # noqa: F811
    data = load_embeddings(embeddings_dir)
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(data.metadata["id"][:3]) + "\n")
    runner = CliRunner()
    result = runner.invoke(app, ["eval", str(embeddings_dir), "--task", "compose", "--query-ids", str(ids), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["task"] == "compose" and report["references"] == 3 and "image only" in report["methods"]
    bad = runner.invoke(app, ["eval", str(embeddings_dir), "--task", "ranking"])
    assert bad.exit_code == 2 and "use retrieval or compose" in bad.output
    mapping = tmp_path / "mapping.json"
    mapping.write_text(
        json.dumps({"attributes": {"fabric": {"modifiers": {"silk": "in silk"}}}, "describe": "{fabric}"})
    )
    missing = runner.invoke(app, ["eval", str(embeddings_dir), "--task", "compose", "--mapping", str(mapping)])
    assert missing.exit_code == 2 and "no attribute(s) fabric" in missing.output
