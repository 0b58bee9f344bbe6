"""Milvus Lite files, a Milvus server by URI, and in-memory search: same answers, safe filters, fusion, rerank."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fashion_retrieval import Searcher, open_store
from fashion_retrieval.config import EmbedConfig, ModelConfig
from fashion_retrieval.embeddings import load_embeddings
from fashion_retrieval.errors import ModelMismatchError, QueryError, StoreError
from fashion_retrieval.model.rerank import itm_scores
from fashion_retrieval.pipeline.embed import embed_catalog
from fashion_retrieval.search.fusion import rrf
from fashion_retrieval.store.base import Hit, milvus_filter
from fashion_retrieval.store.indexer import IndexConfig, index_embeddings
from fashion_retrieval.store.milvus import MilvusStore, MilvusTarget


def _index(embeddings_dir, **target):
    return index_embeddings(IndexConfig(str(embeddings_dir), MilvusTarget(**target)), progress=False)


def _ids(response):
    return [h.id for h in response.results]


@pytest.fixture(scope="module")
def lite_db(tmp_path_factory, embeddings_dir):
    db = tmp_path_factory.mktemp("lite") / "fashion.db"
    summary = _index(embeddings_dir, db=str(db))
    assert summary["created"] and summary["upserted"] == summary["count"] == 48
    return db


@pytest.fixture(scope="module")
def searchers(lite_db, embeddings_dir, store_encoder):
    milvus = Searcher(open_store(db=str(lite_db)), store_encoder)
    memory = Searcher(open_store(embeddings=str(embeddings_dir)), store_encoder)
    yield milvus, memory
    milvus.store.close()


def test_persistence_and_idempotent_reindex(lite_db, embeddings_dir, store_encoder):
    store = open_store(db=str(lite_db))
    before = Searcher(store, store_encoder).text("a red dress", top_k=10)
    store.close()
    again = _index(embeddings_dir, db=str(lite_db))
    assert not again["created"] and again["upserted"] == 48 and again["count"] == 48
    store = open_store(db=str(lite_db))
    after = Searcher(store, store_encoder).text("a red dress", top_k=10)
    store.close()
    assert _ids(after) == _ids(before)
    assert [h.score for h in after.results] == pytest.approx([h.score for h in before.results], abs=1e-5)


def test_milvus_and_memory_agree(searchers, embeddings_dir):
    milvus, memory = searchers
    image = load_embeddings(embeddings_dir).metadata["path"][5]
    for run in (
        lambda s: s.text("The man wears a blue shirt.", top_k=8),
        lambda s: s.text("striped skirt", top_k=8, against="text"),
        lambda s: s.image(image, top_k=8),
        lambda s: s.image(image, top_k=8, against="text"),
        lambda s: s.text("a hoodie", top_k=20, filters={"gender": ["MEN"]}),
        lambda s: s.hybrid("a yellow dress", image, alpha=0.3, top_k=8),
        lambda s: s.hybrid("a yellow dress", image, alpha=0.6, top_k=8, against="text"),
        lambda s: s.hybrid("a yellow dress", image, alpha=0.5, fusion="rrf", top_k=8),
    ):
        a, b = run(milvus), run(memory)
        assert _ids(a) == _ids(b)
        assert [h.score for h in a.results] == pytest.approx([h.score for h in b.results], abs=1e-4)
    assert _ids(memory.image(image, top_k=1))[0] == load_embeddings(embeddings_dir).metadata["id"][5]


def test_filters_in_and_injection(searchers, embeddings_dir):
    meta = load_embeddings(embeddings_dir).metadata
    for searcher in searchers:
        women = searcher.text("a dress", top_k=48, filters={"gender": ["WOMEN"]})
        assert len(women.results) == (meta["gender"] == "WOMEN").sum()
        assert {h.attributes["gender"] for h in women.results} == {"WOMEN"}
        wanted = {"Pants", "Dresses"}
        both = searcher.text("a dress", top_k=5, filters={"product_type": sorted(wanted), "gender": ["WOMEN"]})
        assert both.results and all(h.attributes["product_type"] in wanted for h in both.results)
        injected = searcher.text("a dress", top_k=10, filters={"gender": ['WOMEN" or pk != "']})
        assert injected.results == []
        with pytest.raises(QueryError, match="unknown filter field 'colour'.*filterable fields: "):
            searcher.text("a dress", filters={"colour": ["red"]})
    assert milvus_filter({"g": ['a"b\\c']}, {"g": "g"}) == 'g in ["a\\"b\\\\c"]'


def test_hybrid_extremes_equal_pure_searches(searchers, embeddings_dir):
    image = load_embeddings(embeddings_dir).metadata["path"][9]
    for searcher in searchers:
        for fusion in ("weighted", "rrf"):
            assert _ids(searcher.hybrid("red shirt", image, alpha=1.0, top_k=6, fusion=fusion)) == _ids(
                searcher.text("red shirt", top_k=6)
            )
            assert _ids(searcher.hybrid("red shirt", image, alpha=0.0, top_k=6, fusion=fusion)) == _ids(
                searcher.image(image, top_k=6)
            )
        with pytest.raises(QueryError, match="alpha"):
            searcher.hybrid("red shirt", image, alpha=1.5)
        with pytest.raises(QueryError, match="empty"):
            searcher.text("   ")
        with pytest.raises(QueryError, match="top_k"):
            searcher.text("red", top_k=0)


def test_rrf_on_a_constructed_example():
    a = [Hit("x", 0.9), Hit("y", 0.8), Hit("z", 0.7)]
    b = [Hit("z", 0.9), Hit("x", 0.5), Hit("w", 0.1)]
    fused = rrf([a, b], k=60)
    expected = {"x": 1 / 61 + 1 / 62, "z": 1 / 63 + 1 / 61, "y": 1 / 62, "w": 1 / 63}
    assert [h.id for h in fused] == sorted(expected, key=lambda i: -expected[i])
    assert [h.score for h in fused] == pytest.approx(sorted(expected.values(), reverse=True))
    assert [h.id for h in rrf([a, b], weights=[1.0, 0.0])] == ["x", "y", "z", "w"]


def test_rerank_follows_the_itm_head(searchers, store_encoder):
    for searcher in searchers:
        plain = searcher.text("a green plaid jacket", top_k=10)
        reranked = searcher.text("a green plaid jacket", top_k=5, rerank=10)
        scores = itm_scores(store_encoder, "a green plaid jacket", [h.path for h in plain.results])
        expected = [plain.results[i].id for i in np.argsort(-scores, kind="stable")[:5]]
        assert _ids(reranked) == expected
        assert [h.score for h in reranked.results] == pytest.approx(sorted(scores, reverse=True)[:5], abs=1e-5)


def test_mismatched_model_is_refused(lite_db, tmp_path_factory, store_catalog):
    from fashion_retrieval import FashionEmbeddingModel
    from fashion_retrieval.model.tiny import build_tiny_blip

    other_base = build_tiny_blip(tmp_path_factory.mktemp("other_model"), seed=11)
    other = FashionEmbeddingModel(None, other_base, device="cpu")
    store = open_store(db=str(lite_db))
    with pytest.raises(ModelMismatchError, match="recorded: .*\n  given: "):
        Searcher(store, other)
    store.close()
    out = tmp_path_factory.mktemp("other_emb") / "e"
    embed_catalog(
        EmbedConfig(str(store_catalog), ModelConfig(str(other_base), device="cpu"), out=str(out), workers=0, limit=5),
        encoder=other,
        progress=False,
    )
    with pytest.raises(ModelMismatchError):
        _index(out, db=str(lite_db))
    store = open_store(db=str(lite_db))
    assert store.count() == 48  # nothing was written
    store.close()


def test_delete_missing(tmp_path, store_catalog, store_encoder, tiny_base, embeddings_dir):
    db = str(tmp_path / "d.db")
    _index(embeddings_dir, db=db)
    fewer = tmp_path / "fewer"
    embed_catalog(
        EmbedConfig(str(store_catalog), ModelConfig(str(tiny_base), device="cpu"), out=str(fewer), workers=0, limit=30),
        encoder=store_encoder,
        progress=False,
    )
    summary = index_embeddings(IndexConfig(str(fewer), MilvusTarget(db=db), delete_missing=True), progress=False)
    assert summary["deleted"] == 18 and summary["count"] == 30


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="does not exist.*fashion-retrieval index"):
        open_store(db=str(tmp_path / "none.db"))


def test_server_by_uri_matches_memory(milvus_server, embeddings_dir, store_encoder, searchers):
    summary = _index(embeddings_dir, uri=milvus_server, collection="by_uri")
    assert summary["count"] == 48
    again = _index(embeddings_dir, uri=milvus_server, collection="by_uri")
    assert again["count"] == 48 and not again["created"]
    store = MilvusStore(MilvusTarget(uri=milvus_server, collection="by_uri"))
    remote = Searcher(store, store_encoder)
    _, memory = searchers
    assert _ids(remote.text("a black hoodie", top_k=7, filters={"gender": ["MEN", "WOMEN"]})) == _ids(
        memory.text("a black hoodie", top_k=7, filters={"gender": ["MEN", "WOMEN"]})
    )
    store.close()


def test_cli_index_and_search_json(tmp_path, embeddings_dir, tiny_base):
    from fashion_retrieval.cli import app

    runner = CliRunner()
    db = str(tmp_path / "cli.db")
    result = runner.invoke(app, ["index", str(embeddings_dir), "--db", db, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["count"] == 48
    result = runner.invoke(
        app, ["search", "a red dress", "--db", db, "--filter", "gender=WOMEN", "-k", "3", "--device", "cpu", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["query"]["filters"] == {"gender": ["WOMEN"]} and len(payload["results"]) == 3
    assert {"id", "score", "caption", "path", "gender", "product_type"} <= set(payload["results"][0])
    bad = runner.invoke(app, ["search", "a red dress", "--db", db, "--filter", "nope=1", "--device", "cpu"])
    assert bad.exit_code == 2 and "unknown filter field 'nope'" in bad.output
    described = runner.invoke(app, ["schema", "describe", "--db", db, "--json"])
    fields = {f["name"]: f["type"] for f in json.loads(described.stdout)["fields"]}
    assert fields["pk"] == "VARCHAR" and fields["image_embedding"] == "FLOAT_VECTOR" and "gender" in fields


def test_second_process_gets_a_clear_message(searchers, lite_db):
    import subprocess
    import sys

    code = f"from fashion_retrieval.store import open_store; open_store(db={str(lite_db)!r})"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "one process at a time" in result.stderr and "--uri" in result.stderr
    assert "POST /api/items" in result.stderr  # a server holding the file takes the writes through its API


def test_cli_schema_create_describe_drop(tmp_path, embeddings_dir):
    from fashion_retrieval.cli import app

    runner = CliRunner()
    db = str(tmp_path / "schema.db")
    created = runner.invoke(app, ["schema", "create", "--embeddings", str(embeddings_dir), "--db", db, "--json"])
    assert created.exit_code == 0, created.output
    described = json.loads(created.stdout)
    assert described["count"] == 0 and described["model"]["key"] == load_embeddings(embeddings_dir).identity["key"]
    assert {"pk", "image_embedding", "text_embedding", "caption", "path", "gender"} <= {
        f["name"] for f in described["fields"]
    }
    assert described["indexes"]["image_embedding"]["metric_type"] == "IP"
    again = runner.invoke(app, ["schema", "create", "--embeddings", str(embeddings_dir), "--db", db])
    assert again.exit_code == 2 and "exists already" in again.output
    indexed = runner.invoke(app, ["index", str(embeddings_dir), "--db", db, "--json"])
    assert json.loads(indexed.stdout)["created"] is False and json.loads(indexed.stdout)["count"] == 48
    dropped = runner.invoke(app, ["schema", "drop", "--db", db])
    assert dropped.exit_code == 0 and "dropped fashion_items" in dropped.output
    missing = runner.invoke(app, ["schema", "describe", "--db", db])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_faiss_with_a_selective_filter_keeps_its_recall():
    """A filter passing few rows is searched exactly (an HNSW walk restricted to 3% of its nodes misses most)."""
    from pathlib import Path

    import pandas as pd

    from fashion_retrieval.embeddings import EmbeddingSet
    from fashion_retrieval.store.memory import MemoryStore

    rng = np.random.default_rng(0)
    rows = 20_000
    centres = rng.normal(size=(200, 256))
    vectors = centres[rng.integers(0, 200, rows)] + 0.5 * rng.normal(size=(rows, 256))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    kind = np.where(rng.random(rows) < 0.03, "rare", "common")
    meta = pd.DataFrame({"id": [f"i{i}" for i in range(rows)], "path": "", "caption": "", "kind": kind})
    data = EmbeddingSet(Path("."), vectors, None, meta, {"model": {}}, [])
    exact, hnsw = MemoryStore(data, use_faiss=False), MemoryStore(data, use_faiss=True)
    queries = vectors[:40] + 0.3 * rng.normal(size=(40, 256)).astype(np.float32)
    for filters in ({"kind": ["rare"]}, {"kind": ["common"]}):
        want = [[h.id for h in r] for r in exact.search(queries, "image", 10, filters)]
        got = [[h.id for h in r] for r in hnsw.search(queries, "image", 10, filters)]
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want, strict=True)])
        assert recall >= 0.95, (filters, recall)
        assert all(meta.set_index("id").loc[i, "kind"] == filters["kind"][0] for r in got for i in r)
