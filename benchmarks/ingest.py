"""A live catalogue at real model size: ingest through the API against `embed` + `index`, and search latency while
an import runs against search latency alone, in one run.

A BLIP-base-sized model (random weights, 384 px, built from a config) and a synthetic catalogue of ``--items``
drawn garments. The baseline embeds them with the pipeline (the encoder loaded beforehand, as the server has
its own) and indexes them into a Milvus Lite file: items/s. The API run serves another Lite file (seeded with a
few other items: the collection must exist) with an admin key and imports the same items through
``POST /api/items:batch`` (``image_path`` lines under ``--images-dir``, ``--batch-lines`` a request, one request
after another) up to the last acknowledged line: items/s, target >= 0.8x the baseline. Then searches (text,
and image) from a client process at fixed concurrency, alone and while an importer process sends batches back
to back: p95 during the import against p95 alone, target <= 1.5x. Last, an overload phase: many more image
clients than the queue holds, at the server's default --max-queue and --request-timeout: the accepted
requests' p99 against the deadline, and the share shed. Clients and health probes are those of
``benchmarks/serve_load.py`` (a process of their own).

    python -m benchmarks.ingest                                        # ~15 min on 2 cores; results/ingest.json
    python -m benchmarks.ingest --tiny --items 24 --seconds 3 --name ingest_smoke      # checks the harness
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx

from benchmarks.common import benchmark_model, temporary_folder, write_result
from benchmarks.serve_load import run_clients

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
ROOT = Path(__file__).resolve().parents[1]
ADMIN = "bench-admin"
SEED_ITEMS = 8
DEFAULT_TIMEOUT = 10.0  # serve --request-timeout's default (ServeConfig.request_timeout)


# -- data ----------------------------------------------------------------------------------------------
def item_lines(catalog_csv: Path, prefix: str = "") -> list[str]:
    """The catalogue's rows as batch lines: id, caption, attributes, and the image by name under --images-dir."""
    import pandas as pd

    frame = pd.read_csv(catalog_csv).astype(str)
    attributes = [c for c in frame.columns if c not in ("image_id", "caption", "path")]
    return [
        json.dumps(
            {
                "id": prefix + row["image_id"],
                "caption": row["caption"],
                "attributes": {name: row[name] for name in attributes},
                "image_path": Path(row["path"]).name,
            }
        )
        for row in frame.to_dict("records")
    ]


def baseline(base: Path, catalog: Path, work: Path, dtype: str) -> dict:
    """`embed` then `index`, in this process, the encoder loaded before the clock starts."""
    from fashion_retrieval import FashionEmbeddingModel
    from fashion_retrieval.config import EmbedConfig, ModelConfig
    from fashion_retrieval.pipeline.embed import embed_catalog
    from fashion_retrieval.store.indexer import IndexConfig, index_embeddings
    from fashion_retrieval.store.milvus import MilvusTarget

    encoder = FashionEmbeddingModel(None, base, device="cpu", dtype=dtype)
    config = EmbedConfig(str(catalog), ModelConfig(str(base), device="cpu", dtype=dtype), out=str(work / "emb"))
    started = time.perf_counter()
    embedded = embed_catalog(config, encoder=encoder, progress=False)
    indexed = index_embeddings(
        IndexConfig(str(work / "emb"), MilvusTarget(db=str(work / "baseline.db"))), progress=False
    )
    seconds = time.perf_counter() - started
    items = indexed["count"]
    return {
        "items": items,
        "seconds": round(seconds, 2),
        "items_per_second": round(items / seconds, 3),
        "embed_seconds": embedded["seconds"],
        "index_seconds": indexed["seconds"],
        "embed_workers": config.workers,
    }


