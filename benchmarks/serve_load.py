"""Serving at real model size: the batching server against the one-lock server it replaced, in one run.

A BLIP-base-sized model (random weights, 384 px, built from a config), a 100,000-item Milvus Lite collection
recorded with that model's identity (random unit vectors: the store part only needs the right size), and
clients in a separate process on loopback. Text and image queries at 1, 8 and 32 concurrent clients for a
bounded time: requests/s, p50/p95/p99, errors, health p95 during the load, mean batch size. The one-lock
server is the previous release, run from a git worktree of ``--old-ref`` with the same venv. Ceilings come
from the same run: the encoder alone on a full batch (no HTTP, no store), the store alone on one query.
Afterwards the new server takes a hostile run (oversized, malformed and deep bodies, bad images, huge
filter lists) as long as a normal one: its RSS must stay within 20% of the RSS after the normal run.

    python -m benchmarks.serve_load                      # ~10 min on 2 cores; results/serve_load.json
    python -m benchmarks.serve_load --rows 2000 --seconds 3 --clients 1,4 --name serve_load_smoke
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks.common import build_base_sized_blip, write_result

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
QUERIES = [
    "The lady wears a red sleeveless dress with striped patterns.",
    "The man wears a blue shirt.",
    "black long trousers for men",
    "a yellow hoodie with dotted patterns and long sleeves",
    "The woman wears a grey knee-length skirt in pure colour.",
    "a pair of green shorts",
    "She has on a white short-sleeve T-shirt with plaid patterns and long pants.",
    "an orange zip-up coat",
]
ROOT = Path(__file__).resolve().parents[1]


# -- setup ---------------------------------------------------------------------------------------------
def build_store(base: Path, db: Path, rows: int, image_path: str) -> dict:
    """A Lite collection of ``rows`` random unit vectors recorded with the model's identity."""
    from fashion_retrieval.model.loading import describe_model
    from fashion_retrieval.store.milvus import MilvusStore, MilvusTarget

    identity, _ = describe_model(base)
    store = MilvusStore(MilvusTarget(db=str(db)), must_exist=False)
    store.create(identity.embed_dim, ["gender", "product_type"], identity.to_dict())
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for start in range(0, rows, 5000):
        n = min(5000, rows - start)
        vectors = rng.normal(size=(2, n, identity.embed_dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
        store.upsert(
            [
                {
                    "pk": f"id{start + i}",
                    "image_embedding": vectors[0, i].tolist(),
                    "text_embedding": vectors[1, i].tolist(),
                    "caption": QUERIES[(start + i) % len(QUERIES)],
                    "path": image_path,
                    "gender": "WOMEN" if (start + i) % 2 else "MEN",
                    "product_type": ("Dresses", "Pants", "Shirts_Polos", "Skirts")[(start + i) % 4],
                }
                for i in range(n)
            ]
        )
    store.flush()
    count = store.count()
    store.close()
    return {"rows": count, "seconds": round(time.perf_counter() - started, 1)}


def query_image() -> bytes:
    """A DeepFashion-sized JPEG (750x1101) of a drawn garment."""
    from fashion_retrieval.data.synthetic import render_item, sample_items

    buffer = io.BytesIO()
    render_item(sample_items(1, seed=3)[0], 256, 0).resize((750, 1101)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def ceilings(base: Path, db: Path, dtype: str, text_batch: int, image_batch: int, out: Path) -> None:
    """Run in a process of its own (a Lite file stays open in the process that opened it): the encoder alone
    on full batches, one caption alone, one store search alone, and the upload decoding alone."""
    import torch

    from fashion_retrieval import FashionEmbeddingModel
    from fashion_retrieval.data.images import open_image
    from fashion_retrieval.store.milvus import MilvusStore, MilvusTarget

    encoder = FashionEmbeddingModel(None, base, device="cpu", dtype=dtype)
    image = query_image()
    pixels = np.stack([encoder.preprocess(open_image(image))])
    texts = [QUERIES[i % len(QUERIES)] for i in range(text_batch)]
    encoder.encode_batch_texts(texts, batch_size=text_batch)  # warm-up and fast-path checks
    encoder.encode_pixels(np.repeat(pixels, image_batch, axis=0))

    def rate(fn, items: int, rounds: int) -> float:
        start = time.perf_counter()
        for _ in range(rounds):
            fn()
        return items * rounds / (time.perf_counter() - start)

    def seconds(fn, rounds: int) -> float:
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    batch = np.repeat(pixels, image_batch, axis=0)
    store = MilvusStore(MilvusTarget(db=str(db)))
    vector = encoder.encode_text(QUERIES[0])
    store.search(vector, "image", 12)
    result = {
        "dtype": str(encoder.dtype),
        "bare_batched_text_per_second": rate(
            lambda: encoder.encode_batch_texts(texts, batch_size=text_batch), text_batch, 4
        ),
        "bare_batched_image_per_second": rate(lambda: encoder.encode_pixels(batch), image_batch, 3),
        # one caption alone, over the same captions the clients send (their lengths differ): the median
        "one_caption_seconds": statistics.median(seconds(lambda q=q: encoder.encode_text(q), 5) for q in QUERIES),
        # searches back to back: the Lite process stays awake between them, a lower bound on one search
        "one_store_search_seconds": seconds(lambda: store.search(vector, "image", 12), 30),
        # one query as a lone client makes it, without HTTP: encode its caption, then search (the Lite process
        # has been idle while the caption was encoded, so this search costs what the server's does)
        "one_caption_then_search_seconds": statistics.median(
            seconds(lambda q=q: store.search(encoder.encode_text(q), "image", 12), 5) for q in QUERIES
        ),
        "decode_one_upload_seconds": seconds(lambda: encoder.preprocess(open_image(image)), 20),
        "torch_threads": torch.get_num_threads(),
    }
    store.close()
    out.write_text(json.dumps(result))


# -- servers ---------------------------------------------------------------------------------------------
class Server:
    """A server process on a free loopback port: ``new`` (this tree) or ``old`` (a worktree at a git ref)."""

    def __init__(self, kind: str, db: Path, tmpdir: Path, old_src: Path | None, dtype: str) -> None:
        from tests.helpers import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmpdir)}
        command = [sys.executable, "-m", "fashion_retrieval", "serve", "--db", str(db), "--port", str(self.port)]
        command += ["--device", "cpu"]
        if kind == "old":
            env["PYTHONPATH"] = str(old_src)
        else:
            command += ["--dtype", dtype, "--log-level", "warning"]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        import httpx

        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.url}/api/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{kind} server exited: {self.process.stdout.read()[-3000:]}") from None
                time.sleep(0.5)
        raise RuntimeError(f"{kind} server did not start")

    def rss_mb(self) -> float:
        import psutil

        return round(psutil.Process(self.process.pid).memory_info().rss / 2**20, 1)

    def close(self) -> str:
        self.process.terminate()
        try:
            return self.process.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.communicate()[0]


