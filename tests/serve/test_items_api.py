"""Catalogue writes through the HTTP API on a Milvus Lite file (FastAPI's TestClient, the real app and store): add,
replace, patch, delete and batch imports; what readers see at once; the write key; bad writes change nothing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

from fashion_retrieval.embeddings import load_embeddings
from fashion_retrieval.serve.app import create_app
from fashion_retrieval.serve.config import ServeConfig
from tests.serve.conftest import _lite_file
from tests.serve.writes import ADMIN, ADMIN_HEADERS, NDJSON, READER, form, item_image, results, upsert_line


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory, embeddings_dir):
    """A folder of a few catalogue images (the server reads image paths only from here, and keeps uploads here)."""
    folder = tmp_path_factory.mktemp("item_images")
    for path in load_embeddings(embeddings_dir).metadata["path"][:3]:
        shutil.copy(path, folder)
    return folder


@pytest.fixture(scope="module")
def app_client(tmp_path_factory, embeddings_dir, images_dir):
    db = _lite_file(tmp_path_factory, embeddings_dir, "writes_lite")
    config = ServeConfig(
        db=str(db),
        device="cpu",
        api_key=READER,
        admin_key=ADMIN,
        images_dir=str(images_dir),
        max_upload_bytes=200_000,
        max_batch_lines=12,
        write_chunk=3,
    )
    with TestClient(create_app(config)) as client:
        yield client


def _count(client) -> int:
    return client.get("/api/health", headers=ADMIN_HEADERS).json()["count"]


def _ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["results"]]


def _image_search(client, seed: int, **data) -> list[str]:
    files = {"image": ("q.jpg", item_image(seed), "image/jpeg")}
    return _ids(client.post("/api/search/image", files=files, data=data, headers=ADMIN_HEADERS))


def _text_search(client, text: str, **body) -> list[str]:
    return _ids(client.post("/api/search/text", json={"query": text, "against": "text", **body}, headers=ADMIN_HEADERS))


def test_an_added_item_is_found_at_once_and_adding_twice_leaves_one(app_client):
    before = _count(app_client)
    caption = "a woollen scarf with tassels"
    scarf = form("scarf-1", 101, caption, product_type="Scarves")
    added = app_client.post("/api/items", headers=ADMIN_HEADERS, **scarf)
    assert added.status_code == 201, added.text
    body = added.json()
    assert body["status"] == "created" and body["durable"] is True and body["searchable"] is True
    assert body["item"]["attributes"]["product_type"] == "Scarves" and body["item"]["attributes"]["gender"] == ""
    assert _image_search(app_client, 101)[0] == "scarf-1"  # its own image: the nearest
    assert _text_search(app_client, caption, top_k=3)[0] == "scarf-1"  # its own caption, against captions
    again = app_client.post("/api/items", headers=ADMIN_HEADERS, **scarf)
    assert again.status_code == 200 and again.json()["status"] == "replaced"
    assert _count(app_client) == before + 1
    # the new value is a facet, in the OpenAPI document, and a filter that finds the item
    assert "Scarves" in app_client.get("/api/facets", headers=ADMIN_HEADERS).json()["product_type"]
    assert "Scarves" in json.dumps(app_client.get("/openapi.json").json()["components"]["schemas"])
    filtered = _text_search(app_client, "anything", filters={"product_type": ["Scarves"]})
    assert filtered == ["scarf-1"]
    # the upload was kept (content-addressed) and is served as the item's image
    image = app_client.get(body["item"]["image_url"], headers=ADMIN_HEADERS)
    assert image.status_code == 200 and image.content == item_image(101)


def test_put_replaces_the_vectors_and_patch_keeps_them(app_client):
    store = app_client.app.state.service.searcher.store
    assert app_client.put("/api/items/coat-1", headers=ADMIN_HEADERS, **form(None, 201, "a coat")).status_code == 201
    first = store.vectors(["coat-1"], "image")
    replaced = app_client.put("/api/items/coat-1", headers=ADMIN_HEADERS, **form(None, 202, "a long coat"))
    assert replaced.status_code == 200 and replaced.json()["status"] == "replaced"
    assert _image_search(app_client, 202)[0] == "coat-1"
    second = store.vectors(["coat-1"], "image")
    assert not np.allclose(first, second)  # encoded again, from the new image
    patched = app_client.patch("/api/items/coat-1", headers=ADMIN_HEADERS, json={"attributes": {"gender": "MEN"}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["status"] == "patched" and patched.json()["item"]["attributes"]["gender"] == "MEN"
    assert patched.json()["item"]["caption"] == "a long coat"
    np.testing.assert_array_equal(store.vectors(["coat-1"], "image"), second)  # not encoded again
    assert "coat-1" in _text_search(app_client, "a long coat", filters={"gender": "MEN"})


def test_a_deleted_item_never_comes_back(app_client):
    caption = "a silk tie with a paisley print"
    app_client.post("/api/items", headers=ADMIN_HEADERS, **form("tie-1", 301, caption, product_type="Ties"))
    assert "tie-1" in _image_search(app_client, 301)
    deleted = app_client.delete("/api/items/tie-1", headers=ADMIN_HEADERS)
    assert deleted.status_code == 200 and deleted.json() == {
        "id": "tie-1",
        "status": "deleted",
        "durable": True,
        "searchable": True,
        "item": None,
    }
    assert app_client.get("/api/items/tie-1", headers=ADMIN_HEADERS).status_code == 404
    assert "tie-1" not in _image_search(app_client, 301, top_k="60")
    assert "tie-1" not in _text_search(app_client, caption, top_k=60)
    assert _text_search(app_client, caption, filters={"product_type": "Ties"}) == []
    assert app_client.delete("/api/items/tie-1", headers=ADMIN_HEADERS).status_code == 404


def test_a_batch_answers_each_line_and_bad_lines_write_nothing(app_client, images_dir):
    before = _count(app_client)
    on_server = next(p.name for p in images_dir.iterdir() if not p.name.startswith("upload-"))
    lines = [
        upsert_line("bag-1", 401, gender="WOMEN"),
        upsert_line("bag-2", 402),
        json.dumps({"id": "bag-3", "caption": "a tote bag", "image_path": on_server}),
        json.dumps({"op": "patch", "id": "bag-2", "attributes": {"gender": "MEN"}}),
        json.dumps({"op": "delete", "id": "bag-1"}),
        json.dumps({"id": "bad-1", "caption": "x", "image_base64": "bm90IGFuIGltYWdl"}),  # "not an image"
        upsert_line("bad-2", 403, colour="red"),
        json.dumps({"op": "patch", "id": "nobody", "attributes": {"gender": "MEN"}}),
        json.dumps({"id": "bad-3", "caption": "x", "image_path": "../../etc/passwd"}),
        "{not json",
    ]
    answer = app_client.post("/api/items:batch", headers=NDJSON, content="\n".join(lines))
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/x-ndjson")
    lines_back, summary = results(answer.text)
    assert [line["line"] for line in lines_back] == list(range(1, 11))
    assert [line["status"] for line in lines_back] == [201, 201, 201, 200, 200, 415, 400, 404, 403, 422]
    assert all(line["durable"] and line["searchable"] for line in lines_back[:5])
    assert "unknown attribute field" in lines_back[6]["error"] and "not an image" in lines_back[5]["error"]
    assert summary["lines"] == 10 and summary["created"] == 3 and summary["failed"] == 5
    assert _count(app_client) == before + 2  # bag-2 and bag-3: bag-1 was deleted, the bad lines wrote nothing
    for missing in ("bag-1", "bad-1", "bad-2", "bad-3"):
        assert app_client.get(f"/api/items/{missing}", headers=ADMIN_HEADERS).status_code == 404
    assert app_client.get("/api/items/bag-2", headers=ADMIN_HEADERS).json()["attributes"]["gender"] == "MEN"
    assert _image_search(app_client, 402)[0] == "bag-2"


def test_keys_for_writing(app_client, embeddings_dir, store_encoder):
    write = form("keyed-1", 501, "a keyed item")
    assert app_client.post("/api/items", **write).status_code == 401  # no key
    assert app_client.post("/api/items", headers={"X-API-Key": "wrong"}, **write).status_code == 401
    refused = app_client.post("/api/items", headers={"X-API-Key": READER}, **write)
    assert refused.status_code == 403 and "reads only" in refused.json()["detail"]
    assert app_client.delete("/api/items/scarf-1", headers={"X-API-Key": READER}).status_code == 403
    assert app_client.get("/api/facets", headers={"X-API-Key": READER}).status_code == 200  # the read key reads
    assert app_client.get("/api/facets", headers={"X-API-Key": ADMIN}).status_code == 200  # so does the admin key
    assert app_client.get("/api/items/keyed-1", headers=ADMIN_HEADERS).status_code == 404
    from fashion_retrieval import Searcher, open_store

    searcher = Searcher(open_store(embeddings=str(embeddings_dir)), store_encoder)
    with TestClient(create_app(ServeConfig(), searcher=searcher)) as client:  # no --admin-key: writes are off
        off = client.post("/api/items", headers=ADMIN_HEADERS, **write)
        assert off.status_code == 403 and "--admin-key" in off.json()["detail"]
    with TestClient(create_app(ServeConfig(admin_key=ADMIN), searcher=searcher)) as client:
        read_only = client.post("/api/items", headers=ADMIN_HEADERS, **write)  # an embeddings folder in memory
        assert read_only.status_code == 409 and "read-only" in read_only.json()["detail"]
        assert client.get("/api/facets").status_code == 200  # reads need no key here


BAD_WRITES = [
    ("post", "/api/items", form("bad", 601, "x") | {"files": {"image": ("a.jpg", b"<html>", "image/jpeg")}}, 415),
    ("post", "/api/items", form("bad", 602, "x", colour="red"), 400),
    ("post", "/api/items", form("it's", 603, "x"), 400),
    ("post", "/api/items", form("bad\tid", 604, "x"), 400),
    ("post", "/api/items", form("bad", 605, "   "), 400),
    ("post", "/api/items", form("bad", 606, "x", gender="a\nb"), 400),
    ("post", "/api/items", {"files": {"image": ("a.jpg", b"\xff\xd8" + b"0" * 300_000, "image/jpeg")}}, 413),
    ("post", "/api/items", {"files": {"id": (None, "bad"), "caption": (None, "x")}}, 422),  # no image part
    ("post", "/api/items", {"json": {"id": "bad", "caption": "x", "image_path": "http://example.com/a.jpg"}}, 403),
    ("post", "/api/items", {"json": {"id": "bad", "caption": "x", "image_path": "/etc/hostname"}}, 403),
    ("post", "/api/items", {"json": {"id": "bad", "caption": "x", "image_path": "nope.jpg"}}, 404),
    ("post", "/api/items", {"json": {"id": "bad", "caption": "x", "image_path": "n" * 5000}}, 404),  # name too long
    ("post", "/api/items", {"json": {"id": "bad", "caption": "x", "image_path": "a.jpg", "price": "1"}}, 422),
    ("post", "/api/items", {"content": b"id=bad", "headers": {"Content-Type": "text/plain"}}, 415),
    ("put", "/api/items/bad", {"json": {"id": "other", "caption": "x", "image_path": "a.jpg"}}, 422),
    ("patch", "/api/items/bad", {"json": {"attributes": {"gender": "MEN"}}}, 404),
    ("patch", "/api/items/scarf-1", {"json": {"attributes": {"colour": "red"}}}, 400),
    ("patch", "/api/items/scarf-1", {"json": {"attributes": {}}}, 422),
    ("post", "/api/items:batch", {"content": "\n".join(upsert_line(f"bad{i}", i) for i in range(13))}, 413),
    ("post", "/api/items:batch", {"content": upsert_line("bad", 1), "headers": {"Content-Type": "text/plain"}}, 415),
    ("post", "/api/items:batch", {"content": "\n \n"}, 422),
]


@pytest.mark.parametrize(("method", "path", "request_kwargs", "status"), BAD_WRITES)
def test_a_bad_write_is_a_4xx_and_changes_nothing(app_client, method, path, request_kwargs, status):
    before = _count(app_client)
    kwargs = dict(request_kwargs)
    kwargs["headers"] = {**(NDJSON if path.endswith(":batch") else ADMIN_HEADERS), **kwargs.get("headers", {})}
    response = getattr(app_client, method)(path, **kwargs)
    assert response.status_code == status, response.text
    assert "detail" in response.json()
    assert _count(app_client) == before
    assert app_client.get("/api/items/bad", headers=ADMIN_HEADERS).status_code == 404
    assert app_client.get("/api/items/bad0", headers=ADMIN_HEADERS).status_code == 404


def test_the_write_routes_in_the_openapi_document(app_client):
    document = app_client.get("/openapi.json").json()
    post = document["paths"]["/api/items"]["post"]
    assert set(post["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    upload = post["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload["properties"]["attributes"]["additionalProperties"] is False  # the schema is fixed
    assert "gender" in upload["properties"]["attributes"]["properties"]
    assert {"401", "403", "409", "413", "415", "503"} <= set(post["responses"])
    by_id = document["paths"]["/api/items/{item_id}"]
    assert {"get", "put", "patch", "delete"} <= set(by_id)
    assert "application/x-ndjson" in document["paths"]["/api/items:batch"]["post"]["requestBody"]["content"]
