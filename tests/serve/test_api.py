"""The HTTP API through FastAPI's TestClient: every endpoint, and every bad input answered with a 4xx."""

from __future__ import annotations

import io
import json
import uuid

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from fashion_retrieval.embeddings import load_embeddings
from fashion_retrieval.serve.app import create_app
from fashion_retrieval.serve.config import ServeConfig
from tests.helpers import jpeg_bytes, metric_value


def _image_bytes(embeddings_dir, row=3) -> bytes:
    path = load_embeddings(embeddings_dir).metadata["path"][row]
    return open(path, "rb").read()


def test_health_facets_items(client, embeddings_dir):
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["count"] == 48 and health["model"]["embed_dim"] == 256
    facets = client.get("/api/facets").json()
    assert facets["gender"] == ["MEN", "WOMEN"] and "product_id" not in facets
    item_id = load_embeddings(embeddings_dir).metadata["id"][0]
    item = client.get(f"/api/items/{item_id}").json()
    assert item["id"] == item_id and item["image_url"].startswith("/images/")
    assert client.get("/api/items/nope").status_code == 404
    assert client.get("/docs").status_code == 200 and "/api/search/text" in client.get("/openapi.json").text


def test_api_dependencies_run_on_the_event_loop(embeddings_dir):
    """Every API route and dependency is a coroutine: FastAPI runs a plain ``def`` one in its thread pool, two
    thread hand-offs per request (a sync dependency cost a lone text search ~0.9 ms). Work that belongs in a
    thread (decoding an upload, reading an image file) is sent there by the route itself."""
    import inspect

    from fastapi.routing import iter_route_contexts

    def calls(dependant):
        yield dependant.call
        for sub in dependant.dependencies:
            yield from calls(sub)

    def is_coroutine(call) -> bool:
        # a function, or an object whose __call__ is a coroutine function (FastAPI awaits both)
        return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(type(call).__call__)

    app = create_app(ServeConfig(embeddings=str(embeddings_dir), device="cpu"))  # routes only: nothing is opened
    # routers are included lazily (one entry of app.routes per router): walk the effective routes
    routes = [r for r in iter_route_contexts(app.routes) if hasattr(r, "dependant")]
    routes = [r for r in routes if r.path.startswith(("/api", "/images"))]
    assert len(routes) >= 8
    sync = {
        f"{route.path}: {call.__name__}"
        for route in routes
        for call in calls(route.dependant)
        if call is not None and not is_coroutine(call)
    }
    assert not sync, sync


def test_text_search_with_filters(client):
    response = client.post(
        "/api/search/text", json={"query": "a red dress", "top_k": 5, "filters": {"gender": ["WOMEN"]}}
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 5 and all(r["attributes"]["gender"] == "WOMEN" for r in results)
    assert all(set(r) == {"id", "score", "caption", "image_url", "attributes"} for r in results)
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    image = client.get(results[0]["image_url"])
    assert image.status_code == 200 and Image.open(io.BytesIO(image.content)).size[0] > 0


def test_image_and_hybrid_search(client, embeddings_dir):
    data = _image_bytes(embeddings_dir, row=7)
    own_id = load_embeddings(embeddings_dir).metadata["id"][7]
    response = client.post("/api/search/image", files={"image": ("q.jpg", data, "image/jpeg")}, data={"top_k": "4"})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["id"] == own_id
    hybrid = client.post(
        "/api/search/hybrid",
        files={"image": ("q.jpg", data, "image/jpeg")},
        data={
            "text": "a blue shirt",
            "alpha": "0.0",
            "top_k": "4",
            "filters": json.dumps({"gender": ["MEN", "WOMEN"]}),
        },
    )
    assert hybrid.status_code == 200, hybrid.text
    assert [r["id"] for r in hybrid.json()["results"]] == [r["id"] for r in response.json()["results"]]
    captions = client.post(
        "/api/search/image", files={"image": ("q.jpg", data, "image/jpeg")}, data={"top_k": "3", "against": "text"}
    )
    assert captions.status_code == 200 and len(captions.json()["results"]) == 3


def _bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "files, data, status, message",
    [
        ({"image": ("big.jpg", b"\xff\xd8" + b"0" * 300_000, "image/jpeg")}, {}, 413, "limit"),
        ({"image": ("bomb.png", None, "image/png")}, {}, 413, "decompression bomb"),
        ({"image": ("fake.jpg", b"<html>hello</html>", "image/jpeg")}, {}, 415, "not an image"),
        ({"image": ("empty.jpg", b"", "image/jpeg")}, {}, 422, "empty"),
        ({"image": ("q.jpg", "ok", "image/jpeg")}, {"top_k": "0"}, 422, "top_k"),
        ({"image": ("q.jpg", "ok", "image/jpeg")}, {"filters": "{not json"}, 422, "JSON"),
        ({"image": ("q.jpg", "ok", "image/jpeg")}, {"filters": '{"colour": ["red"]}'}, 400, "unknown filter field"),
        ({"image": ("q.jpg", "ok", "image/jpeg")}, {"against": "sql"}, 422, "against"),
    ],
)
def test_bad_uploads(client, files, data, status, message):
    name, content, kind = files["image"]
    content = _bomb() if content is None else jpeg_bytes() if content == "ok" else content
    response = client.post("/api/search/image", files={"image": (name, content, kind)}, data=data)
    assert response.status_code == status, response.text
    assert message in response.text


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"query": ""}, 422, "query"),
        ({"query": "   "}, 422, "query"),
        ({"query": "dress", "top_k": 0}, 422, "top_k"),
        ({"query": "dress", "top_k": 100000}, 422, "top_k"),
        ({"query": "dress", "filters": {"nope": ["x"]}}, 400, "unknown filter field 'nope'"),
        ({"query": "dress", "filters": {"gender": ['WOMEN" or pk != "']}}, 400, "unknown value"),
        ({"query": "dress", "against": "both"}, 422, "against"),
    ],
)
def test_bad_text_queries(client, body, status, message):
    response = client.post("/api/search/text", json=body)
    assert response.status_code == status, response.text
    assert message in response.text


