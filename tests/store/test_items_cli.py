"""`fashion-retrieval items` and `export --db/--uri` through the real CLI on a Milvus Lite file and on the Lite gRPC
server: add, update, delete and import without a server, each write flushed and visible; a store written back as
an embeddings folder that `eval` reads and `index` takes elsewhere."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from fashion_retrieval import Searcher, open_store
from fashion_retrieval.cli import app
from fashion_retrieval.embeddings import load_embeddings
from fashion_retrieval.store.indexer import IndexConfig, index_embeddings
from fashion_retrieval.store.milvus import MilvusStore, MilvusTarget

runner = CliRunner()


@pytest.fixture(scope="module")
def lite(tmp_path_factory, embeddings_dir):
    db = tmp_path_factory.mktemp("items_cli") / "fashion.db"
    index_embeddings(IndexConfig(str(embeddings_dir), MilvusTarget(db=str(db))), progress=False)
    return db


@pytest.fixture(scope="module")
def images(tmp_path_factory, embeddings_dir):
    """Two catalogue images under new names, as new products would arrive."""
    folder = tmp_path_factory.mktemp("new_images")
    paths = load_embeddings(embeddings_dir).metadata["path"]
    for n, source in enumerate(paths[:2]):
        shutil.copy(source, folder / f"new-{n}.jpg")
    return folder


def _run(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code in (0, 1), result.output
    return {"exit": result.exit_code, **json.loads(result.stdout)}


def test_add_update_delete_and_search_on_a_lite_file(lite, images, store_encoder, embeddings_dir):
    where = ["--db", str(lite), "--device", "cpu"]
    image = str(images / "new-0.jpg")
    scarf = ["--image", image, "--caption", "a plaid scarf"]
    added = _run("items", "add", "cli-1", *scarf, "--attr", "gender=WOMEN", *where)
    assert added["exit"] == 0 and added["results"] == [
        {"line": 1, "id": "cli-1", "status": "created", "durable": True, "searchable": True}
    ]
    again = _run("items", "add", "cli-1", *scarf, *where)
    assert again["results"][0]["status"] == "replaced"
    store = MilvusStore(MilvusTarget(db=str(lite)))
    searcher = Searcher(store, store_encoder)
    twin = load_embeddings(embeddings_dir).metadata["id"][0]  # new-0.jpg is a copy of its image: the same vector
    assert {hit.id for hit in searcher.image(image, top_k=2).results} == {"cli-1", twin}
    assert searcher.text("a plaid scarf", against="text", top_k=1).results[0].id == "cli-1"
    vector = store.vectors(["cli-1"], "image")
    updated = _run("items", "update", "cli-1", "--attr", "product_type=Scarves", "--db", str(lite))
    assert updated["results"][0]["status"] == "patched"
    assert store.get(["cli-1"])[0].attributes["product_type"] == "Scarves"
    np.testing.assert_array_equal(store.vectors(["cli-1"], "image"), vector)  # attributes only: not encoded again
    deleted = _run("items", "delete", "cli-1", "nobody", "--db", str(lite))
    assert deleted["exit"] == 1  # one id was not there
    assert [r["status"] for r in deleted["results"]] == ["deleted", "failed"]
    assert store.get(["cli-1"]) == []
    assert "cli-1" not in [h.id for h in searcher.text("a plaid scarf", top_k=60).results]
    refused = runner.invoke(app, ["items", "add", "x", *scarf, "--attr", "colour=red", *where])
    assert refused.exit_code == 1 and "unknown attribute field" in refused.output and "Traceback" not in refused.output


def test_import_ndjson_with_a_bad_line(lite, images, tmp_path):
    lines = [
        {"id": "imp-1", "caption": "a linen shirt", "attributes": {"gender": "MEN"}, "image_path": "new-0.jpg"},
        {"id": "imp-2", "caption": "a denim skirt", "image_path": "new-1.jpg"},
        {"id": "imp-3", "caption": "a missing image", "image_path": "nowhere.jpg"},
        {"op": "patch", "id": "imp-2", "attributes": {"gender": "WOMEN"}},
        {"op": "delete", "id": "imp-1"},
    ]
    source = tmp_path / "items.ndjson"
    source.write_text("\n".join(json.dumps(line) for line in lines) + "\nnot json\n")
    result = _run("items", "import", str(source), "--images-dir", str(images), "--db", str(lite), "--device", "cpu")
    assert result["exit"] == 1
    assert [r["status"] for r in result["results"]] == ["created", "created", "failed", "patched", "deleted", "failed"]
    assert "file not found" in result["results"][2]["error"]
    assert result["summary"]["lines"] == 6 and result["summary"]["failed"] == 2
    store = MilvusStore(MilvusTarget(db=str(lite)))
    assert [h.id for h in store.get(["imp-1", "imp-2", "imp-3"])] == ["imp-2"]
    assert store.get(["imp-2"])[0].attributes["gender"] == "WOMEN"


def test_items_on_a_milvus_server(milvus_server, embeddings_dir, images):
    target = MilvusTarget(uri=milvus_server, collection="items_cli")
    index_embeddings(IndexConfig(str(embeddings_dir), target), progress=False)
    where = ["--uri", milvus_server, "--collection", "items_cli", "--device", "cpu"]
    image = str(images / "new-1.jpg")
    added = _run("items", "add", "srv-1", "--image", image, "--caption", "a wool coat", *where)
    assert added["results"][0]["status"] == "created" and added["results"][0]["searchable"]
    store = MilvusStore(target)
    assert store.count() == 49
    assert _run("items", "delete", "srv-1", *where[:4])["results"][0]["status"] == "deleted"
    assert store.count() == 48
    store.close()


def test_export_a_store_as_an_embeddings_folder(lite, embeddings_dir, tmp_path):
    out = tmp_path / "exported"
    result = runner.invoke(app, ["export", "--db", str(lite), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    exported, original = load_embeddings(out), load_embeddings(embeddings_dir)
    store = open_store(db=str(lite))
    assert len(exported) == store.count() and exported.manifest["model"] == store.identity()
    assert exported.manifest["dim"] == 256 and exported.attributes == store.attributes()
    rows = {item_id: n for n, item_id in enumerate(exported.metadata["id"])}
    for n, item_id in enumerate(original.metadata["id"]):  # the catalogue's items, vectors and fields as embedded
        np.testing.assert_allclose(exported.image_embeddings[rows[item_id]], original.image_embeddings[n], atol=1e-6)
        np.testing.assert_allclose(exported.text_embeddings[rows[item_id]], original.text_embeddings[n], atol=1e-6)
        assert exported.metadata.loc[rows[item_id], "caption"] == original.metadata.loc[n, "caption"]
    evaluated = runner.invoke(app, ["eval", str(out), "--json"])
    assert evaluated.exit_code == 0 and "text_to_image" in evaluated.stdout
    elsewhere = index_embeddings(IndexConfig(str(out), MilvusTarget(db=str(tmp_path / "elsewhere.db"))), progress=False)
    assert elsewhere["count"] == len(exported)
    for args in (["--out", str(tmp_path / "x")], ["--db", str(lite), "--base", "m", "--out", str(tmp_path / "y")]):
        refused = runner.invoke(app, ["export", *args])
        assert refused.exit_code == 2 and "one of them" in refused.output
    again = runner.invoke(app, ["export", "--db", str(lite), "--out", str(out)])
    assert again.exit_code == 2 and "already" in again.output
