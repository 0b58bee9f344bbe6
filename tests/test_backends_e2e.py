"""The exported backends through the commands users run: `embed --backend openvino` writes the same folder as
torch (same layout and ids, vectors within the fp32 parity bound) and passes `eval`; a server on an export answers
and says which backend it runs; a store made by torch is queried by OpenVINO. (The Ray engine on an export:
tests/pipeline/test_ray_engine.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fashion_retrieval.cli import app
from fashion_retrieval.data.synthetic import make_catalog
from fashion_retrieval.embeddings import load_embeddings
from fashion_retrieval.search.searcher import open_searcher
from fashion_retrieval.serve.app import create_app
from fashion_retrieval.serve.config import ServeConfig
from fashion_retrieval.store.indexer import IndexConfig, index_embeddings
from fashion_retrieval.store.milvus import MilvusTarget
from tests.helpers import force_backend_speeds

FILES = {"image_embeddings.npy", "text_embeddings.npy", "metadata.parquet", "metadata.pkl", "failures.jsonl"}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return make_catalog(tmp_path_factory.mktemp("backend_cat"), n=20, seed=9, image_size=48)


@pytest.fixture(scope="module")
def torch_folder(tmp_path_factory, catalog, tiny_base):
    out = tmp_path_factory.mktemp("backend_torch") / "emb"
    result = CliRunner().invoke(
        app, ["embed", str(catalog), "--base", str(tiny_base), "--out", str(out), "--workers", "0", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    return out


def test_embed_on_openvino_writes_the_same_folder_and_passes_eval(catalog, tiny_base, torch_folder, tmp_path):
    out = tmp_path / "emb"
    args = ["embed", str(catalog), "--base", str(tiny_base), "--out", str(out), "--workers", "0", "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--backend", "openvino", "--json"])
    assert result.exit_code == 0, result.output
    assert FILES <= {p.name for p in out.iterdir()}
    ours, reference = load_embeddings(out), load_embeddings(torch_folder)
    assert ours.metadata["id"].tolist() == reference.metadata["id"].tolist()
    np.testing.assert_allclose(ours.image_embeddings, reference.image_embeddings, atol=1e-4)
    np.testing.assert_allclose(ours.text_embeddings, reference.text_embeddings, atol=1e-4)
    precision = ours.manifest["precision"]
    assert precision["backend"] == "openvino" and precision["dtype"] == "float32" and precision["parity"]["passed"]
    evaluated = CliRunner().invoke(app, ["eval", str(out), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    assert report["text_to_image"]["recall@10"] == pytest.approx(
        json.loads(CliRunner().invoke(app, ["eval", str(torch_folder), "--json"]).stdout)["text_to_image"]["recall@10"],
        abs=0.05,
    )
    again = CliRunner().invoke(app, [*args, "--backend", "onnxruntime"])
    assert again.exit_code == 2 and "another --backend" in again.output  # a run resumes on the backend it began on


def test_a_torch_store_served_and_searched_on_openvino(torch_folder, tmp_path):
    db = tmp_path / "fashion.db"
    index_embeddings(IndexConfig(str(torch_folder), MilvusTarget(db=str(db))), progress=False)
    query = load_embeddings(torch_folder).metadata["caption"][0]
    torch_searcher = open_searcher(db=str(db), device="cpu")
    try:
        want = [h.id for h in torch_searcher.text(query, top_k=5).results]
    finally:
        torch_searcher.store.close()
    with TestClient(create_app(ServeConfig(db=str(db), device="cpu", backend="openvino"))) as client:
        health = client.get("/api/health").json()
        assert health["precision"]["backend"] == "openvino" and health["precision"]["parity"]["passed"]
        hits = client.post("/api/search/text", json={"query": query, "top_k": 5}).json()["results"]
        assert [h["id"] for h in hits] == want  # fp32 on another runtime: the same ranking
        rerank = client.post("/api/search/text", json={"query": query, "rerank": 3})
        assert rerank.status_code == 400 and "--backend torch" in rerank.json()["detail"]


def test_a_server_whose_towers_run_on_two_backends(torch_folder, tmp_path, monkeypatch):
    """``--backend auto`` measured torch fastest on images and OpenVINO on captions (figures forced here): the
    server runs each tower there, says so, answers text and image searches as torch does, and reranks (the
    torch side holds the matching head)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    force_backend_speeds(monkeypatch)
    db = tmp_path / "fashion.db"
    index_embeddings(IndexConfig(str(torch_folder), MilvusTarget(db=str(db))), progress=False)
    metadata = load_embeddings(torch_folder).metadata
    query, image = metadata["caption"][0], metadata["path"][1]
    torch_searcher = open_searcher(db=str(db), device="cpu")
    try:
        want_text = [h.id for h in torch_searcher.text(query, top_k=5).results]
        want_image = [h.id for h in torch_searcher.image(image, top_k=5).results]
        want_reranked = [h.id for h in torch_searcher.text(query, top_k=5, rerank=3).results]
    finally:
        torch_searcher.store.close()
    with TestClient(create_app(ServeConfig(db=str(db), device="cpu", backend="auto"))) as client:
        precision = client.get("/api/health").json()["precision"]
        assert precision["backend"] == "torch/openvino" and precision["parity"]["passed"]
        assert precision["towers"]["text"]["backend"] == "openvino"
        hits = client.post("/api/search/text", json={"query": query, "top_k": 5}).json()["results"]
        assert [h["id"] for h in hits] == want_text
        with open(image, "rb") as f:
            found = client.post("/api/search/image", files={"image": ("q.jpg", f, "image/jpeg")}, data={"top_k": "5"})
        assert found.status_code == 200, found.text
        assert [h["id"] for h in found.json()["results"]] == want_image
        rerank = client.post("/api/search/text", json={"query": query, "top_k": 5, "rerank": 3})
        assert rerank.status_code == 200 and [h["id"] for h in rerank.json()["results"]] == want_reranked
