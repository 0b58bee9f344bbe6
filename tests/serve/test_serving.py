"""A real server in its own process: concurrent clients, health under load, limits, metrics, logs, workers."""

from __future__ import annotations

import io
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from fashion_retrieval.config import EmbedConfig, ModelConfig
from fashion_retrieval.data.synthetic import make_catalog
from fashion_retrieval.embeddings import load_embeddings
from fashion_retrieval.model.tiny import build_tiny_blip
from fashion_retrieval.pipeline.embed import embed_catalog
from tests.helpers import ServedIndex

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("serving")]  # one worker starts the servers


def _jpeg(size=(300, 400), color=(200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def small_embeddings(tmp_path_factory):
    """A BLIP big enough that an image search keeps the CPU busy (~10 ms per image), and its embeddings."""
    work = tmp_path_factory.mktemp("small")
    catalog = make_catalog(work / "cat", n=24, seed=2, image_size=64)
    base = build_tiny_blip(
        work / "base",
        ["a red dress"],
        image_size=224,
        vision_hidden=256,
        vision_layers=4,
        intermediate=1024,
        text_hidden=128,
    )
    out = work / "emb"
    embed_catalog(
        EmbedConfig(str(catalog), ModelConfig(str(base), device="cpu"), out=str(out), workers=0), progress=False
    )
    return out


@pytest.fixture(scope="module")
def served(lite_file_db):
    server = ServedIndex("--db", str(lite_file_db), "--body-timeout", "2")
    yield server
    server.close()


def test_concurrent_requests_equal_sequential_ones_on_a_lite_file(served, embeddings_dir):
    paths = load_embeddings(embeddings_dir).metadata["path"].tolist()
    texts = ["a red dress", "blue jeans for men", "a striped shirt", "black trousers", "a yellow hoodie"] * 3

    def text(q):
        return httpx.post(f"{served.url}/api/search/text", json={"query": q, "top_k": 6}, timeout=60).json()

    def image(path):
        with open(path, "rb") as handle:
            files = {"image": ("q.jpg", handle.read(), "image/jpeg")}
        return httpx.post(f"{served.url}/api/search/image", files=files, data={"top_k": "4"}, timeout=60).json()

    jobs = [(text, q) for q in texts] + [(image, p) for p in paths[:8]]
    sequential = [f(x) for f, x in jobs]
    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(lambda job: job[0](job[1]), jobs))
    for got, want in zip(concurrent, sequential, strict=True):
        assert [r["id"] for r in got["results"]] == [r["id"] for r in want["results"]]
        np.testing.assert_allclose(
            [r["score"] for r in got["results"]], [r["score"] for r in want["results"]], atol=1e-5
        )
    engine = httpx.get(f"{served.url}/api/health").json()["engine"]
    assert engine["queries"] >= 2 * len(jobs) and engine["batches"] < engine["queries"]  # some were batched


def _health_p95(url: str, n: int = 60) -> float:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        assert httpx.get(f"{url}/api/health", timeout=30).status_code == 200
        samples.append(time.perf_counter() - start)
        time.sleep(0.01)
    return statistics.quantiles(samples, n=20)[-1]


def test_health_answers_at_once_while_the_model_is_busy(small_embeddings):
    server = ServedIndex("--embeddings", str(small_embeddings))
    try:
        idle = _health_p95(server.url)
        stop = threading.Event()
        done = []
        image = _jpeg()

        def load() -> None:
            with httpx.Client(timeout=60) as client:
                while not stop.is_set():
                    files = {"image": ("q.jpg", image, "image/jpeg")}
                    done.append(client.post(f"{server.url}/api/search/image", files=files).status_code)

        threads = [threading.Thread(target=load) for _ in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        before = len(done)
        busy = _health_p95(server.url)
        during = len(done) - before
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        server.close()
    # the model kept encoding while health was probed (a count of searches, not a rate: the tests share the cores
    # with another test worker, so rates vary with what runs beside)
    assert during >= 8 and set(done) == {200}, (during, set(done))
    # The one-lock server answered health in seconds under this load; the bound is a ratio to the idle p95 of
    # the same run, plus 250 ms of scheduling slack: 2 cores shared by the model, 8 clients and another test
    # worker whose load can change between the two measurements (it once took the p95 from 40 to 170 ms).
    assert busy <= 3 * idle + 0.25, (idle, busy)


def test_uploads_stay_in_memory_and_bodies_are_capped(served, tmp_path):
    big = b"\xff\xd8" + os.urandom(50 * 1024 * 1024)
    response = httpx.post(f"{served.url}/api/search/image", files={"image": ("q.jpg", big, "image/jpeg")}, timeout=60)
    assert response.status_code == 413 and "limit" in response.json()["detail"]

    def chunks():
        for _ in range(30):
            yield b"0" * (1024 * 1024)

    chunked = httpx.post(
        f"{served.url}/api/search/text", content=chunks(), headers={"content-type": "application/json"}, timeout=60
    )
    assert chunked.status_code == 413
    huge_json = {"query": "dress", "filters": {"gender": ["x"] * 300_000}}
    assert httpx.post(f"{served.url}/api/search/text", json=huge_json, timeout=60).status_code == 413


@pytest.fixture(scope="module")
def server_tmp(tmp_path_factory):
    """The TMPDIR of ``quiet_server``, watched for spooled uploads."""
    return tmp_path_factory.mktemp("server_tmp")


@pytest.fixture(scope="module")
def quiet_server(embeddings_dir, server_tmp):
    """`serve --no-metrics --log-level warning --max-upload-mb 60`, with ``server_tmp`` as its TMPDIR."""
    server = ServedIndex(
        "--embeddings", str(embeddings_dir), "--no-metrics", "--log-level", "warning", "--max-upload-mb", "60",
        env={**os.environ, "TMPDIR": str(server_tmp)},
    )  # fmt: skip
    yield server
    server.close()


def test_an_upload_near_the_limit_is_parsed_without_temp_files(quiet_server, server_tmp):
    server, temp = quiet_server, server_tmp
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:  # a spooled part is an unnamed file ("#123 (deleted)") open only while it is parsed
        folder = f"/proc/{server.process.pid}/fd"
        while not done.is_set():
            for fd in os.listdir(folder):
                try:
                    target = os.readlink(f"{folder}/{fd}")
                except OSError:
                    continue
                if target.startswith(str(temp)) and "milvus" not in target:
                    seen.add(target)
            time.sleep(0.002)

    try:
        before = sorted(os.listdir(temp))
        image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (2400, 3000, 3), dtype=np.uint8))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")  # ~21 MB of incompressible pixels
        assert buffer.tell() > 20 * 1024 * 1024
        watcher = threading.Thread(target=watch)
        watcher.start()
        files = {"image": ("big.png", buffer.getvalue(), "image/png")}
        response = httpx.post(f"{server.url}/api/search/image", files=files, timeout=120)
        done.set()
        watcher.join()
        assert response.status_code == 200, response.text
        assert sorted(os.listdir(temp)) == before
        assert not seen, seen
    finally:
        done.set()


def test_a_slow_body_is_cut_off(served):
    import socket

    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /api/search/text HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"query":'
        )
        start = time.perf_counter()
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 408") and 1.5 < time.perf_counter() - start < 10


def test_no_metrics_and_quiet_logs(quiet_server):
    assert httpx.get(f"{quiet_server.url}/metrics").status_code == 404
    assert httpx.post(f"{quiet_server.url}/api/search/text", json={"query": "a red dress"}).status_code == 200
    # the same wait in which tests/serve/test_api.py::test_metrics_and_access_log sees its lines
    assert "POST /api/search/text" not in quiet_server.output_after()


def test_a_lite_file_is_refused_with_workers(tmp_path):
    """Two workers cannot share a Lite file: the error says how to share it (the lite_server that
    tests/serve/test_items_server.py serves two workers from)."""
    refused = subprocess.run(
        [sys.executable, "-m", "fashion_retrieval", "serve", "--db", str(tmp_path / "f.db"), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "lite_server" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "f.db").exists()