def seed_store(base: Path, catalog: Path, work: Path, dtype: str) -> Path:
    """A Lite file holding a few other items (indexed in a process of its own: the server opens the file next)."""
    emb, db = work / "seed_emb", work / "api.db"
    run = [sys.executable, "-m", "fashion_retrieval", "-q"]
    embed = [*run, "embed", str(catalog), "--base", str(base), "--out", str(emb), "--device", "cpu", "--dtype", dtype]
    subprocess.run(embed, check=True, cwd=ROOT, capture_output=True)
    subprocess.run([*run, "index", str(emb), "--db", str(db)], check=True, cwd=ROOT, capture_output=True)
    return db


# -- the server and the importer -------------------------------------------------------------------------
class Server:
    """`serve --db ... --admin-key ...` on a free loopback port until closed."""

    def __init__(self, db: Path, images: Path, dtype: str) -> None:
        from tests.helpers import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "fashion_retrieval", "serve", "--db", str(db), "--port", str(self.port)]
        command += ["--admin-key", ADMIN, "--images-dir", str(images), "--device", "cpu", "--dtype", dtype]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        self.process = subprocess.Popen(
            [*command, "--log-level", "warning"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.time() + 600
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.url}/api/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited: {self.process.stdout.read()[-3000:]}") from None
                time.sleep(0.5)
        raise RuntimeError("the server did not start")

    def engine(self) -> dict:
        return httpx.get(f"{self.url}/api/health", timeout=60).json()["engine"]

    def close(self) -> str:
        self.process.terminate()
        try:
            return self.process.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.communicate()[0]


def import_lines(url: str, lines: list[str], batch_lines: int, until: float | None = None) -> dict:
    """Send ``lines`` in batches, one request after another (again and again until ``until``, if given): the
    acknowledged lines and the time to the last one."""
    headers = {"X-API-Key": ADMIN, "Content-Type": "application/x-ndjson"}
    acknowledged = failed = 0
    started = time.perf_counter()
    with httpx.Client(timeout=None, headers=headers) as client:
        while True:
            for start in range(0, len(lines), batch_lines):
                answer = client.post(f"{url}/api/items:batch", content="\n".join(lines[start : start + batch_lines]))
                answer.raise_for_status()
                for line in answer.text.splitlines():
                    result = json.loads(line)
                    if "summary" not in result:
                        acknowledged += result["status"] in (200, 201)
                        failed += result["status"] >= 400
                if until is not None and time.perf_counter() > until:
                    break
            if until is None or time.perf_counter() > until:
                break
    seconds = time.perf_counter() - started
    return {
        "items": acknowledged,
        "failed": failed,
        "seconds": round(seconds, 2),
        "items_per_second": round(acknowledged / seconds, 3),
    }


def importer_process(url: str, lines_file: Path, batch_lines: int, seconds: float) -> subprocess.Popen:
    """An importer at full speed in a process of its own (new ids each round: every line is a new item)."""
    command = [sys.executable, "-m", "benchmarks.ingest", "importer", url, str(lines_file), str(batch_lines)]
    return subprocess.Popen([*command, str(seconds)], cwd=ROOT, stdout=subprocess.PIPE, text=True)


def _importer_main(url: str, lines_file: str, batch_lines: str, seconds: str) -> None:
    lines = Path(lines_file).read_text().splitlines()
    print(json.dumps(import_lines(url, lines, int(batch_lines), until=time.perf_counter() + float(seconds))))


# -- phases ----------------------------------------------------------------------------------------------
def search_phases(server: Server, catalog: Path, work: Path, args) -> dict:
    """Text and image search p95 alone, then while an importer runs at full speed."""
    lines_file = work / "again.ndjson"
    lines_file.write_text("\n".join(item_lines(catalog, prefix="again-")))
    phases: dict = {}
    for kind, clients in (("text", args.clients), ("image", 1)):
        phases[f"{kind}_alone"] = run_clients(server.url, kind, clients, args.seconds)
        importer = importer_process(server.url, lines_file, args.batch_lines, args.seconds + 5)
        time.sleep(2)  # the import is under way
        phases[f"{kind}_during_import"] = run_clients(server.url, kind, clients, args.seconds)
        phases[f"{kind}_importer"] = json.loads(
            importer.communicate(timeout=args.seconds * 10 + 600)[0].splitlines()[-1]
        )
        print(kind, {k: v for k, v in phases.items() if k.startswith(kind)}, flush=True)
    return phases


def overload_phase(server: Server, args) -> dict:
    """Many more image clients than the queue holds, at the defaults: what is shed, and how long the rest takes."""
    before = server.engine()
    result = run_clients(server.url, "image", args.overload_clients, args.seconds)
    after = server.engine()
    result.update({k: after[k] - before[k] for k in ("shed", "expired", "abandoned", "late")})
    result["max_queue"], result["request_timeout_s"] = after["max_queue"], DEFAULT_TIMEOUT
    return result


def run(args) -> dict:
    from fashion_retrieval.data.synthetic import make_catalog

    with (
        benchmark_model(args.model_cache, tiny=args.tiny) as (base, described),
        temporary_folder("bench-ingest-") as work,
    ):
        catalog = make_catalog(work / "cat", n=args.items, seed=0, image_size=args.image_size)
        seed = make_catalog(work / "seed", n=SEED_ITEMS, seed=1, image_size=args.image_size)
        reference = baseline(base, catalog, work, args.dtype)
        print("embed + index", reference, flush=True)
        server = Server(seed_store(base, seed, work, args.dtype), catalog.parent / "selected_images", args.dtype)
        try:
            api = import_lines(server.url, item_lines(catalog), args.batch_lines)
            print("through the API", api, flush=True)
            phases = search_phases(server, catalog, work, args)
            overload = overload_phase(server, args) if args.overload_clients else None
            engine = server.engine()
        finally:
            output = server.close()
    return summarize(args, described, reference, api, phases, overload, engine, output.count("Traceback"))


def summarize(args, described, reference, api, phases, overload, engine, tracebacks) -> dict:
    def ratio(kind: str) -> float:
        return round(phases[f"{kind}_during_import"]["p95_ms"] / phases[f"{kind}_alone"]["p95_ms"], 3)

    targets = {
        "api_ingest_vs_embed_index (>= 0.8)": round(api["items_per_second"] / reference["items_per_second"], 3),
        "text_p95_during_import_vs_alone (<= 1.5)": ratio("text"),
        "image_p95_during_import_vs_alone (<= 1.5)": ratio("image"),
        "tracebacks (0)": tracebacks,
    }
    if overload:
        deadline = overload["request_timeout_s"]
        targets["overload_accepted_p99_vs_request_timeout (<= 1)"] = round(overload["p99_ms"] / 1000 / deadline, 3)
    return {
        "command": "python -m benchmarks.ingest " + " ".join(sys.argv[1:]),
        "model": described,
        "items": args.items,
        "batch_lines": args.batch_lines,
        "seconds_per_phase": args.seconds,
        "targets": targets,
        "embed_and_index": reference,
        "api_import": api,
        "searches": phases,
        "overload": overload,
        "engine": engine,
        "note": "the encoder is loaded before the baseline's clock starts, as the server's is before its import; "
        "searches and the importer run in processes of their own on the same cores",
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "importer":
        _importer_main(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=256, help="side of the catalogue's drawn images")
    parser.add_argument("--batch-lines", type=int, default=32, help="lines per batch request")
    parser.add_argument("--seconds", type=float, default=20.0, help="per search phase")
    parser.add_argument("--clients", type=int, default=2, help="text search clients (image: 1)")
    parser.add_argument(
        "--overload-clients", type=int, default=32, help="image clients of the overload phase (0: skip)"
    )
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--tiny", action="store_true", help="a tiny model: checks the harness, not speed")
    parser.add_argument("--model-cache", default=None, help="build the model once into this folder")
    parser.add_argument("--name", default="ingest")
    args = parser.parse_args()
    write_result(args.name, run(args))


if __name__ == "__main__":
    main()
