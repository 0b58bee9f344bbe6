"""HTTP load: N concurrent clients on loopback for a bounded time against a served demo index.

Reports requests/s, p50/p95/p99 latency and the error count for text and image search.
Uses a demo workdir (`make demo` first, or it builds a small one with an untrained tiny model).

    python -m benchmarks.api_load --workdir demo_workdir --clients 8 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.common import write_result

QUERIES = [
    "The lady wears a red sleeveless dress.",
    "The man wears a blue shirt with striped patterns.",
    "black long trousers",
    "a yellow hoodie with dotted patterns",
    "a grey skirt",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_index(workdir: Path) -> Path:
    db = workdir / "fashion.db"
    if db.exists():
        return db
    from fashion_retrieval.demo import DemoConfig, run_demo

    run_demo(DemoConfig(workdir=str(workdir), n=2000, train_seconds=5, serve=False), progress=False)
    return db


async def client_loop(client: httpx.AsyncClient, kind: str, deadline: float, image: bytes, out: list, errors: list):
    i = 0
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        try:
            if kind == "text":
                response = await client.post("/api/search/text", json={"query": QUERIES[i % len(QUERIES)], "top_k": 12})
            else:
                response = await client.post(
                    "/api/search/image", files={"image": ("q.jpg", image, "image/jpeg")}, data={"top_k": "12"}
                )
            if response.status_code != 200:
                errors.append(response.status_code)
            else:
                out.append(time.perf_counter() - start)
        except httpx.HTTPError as exc:
            errors.append(type(exc).__name__)
        i += 1


async def run_load(url: str, kind: str, clients: int, seconds: float, image: bytes) -> dict:
    latencies: list[float] = []
    errors: list = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(*(client_loop(client, kind, deadline, image, latencies, errors) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "requests_per_second": round(len(latencies) / elapsed, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="demo_workdir")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    db = ensure_index(workdir)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "fashion_retrieval", "serve", "--db", str(db), "--port", str(port), "--device", "cpu"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        image = next((workdir / "catalog" / "selected_images").glob("*.jpg")).read_bytes()
        results = {
            kind: asyncio.run(run_load(url, kind, args.clients, args.seconds, image)) for kind in ("text", "image")
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
    write_result(
        "api_load",
        {
            "command": "python -m benchmarks.api_load " + " ".join(sys.argv[1:]),
            "clients": args.clients,
            "seconds": args.seconds,
            "store": "Milvus Lite file",
            "index_items": 2000,
            **results,
        },
    )


if __name__ == "__main__":
    main()