def run_clients(url: str, kind: str, clients: int, seconds: float) -> dict:
    """The load, from a separate process (so clients never share the server's cores' scheduling with it)."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.serve_load", "client", url, kind, str(clients), str(seconds)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """A multipart/form-data body, built once: the clients send the same upload again and again."""
    boundary = "fashion-retrieval-bench-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    for name, (filename, data, content_type) in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _load(url: str, kind: str, clients: int, seconds: float) -> dict:
    """``clients`` threads, each with its own keep-alive connection, sending one request after another.

    The standard library's ``http.client`` with bodies built once: a client should cost the server's cores as
    little as possible (here they share 2 cores). Measured against the same server (tiny model, one client):
    a text search took 3.6 ms through http.client, 4.5 ms through httpx.AsyncClient and 4.1 ms through
    httpx.Client; the difference is the client's own Python, not the server."""
    import http.client
    import threading
    from urllib.parse import urlsplit

    address = urlsplit(url)
    if kind == "text":
        bodies = [
            (json.dumps({"query": q, "top_k": 12}).encode(), "application/json", "/api/search/text") for q in QUERIES
        ]
    else:
        body, content_type = _multipart({"top_k": "12"}, {"image": ("q.jpg", query_image(), "image/jpeg")})
        bodies = [(body, content_type, "/api/search/image")]
    latencies: list[float] = []
    errors: list[str] = []

    def connect() -> http.client.HTTPConnection:
        return http.client.HTTPConnection(address.hostname, address.port, timeout=120)

    def engine_counts() -> dict:
        connection = connect()
        try:
            connection.request("GET", "/api/health")
            return json.loads(connection.getresponse().read()).get("engine", {})
        except (OSError, http.client.HTTPException, ValueError) as exc:  # a server gone: its errors tell
            errors.append(f"health {type(exc).__name__}")
            return {}
        finally:
            connection.close()

    def one(n: int, deadline: float) -> None:
        connection, i = connect(), n
        while time.perf_counter() < deadline:
            data, content_type, path = bodies[i % len(bodies)]
            start = time.perf_counter()
            try:
                connection.request("POST", path, body=data, headers={"Content-Type": content_type})
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors.append(str(response.status))
            except Exception as exc:  # noqa: BLE001 - every failure is counted, and the client keeps its load on
                errors.append(type(exc).__name__)
                connection.close()
                time.sleep(0.05)  # a server that is gone or refusing: no busy loop of failed connects
                connection = connect()
            i += clients
        connection.close()

    before = engine_counts()
    # health is probed from a process of its own: the loaded client process is busy itself, and its own
    # scheduling delays would be counted as the server's
    prober = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.serve_load", "probe", url, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(n, started + seconds)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    health = json.loads(prober.communicate()[0].strip().splitlines()[-1])
    after = engine_counts()
    ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    batches = after.get("batches", 0) - before.get("batches", 0)
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "requests_per_second": round(len(latencies) / elapsed, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "health_p95_ms": round(float(np.percentile(np.array(health) * 1000, 95)), 2) if health else None,
        "mean_batch": round((after.get("queries", 0) - before.get("queries", 0)) / batches, 2) if batches > 0 else None,
    }


