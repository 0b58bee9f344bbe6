"""A whole round per model family, through the real code a user runs: embed -> index (a Milvus Lite file) ->
search (text, image, hybrid, composed) -> serve (the HTTP API) -> eval; and a store built by one model refused
for another, naming both."""

from __future__ import annotations

import importlib.util
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from fashion_retrieval.data.synthetic import make_catalog
from fashion_retrieval.embeddings import load_embeddings
from fashion_retrieval.errors import ModelMismatchError, StoreError, UnsupportedFeatureError
from fashion_retrieval.evaluate.evaluate import EvalConfig, evaluate_embeddings
from fashion_retrieval.model.tiny_families import build_tiny
from fashion_retrieval.pipeline.embed import embed_catalog
from fashion_retrieval.search.searcher import open_searcher
from fashion_retrieval.serve.app import create_app
from fashion_retrieval.serve.config import ServeConfig
from fashion_retrieval.store.indexer import IndexConfig, index_embeddings
from fashion_retrieval.store.milvus import MilvusTarget
from tests.helpers import embed_config

NEEDS_OPEN_CLIP = pytest.mark.skipif(
    importlib.util.find_spec("open_clip") is None, reason="open_clip needs torchvision: runs in .venv-open-clip"
)
FAMILIES = ["clip", "siglip", "chinese_clip", pytest.param("open_clip", marks=[NEEDS_OPEN_CLIP, pytest.mark.open_clip])]
DIMS = {"clip": 64, "siglip": 32, "chinese_clip": 64, "open_clip": 64}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return make_catalog(tmp_path_factory.mktemp("families_cat"), n=24, seed=7, image_size=48)


@pytest.fixture(scope="module")
def captions(catalog):
    import pandas as pd

    return pd.read_csv(catalog, dtype=str)["caption"].tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_embed_index_search_serve_eval(family, catalog, captions, tmp_path):
    base = build_tiny(family, tmp_path / "base", captions)
    out = tmp_path / "emb"
    summary = embed_catalog(embed_config(catalog, base, out), progress=False)
    assert summary["embedded"] == 24 and summary["failed"] == 0
    data = load_embeddings(out)
    dim = DIMS[family]
    assert data.image_embeddings.shape == (24, dim) and data.text_embeddings.shape == (24, dim)
    assert data.manifest["dim"] == dim and data.identity["family"] == family

    db = tmp_path / "fashion.db"
    indexed = index_embeddings(IndexConfig(str(out), MilvusTarget(db=str(db))), progress=False)
    assert indexed["count"] == 24
    searcher = open_searcher(db=str(db), device="cpu")  # the query model comes from the index's record
    try:
        assert searcher.encoder.identity.family == family
        first = data.metadata.iloc[0]
        found = searcher.text(first["caption"], top_k=24).results
        assert len(found) == 24 and first["id"] in [h.id for h in found]
        # the store's scores are the cosines of this model's vectors
        text_vec = searcher.encoder.encode_text(first["caption"])
        by_id = dict(zip(data.metadata["id"], data.image_embeddings, strict=True))
        assert found[0].score == pytest.approx(float(by_id[found[0].id] @ text_vec), abs=1e-4)
        image_hits = searcher.image(first["path"], top_k=3).results
        assert image_hits[0].id == first["id"]  # an image finds itself
        hybrid = searcher.hybrid("a dress", first["path"], alpha=0.0, top_k=3).results
        assert [h.id for h in hybrid] == [h.id for h in image_hits]  # alpha 0 is the image search
        composed = searcher.compose("in red", item=first["id"], top_k=5)
        assert composed.extra["composed_caption"] and first["id"] not in [h.id for h in composed.results]
        with pytest.raises(UnsupportedFeatureError, match="no image-text matching head"):
            searcher.text("a dress", rerank=5)
    finally:
        searcher.store.close()

    config = ServeConfig(db=str(db), device="cpu")
    with TestClient(create_app(config)) as client:
        health = client.get("/api/health").json()
        assert health["model"]["family"] == family and health["model"]["embed_dim"] == dim
        hits = client.post("/api/search/text", json={"query": first["caption"], "top_k": 5}).json()["results"]
        assert len(hits) == 5
        buffer = io.BytesIO()
        Image.open(first["path"]).save(buffer, "JPEG")
        files = {"image": ("q.jpg", buffer.getvalue(), "image/jpeg")}
        assert client.post("/api/search/image", files=files, data={"top_k": "3"}).json()["results"][0]["id"]
        rerank = client.post("/api/search/text", json={"query": "a dress", "rerank": 5})
        assert rerank.status_code == 400 and "image-text matching head" in rerank.json()["detail"]

    report = evaluate_embeddings(EvalConfig(str(out)))
    assert report["queries"] == 24 and 0.0 <= report["text_to_image"]["recall@10"] <= 1.0


def test_a_store_of_one_family_is_refused_for_another_naming_both(catalog, captions, tmp_path):
    clip, siglip = (build_tiny(f, tmp_path / f, captions) for f in ("clip", "siglip"))
    out = tmp_path / "emb_clip"
    embed_catalog(embed_config(catalog, clip, out), progress=False)
    db = tmp_path / "clip.db"
    index_embeddings(IndexConfig(str(out), MilvusTarget(db=str(db))), progress=False)
    with pytest.raises(ModelMismatchError) as caught:
        open_searcher(db=str(db), base=str(siglip), device="cpu")
    message = str(caught.value)
    assert "clip base" in message and "siglip base" in message and "64-d" in message and "32-d" in message


def test_query_vectors_of_another_dimension_are_refused_by_the_store(catalog, captions, tmp_path):
    """The collection's vector fields have the model's dimension: a vector of another size is an error, not a
    silent truncation."""
    clip = build_tiny("clip", tmp_path / "clip", captions)
    out = tmp_path / "emb"
    embed_catalog(embed_config(catalog, clip, out), progress=False)
    db = tmp_path / "fashion.db"
    index_embeddings(IndexConfig(str(out), MilvusTarget(db=str(db))), progress=False)
    from fashion_retrieval.store import open_store

    store = open_store(db=str(db))
    try:
        assert store.dim == 64
        with pytest.raises(StoreError, match=r"query vectors of shape \(1, 32\).*holds 64-d vectors"):
            store.search(np.ones(32, np.float32) / np.sqrt(32), "image", 3)
    finally:
        store.close()