def test_malformed_json_and_hybrid_needs_text(client):
    response = client.post("/api/search/text", content=b"{bad json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    response = client.post(
        "/api/search/hybrid", files={"image": ("q.jpg", jpeg_bytes(), "image/jpeg")}, data={"text": "", "alpha": "2"}
    )
    assert response.status_code == 422


def test_images_only_from_the_catalogue(client):
    for path in ("/images/..%2F..%2F..%2Fetc%2Fpasswd", "/images/../../etc/passwd", "/images/", "/images/nope"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "root:" not in response.text


def test_api_key_and_cors(embeddings_dir, store_encoder):
    from fashion_retrieval import Searcher, open_store

    searcher = Searcher(open_store(embeddings=str(embeddings_dir)), store_encoder)
    app = create_app(ServeConfig(api_key="s3cret", cors_origin="http://shop.example"), searcher=searcher)
    with TestClient(app) as client:
        assert client.get("/api/health").status_code == 401
        assert client.get("/api/health", headers={"X-API-Key": "wrong"}).status_code == 401
        for odd in ("s3crét".encode(), "s3crét".encode("latin-1"), b"\xff\xfe"):  # non-ASCII: a 401, not a 500
            assert client.get("/api/health", headers={"X-API-Key": odd}).status_code == 401
        ok = client.get("/api/health", headers={"X-API-Key": "s3cret", "Origin": "http://shop.example"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://shop.example"
        assert client.get("/").status_code == 200  # the page itself is public; it asks for the key
    plain = create_app(ServeConfig(), searcher=searcher)
    with TestClient(plain) as client:
        response = client.get("/api/health", headers={"Origin": "http://evil.example"})
        assert response.status_code == 200 and "access-control-allow-origin" not in response.headers


@pytest.mark.xdist_group("page")  # the page's tests share this server
def test_real_server_over_http(plain_server):
    assert httpx.get(f"{plain_server.url}/api/health").json()["count"] == 48
    response = httpx.post(f"{plain_server.url}/api/search/text", json={"query": "a dress", "top_k": 3})
    assert response.status_code == 200 and len(response.json()["results"]) == 3
    assert "<title>fashion-retrieval</title>" in httpx.get(f"{plain_server.url}/").text
    assert f"open http://127.0.0.1:{plain_server.port}/" in plain_server.output


@pytest.mark.xdist_group("page")  # on the server the page's tests use: counts are taken before and after
def test_metrics_and_access_log(plain_server):
    url, missing = plain_server.url, f"no-such-item-{uuid.uuid4().hex}"
    ok = 'fashion_requests_total{endpoint="/api/search/text",method="POST",status="200"}'
    invalid = 'fashion_requests_total{endpoint="/api/search/text",method="POST",status="422"}'
    before = httpx.get(f"{url}/metrics").text
    httpx.post(f"{url}/api/search/text", json={"query": "a red dress", "top_k": 3})
    httpx.post(f"{url}/api/search/text", json={"query": "", "top_k": 3})
    httpx.get(f"{url}/api/items/{missing}")
    text = httpx.get(f"{url}/metrics").text
    for series in (ok, invalid):
        assert metric_value(text, series) - metric_value(before, series) == 1, series
    assert 'endpoint="/api/items/{item_id:path}",method="GET",status="404"' in text  # templates, not raw ids
    assert missing not in text
    for name in (
        "fashion_request_seconds_bucket",
        "fashion_encode_seconds",
        "fashion_batch_size",
        "fashion_queue_depth",
    ):
        assert name in text, name
    output = plain_server.output_after()
    assert "POST /api/search/text 200" in output and f"GET /api/items/{missing} 404" in output