def probe_health(url: str, seconds: float, wait: float = 1.0) -> list[float]:
    """``/api/health`` every 50 ms for ``seconds`` (after ``wait``, once a load is on): latencies in seconds."""
    import httpx

    time.sleep(min(wait, seconds / 4))
    deadline = time.perf_counter() + seconds - min(wait, seconds / 4) - 0.3
    samples = []
    with httpx.Client(base_url=url, timeout=120) as client:
        client.get("/api/health")  # the connection, outside the samples
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                client.get("/api/health")
            except httpx.HTTPError:  # a server too busy to answer in time: its wait is the sample
                pass
            samples.append(time.perf_counter() - start)
            time.sleep(0.05)
    return samples


def idle_health_p95(url: str) -> float:
    """The idle server's health p95, probed the way the loaded phases probe it (a process of its own)."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.serve_load", "probe", url, "6", "0"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    samples = json.loads(out.stdout.strip().splitlines()[-1])
    return round(float(np.percentile(np.array(samples) * 1000, 95)), 2)


def hostile(url: str, seconds: float) -> dict:
    """Malformed and oversized requests for ``seconds``: every answer must be a 4xx."""
    import httpx
    from PIL import Image
    from tests.helpers import jpeg_bytes

    buffer = io.BytesIO()
    Image.new("1", (4100, 4100)).save(buffer, "PNG")
    requests = [
        (
            "post",
            "/api/search/text",
            {
                "content": b'{"query": "x", "filters": {"gender": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
                "headers": {"content-type": "application/json"},
            },
        ),
        ("post", "/api/search/text", {"json": {"query": "dress", "filters": {"gender": ["x"] * 200_000}}}),
        (
            "post",
            "/api/search/text",
            {"content": '{"query": "\\ud800 x"}', "headers": {"content-type": "application/json"}},
        ),
        ("post", "/api/search/text", {"json": {"query": "dress", "top_k": True}}),
        ("post", "/api/search/image", {"files": {"image": ("a.png", buffer.getvalue(), "image/png")}}),
        (
            "post",
            "/api/search/image",
            {"files": {"image": ("a.jpg", b"\xff\xd8" + os.urandom(3_000_000), "image/jpeg")}},
        ),
        (
            "post",
            "/api/search/image",
            {"files": {"image": ("a.jpg", jpeg_bytes())}, "data": {"filters": '{"gender": 1}'}},
        ),
        ("post", "/api/search/image", {"files": {"image": ("a.jpg", b"\xff\xd8" + b"0" * 12_000_000)}}),
    ]
    statuses: dict[str, int] = {}
    deadline = time.perf_counter() + seconds
    count = 0
    with httpx.Client(base_url=url, timeout=60) as client:
        while time.perf_counter() < deadline:
            method, path, kwargs = requests[count % len(requests)]
            status = str(getattr(client, method)(path, **kwargs).status_code)
            statuses[status] = statuses.get(status, 0) + 1
            count += 1
    return {"requests": count, "statuses": statuses, "server_errors": sum(n for s, n in statuses.items() if s >= "500")}


class TempFileWatch:
    """Polls a process's open files (every 20 ms) for temporary files: spooled uploads are unnamed
    (O_TMPFILE, "/tmp/#123 (deleted)") or named under TMPDIR, and live only while a request is parsed."""

    def __init__(self, pid: int, tmpdir: Path) -> None:
        import threading

        self.pid, self.tmpdir, self.seen = pid, str(tmpdir), set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        folder = Path(f"/proc/{self.pid}/fd")
        while not self.stop.wait(0.02):
            try:
                for fd in folder.iterdir():
                    try:
                        target = os.readlink(fd)
                    except OSError:
                        continue
                    if target.startswith(self.tmpdir) and ("(deleted)" in target or "/tmp" in target):
                        if "milvus" not in target and "torchinductor" not in target:
                            self.seen.add(target)
            except OSError:
                return

    def close(self) -> int:
        self.stop.set()
        self.thread.join(timeout=5)
        return len(self.seen)


def measure_server(kind: str, db: Path, work: Path, old_src: Path | None, dtype: str, args) -> dict:
    tmpdir = work / f"tmp-{kind}"
    tmpdir.mkdir(exist_ok=True)
    server = Server(kind, db, tmpdir, old_src, dtype)
    result: dict = {"idle_health_p95_ms": idle_health_p95(server.url)}
    watch = TempFileWatch(server.process.pid, tmpdir)
    try:
        for kind_of_query in ("text", "image"):
            for clients in args.clients:
                result[f"{kind_of_query}_{clients}"] = run_clients(server.url, kind_of_query, clients, args.seconds)
                print(kind, kind_of_query, clients, result[f"{kind_of_query}_{clients}"], flush=True)
        if kind == "new":
            result["rss_after_normal_mb"] = server.rss_mb()
            result["hostile"] = hostile(server.url, args.seconds * len(args.clients))
            result["rss_after_hostile_mb"] = server.rss_mb()
    finally:
        result["temp_files"] = watch.close()  # temporary files the server held open at any moment of the run
        output = server.close()
    result["tracebacks"] = output.count("Traceback")
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        _, _, url, kind, clients, seconds = sys.argv
        print(json.dumps(_load(url, kind, int(clients), float(seconds))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "probe":
        wait = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
        print(json.dumps(probe_health(sys.argv[2], float(sys.argv[3]), wait)))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "store":
        _, _, base, db, rows, image_path = sys.argv
        print(json.dumps(build_store(Path(base), Path(db), int(rows), image_path)))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "ceilings":
        _, _, base, db, dtype, text_batch, image_batch, out = sys.argv
        ceilings(Path(base), Path(db), dtype, int(text_batch), int(image_batch), Path(out))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--dtype", default="fp32", help="the new server's dtype (the old one runs fp32 on CPU)")
    parser.add_argument("--old-ref", default="36aa988", help="git ref of the one-lock server")
    parser.add_argument("--no-old", action="store_true", help="skip the one-lock server")
    parser.add_argument("--name", default="serve_load")
    parser.add_argument("--keep", default=None, help="reuse/keep the model and store in this folder")
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        base = work / "base"
        if not (base / "config.json").is_file():
            build_base_sized_blip(base)
        image_path = work / "item.jpg"
        image_path.write_bytes(query_image())
        db = work / "fashion.db"
        store = {"rows": args.rows}
        if not db.exists():  # in a process of its own: a Lite file stays open in the process that opened it
            made = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.serve_load",
                    "store",
                    str(base),
                    str(db),
                    str(args.rows),
                    str(image_path),
                ],
                check=True,
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            store = json.loads(made.stdout.strip().splitlines()[-1])
        from fashion_retrieval.serve.engine import EngineSettings

        settings = EngineSettings.for_device("cpu")
        ceiling_file = work / "ceilings.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.serve_load",
                "ceilings",
                str(base),
                str(db),
                args.dtype,
                str(settings.max_batch),
                str(settings.max_image_batch),
                str(ceiling_file),
            ],
            check=True,
            cwd=ROOT,
        )
        ceiling = json.loads(ceiling_file.read_text())
        print("ceilings", ceiling, flush=True)
        new = measure_server("new", db, work, None, args.dtype, args)
        old = None
        if not args.no_old:
            old_src = work / "old"
            if not old_src.exists():
                subprocess.run(["git", "worktree", "add", "--detach", str(old_src), args.old_ref], cwd=ROOT, check=True)
            old = measure_server("old", db, work, old_src / "src", "fp32", args)
            subprocess.run(["git", "worktree", "remove", "--force", str(old_src)], cwd=ROOT, check=False)
        write_result(args.name, summarize(args, store, settings, ceiling, new, old))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def summarize(args, store, settings, ceiling, new, old) -> dict:
    clients = args.clients
    top, mid = max(clients), sorted(clients)[len(clients) // 2]
    targets = {
        "text_1_p50_vs_one_caption_then_search (<= 1.2)": round(
            new["text_1"]["p50_ms"] / 1000 / ceiling["one_caption_then_search_seconds"], 3
        )
        if "text_1" in new
        else None,
        # the same against the sum of the two parts measured apart (the search warm, back to back): stricter
        "text_1_p50_vs_one_caption_plus_warm_search (informative)": round(
            new["text_1"]["p50_ms"] / 1000 / (ceiling["one_caption_seconds"] + ceiling["one_store_search_seconds"]), 3
        )
        if "text_1" in new
        else None,
        f"text_{top}_rps_vs_bare_batched (>= 0.8)": round(
            new[f"text_{top}"]["requests_per_second"] / ceiling["bare_batched_text_per_second"], 3
        ),
        f"image_{mid}_rps_vs_bare_batched (>= 0.8)": round(
            new[f"image_{mid}"]["requests_per_second"] / ceiling["bare_batched_image_per_second"], 3
        ),
        "health_p95_under_load_vs_idle (<= 3)": round(
            max(new[f"text_{top}"]["health_p95_ms"], new[f"image_{mid}"]["health_p95_ms"]) / new["idle_health_p95_ms"],
            2,
        ),
        "errors (0)": sum(v["errors"] for k, v in new.items() if isinstance(v, dict) and "errors" in v),
        "temp_files (0)": new["temp_files"],
        "hostile_5xx (0)": new["hostile"]["server_errors"],
        "rss_hostile_vs_normal (<= 1.2)": round(new["rss_after_hostile_mb"] / new["rss_after_normal_mb"], 3),
    }
    if old:
        targets[f"text_{top}_rps_vs_one_lock (>= 1.5)"] = round(
            new[f"text_{top}"]["requests_per_second"] / old[f"text_{top}"]["requests_per_second"], 3
        )
        targets[f"image_{mid}_rps_vs_one_lock (>= 1.2)"] = round(
            new[f"image_{mid}"]["requests_per_second"] / old[f"image_{mid}"]["requests_per_second"], 3
        )
        # what batching can win on images is bounded by the encoder's batched rate: if the one-lock server
        # already reaches most of it, 1.2x of it is above the ceiling
        targets[f"one_lock_image_{mid}_rps_vs_bare_batched (informative)"] = round(
            old[f"image_{mid}"]["requests_per_second"] / ceiling["bare_batched_image_per_second"], 3
        )
    return {
        "command": "python -m benchmarks.serve_load " + " ".join(sys.argv[1:]),
        "model": "BLIP-base-sized BlipForImageTextRetrieval, random weights, 384 px",
        "store": {"kind": "Milvus Lite file", **store},
        "engine": {
            "max_batch": settings.max_batch,
            "max_image_batch": settings.max_image_batch,
            "max_wait_ms": settings.max_wait_ms,
        },
        "seconds_per_phase": args.seconds,
        "ceilings": ceiling,
        "targets": targets,
        "new": new,
        "one_lock": old,
        "note": "clients in a separate process; ceilings from a process of their own in the same run; the one-lock "
        f"server is git ref {args.old_ref} with the same venv (fp32, as its CPU default)",
    }


if __name__ == "__main__":
    main()
