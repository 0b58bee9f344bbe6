"""Writes through real servers: `serve --workers 2` over the Milvus Lite gRPC server (both workers answer, their
metrics add up, an item written through one worker is found through both at once, deleted ones never come back),
and a server killed with SIGKILL during a batch import (after a restart every acknowledged line is there, and
nothing is half-written)."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from fashion_retrieval.store.indexer import IndexConfig, index_embeddings
from fashion_retrieval.store.milvus import MilvusTarget
from tests.helpers import ServedIndex, metric_value
from tests.serve.writes import ADMIN, ADMIN_HEADERS, NDJSON, form, item_image, results, upsert_line
from tests.store.conftest import milvus_server  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("items_server")]  # one worker starts the servers


@pytest.fixture(scope="module")
def two_workers(milvus_server, embeddings_dir):  # noqa: F811
    target = MilvusTarget(uri=milvus_server, collection="live")
    index_embeddings(IndexConfig(str(embeddings_dir), target), progress=False)
    server = ServedIndex(
        "--uri", milvus_server, "--collection", "live", "--workers", "2", "--admin-key", ADMIN, startup=120
    )
    yield server
    server.close()
    assert "Traceback" not in server.output, server.output[-3000:]


def _every_worker(url: str, request) -> list[dict]:
    """The same request until both worker processes have answered it (at most 40 tries)."""
    answers, pids = [], set()
    for _ in range(40):
        answers.append(request())
        pids.add(httpx.get(f"{url}/api/health").json()["engine"]["pid"])
        if len(pids) == 2 and len(answers) >= 4:
            break
    assert len(pids) == 2
    return answers


def test_both_workers_answer_and_metrics_add_up_over_them(two_workers):
    url, health = two_workers.url, 'fashion_requests_total{endpoint="/api/health",method="GET",status="200"}'
    before = metric_value(httpx.get(f"{url}/metrics").text, health)
    pids = {httpx.get(f"{url}/api/health").json()["engine"]["pid"] for _ in range(40)}
    response = httpx.post(f"{url}/api/search/text", json={"query": "a red dress", "top_k": 3})
    assert response.status_code == 200 and len(response.json()["results"]) == 3
    after = metric_value(httpx.get(f"{url}/metrics").text, health)
    assert len(pids) == 2  # two processes answered
    assert after - before == 40  # and either one's /metrics counts both processes' requests


def test_a_write_through_one_worker_is_seen_by_both(two_workers):
    url = two_workers.url
    gilet = form("live-1", 701, "a quilted gilet", product_type="Gilets")
    added = httpx.post(f"{url}/api/items", headers=ADMIN_HEADERS, **gilet)
    assert added.status_code == 201 and added.json()["searchable"] is True

    def by_caption() -> list[str]:
        body = {"query": "a quilted gilet", "against": "text", "top_k": 3}
        return [hit["id"] for hit in httpx.post(f"{url}/api/search/text", json=body).json()["results"]]

    def by_image() -> list[str]:
        files = {"image": ("q.jpg", item_image(701), "image/jpeg")}
        return [hit["id"] for hit in httpx.post(f"{url}/api/search/image", files=files).json()["results"]]

    def by_new_value() -> int:  # a facet value the other worker has not cached yet: looked up in the store
        body = {"query": "anything", "filters": {"product_type": "Gilets"}}
        return httpx.post(f"{url}/api/search/text", json=body).status_code

    assert all(ids[0] == "live-1" for ids in _every_worker(url, by_caption))
    assert all(ids[0] == "live-1" for ids in _every_worker(url, by_image))
    assert set(_every_worker(url, by_new_value)) == {200}
    batch = "\n".join(upsert_line(f"live-b{i}", 710 + i, f"a batch item {i}") for i in range(3))
    lines, summary = results(httpx.post(f"{url}/api/items:batch", headers=NDJSON, content=batch, timeout=60).text)
    assert [line["status"] for line in lines] == [201, 201, 201] and summary["created"] == 3
    assert httpx.delete(f"{url}/api/items/live-1", headers=ADMIN_HEADERS).status_code == 200
    assert all("live-1" not in ids for ids in _every_worker(url, by_caption))
    assert all("live-1" not in ids for ids in _every_worker(url, by_image))


@pytest.fixture
def lite_copy(tmp_path, embeddings_dir):
    """A Milvus Lite file indexed in a process of its own (the file stays open in whichever process opens it)."""
    db = tmp_path / "fashion.db"
    command = [sys.executable, "-m", "fashion_retrieval", "-q", "index", str(embeddings_dir), "--db", str(db), "--json"]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    return db


def test_sigkill_during_a_batch_import_keeps_every_acknowledged_line(lite_copy):
    server = ServedIndex("--db", str(lite_copy), "--admin-key", ADMIN, "--write-chunk", "4")
    sent = {f"kill-{i}": (f"a crash test item {i}", "MEN" if i % 2 else "WOMEN") for i in range(96)}
    batch = "\n".join(upsert_line(i, 800 + n, caption, gender=g) for n, (i, (caption, g)) in enumerate(sent.items()))
    acknowledged: list[str] = []
    try:
        with httpx.stream("POST", f"{server.url}/api/items:batch", headers=NDJSON, content=batch, timeout=60) as answer:
            for line in answer.iter_lines():
                result = json.loads(line)
                assert result["status"] == 201 and result["durable"], result
                acknowledged.append(result["id"])
                if len(acknowledged) >= 6:
                    server.process.kill()  # SIGKILL: no shutdown, no flush on exit
                    break
        server.process.wait(timeout=30)
    finally:
        server.close()
    restarted = ServedIndex("--db", str(lite_copy))
    try:
        present = {}
        for item_id in sent:
            response = httpx.get(f"{restarted.url}/api/items/{item_id}")
            assert response.status_code in (200, 404)
            if response.status_code == 200:
                present[item_id] = response.json()
        count = httpx.get(f"{restarted.url}/api/health").json()["count"]
        last = list(present)[-1]
        files = {"image": ("q.jpg", item_image(800 + list(sent).index(last)), "image/jpeg")}
        nearest = httpx.post(f"{restarted.url}/api/search/image", files=files).json()["results"][0]
    finally:
        restarted.close()
    assert set(acknowledged) <= set(present)  # every acknowledged line survived
    assert len(present) < len(sent) and count == 48 + len(present)  # killed mid-batch: the rest never arrived
    for item_id, item in present.items():  # and what is there is whole
        caption, gender = sent[item_id]
        assert item["caption"] == caption and item["attributes"]["gender"] == gender
    assert nearest["id"] == last and nearest["score"] > 0.999  # its vector too
