"""A real server in its own process under overload and hostile connections: more clients than the queue holds get
503 with Retry-After while health stays fast and accepted requests finish within the deadline; a client that
leaves is not encoded; half-open connections are closed after the header timeout; oversized headers get 431; a
client that writes its whole body before reading (urllib) reads an early 413."""

from __future__ import annotations

import io
import re
import selectors
import socket
import statistics
import threading
import time
import urllib.error
import urllib.request

import httpx
import pytest
from PIL import Image

from fashion_retrieval.config import EmbedConfig, ModelConfig
from fashion_retrieval.data.synthetic import make_catalog
from fashion_retrieval.model.tiny import build_tiny_blip
from fashion_retrieval.pipeline.embed import embed_catalog
from tests.helpers import ServedIndex

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("overload")]  # one worker starts the servers
QUEUE, DEADLINE, HEADER_TIMEOUT = 4, 4.0, 1.0


def _jpeg(seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (seed * 40 % 255, 90, 160)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    """A model slow enough that image queries outrun it (~55 ms per image here), with a queue of 4 image queries."""
    work = tmp_path_factory.mktemp("slow")
    catalog = make_catalog(work / "cat", n=8, seed=3, image_size=48)
    base = build_tiny_blip(
        work / "base", ["a red dress"], image_size=384, vision_hidden=256, vision_layers=8, intermediate=1024
    )
    out = work / "emb"
    config = EmbedConfig(str(catalog), ModelConfig(str(base), device="cpu"), out=str(out), workers=0)
    embed_catalog(config, progress=False)
    # one image a batch: a query that waits behind others is never in the batch being encoded
    args = [
        "--embeddings",
        str(out),
        "--max-queue",
        str(QUEUE),
        "--request-timeout",
        str(DEADLINE),
        "--max-image-batch",
        "1",
    ]
    server = ServedIndex(*args, "--header-timeout", str(HEADER_TIMEOUT), "--limit-concurrency", "1000")
    yield server
    server.close()
    assert "Traceback" not in server.output, server.output[-3000:]


def _engine(url: str) -> dict:
    return httpx.get(f"{url}/api/health", timeout=30).json()["engine"]


def test_more_clients_than_the_queue_holds_get_503_with_retry_after(slow_server):
    url, image, stop = slow_server.url, _jpeg(), time.monotonic() + 4
    answers: list[tuple[int, float, str | None]] = []
    health: list[float] = []

    def client() -> None:
        with httpx.Client(timeout=30) as http:
            while time.monotonic() < stop:
                started = time.perf_counter()
                response = http.post(f"{url}/api/search/image", files={"image": ("q.jpg", image, "image/jpeg")})
                seconds = time.perf_counter() - started
                answers.append((response.status_code, seconds, response.headers.get("retry-after")))
                if response.status_code == 503:
                    time.sleep(0.1)  # a polite client; still 4x more clients than the queue holds

    def prober() -> None:
        with httpx.Client(timeout=30) as http:
            time.sleep(0.5)  # once the load is on
            while time.monotonic() < stop:
                started = time.perf_counter()
                assert http.get(f"{url}/api/health").status_code == 200
                health.append(time.perf_counter() - started)
                time.sleep(0.05)

    threads = [threading.Thread(target=client) for _ in range(4 * QUEUE)] + [threading.Thread(target=prober)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    statuses = {status for status, _, _ in answers}
    shed = [(seconds, retry) for status, seconds, retry in answers if status == 503]
    served = [seconds for status, seconds, _ in answers if status == 200]
    assert statuses == {200, 503}, statuses
    assert all(retry is not None and int(retry) >= 1 for _, retry in shed)
    assert max(served) <= DEADLINE + 1.0, max(served)  # accepted requests finish within the deadline
    assert statistics.median(seconds for seconds, _ in shed) < 0.5  # refused at once, not after waiting
    assert statistics.quantiles(health, n=20)[-1] < 0.25, health  # health p95 stays fast
    # each 503 counted: shed at once (queue full), or expired (waited past the deadline, never encoded)
    metrics = httpx.get(f"{url}/metrics").text
    counted = {m[1]: float(m[2]) for m in re.finditer(r'fashion_dropped_total\{reason="(\w+)"\} ([\d.]+)', metrics)}
    assert counted["shed"] > 0 and counted["shed"] + counted.get("expired", 0) == len(shed), (counted, len(shed))
    engine = _engine(url)
    assert engine["shed"] == counted["shed"] and engine["expired"] == counted.get("expired", 0)


def _multipart(image: bytes) -> tuple[bytes, str]:
    boundary = "overload-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_a_client_that_leaves_is_not_encoded(slow_server):
    url = slow_server.url
    time.sleep(1.0)  # the previous test's clients are gone
    before = _engine(url)
    with httpx.Client(timeout=30) as http:
        files = {"image": ("q.jpg", _jpeg(1), "image/jpeg")}

        statuses: list[int] = []

        def search() -> None:
            statuses.append(http.post(f"{url}/api/search/image", files=files).status_code)

        busy = [threading.Thread(target=search) for _ in range(4)]  # the model works through these meanwhile
        for thread in busy:
            thread.start()
        waited = time.monotonic() + 5
        while _engine(url)["queue_depth"] < 3 and time.monotonic() < waited:  # one encoding, three queued
            time.sleep(0.005)
        body, content_type = _multipart(_jpeg(2))
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            head = f"POST /api/search/image HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            time.sleep(0.08)  # decoded (a few ms) and queued behind three busy ones (~55 ms of model each)
        for thread in busy:
            thread.join(30)
    time.sleep(0.5)
    after = _engine(url)
    assert statuses == [200] * 4
    assert after["abandoned"] == before["abandoned"] + 1
    assert after["queries"] - before["queries"] == 4  # the four that stayed; the one that left never reached it


def test_half_open_connections_are_closed_after_the_header_timeout(slow_server):
    host, port = slow_server.url.removeprefix("http://").split(":")
    selector = selectors.DefaultSelector()
    opened: dict[socket.socket, float] = {}
    for _ in range(2000):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"GET /api/hea")  # half a request line, never finished
        sock.setblocking(False)
        opened[sock] = time.monotonic()
        selector.register(sock, selectors.EVENT_READ)
    flooded = httpx.get(f"{slow_server.url}/api/health", timeout=30).status_code  # past --limit-concurrency
    closed: dict[socket.socket, float] = {}
    deadline = time.monotonic() + HEADER_TIMEOUT + 10
    while len(closed) < len(opened) and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            sock = key.fileobj
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                data = b""
            if not data:
                closed[sock] = time.monotonic()
                selector.unregister(sock)
    for sock in opened:
        sock.close()
    assert len(closed) == len(opened) == 2000
    waited = [closed[sock] - opened[sock] for sock in opened]
    assert min(waited) >= HEADER_TIMEOUT * 0.9 and max(waited) < HEADER_TIMEOUT + 8, (min(waited), max(waited))
    assert flooded == 503  # uvicorn's connection limit, while the flood held 2,000 connections
    assert httpx.get(f"{slow_server.url}/api/health", timeout=30).status_code == 200  # and served again after


def test_oversized_headers_get_431(slow_server):
    host, port = slow_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 431")


def test_urllib_reads_an_early_413(slow_server):
    """urllib writes the whole body before reading the answer: the server answers 413 at once and then reads and
    discards the rest (a lingering close), so the answer is read instead of "connection reset by peer"."""
    body = b"\xff\xd8" + b"0" * (30 * 1024 * 1024)
    request = urllib.request.Request(
        f"{slow_server.url}/api/search/image",
        data=body,
        headers={"Content-Type": "multipart/form-data; boundary=x"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=60)
    assert answer.value.code == 413 and b"limit" in answer.value.read()
