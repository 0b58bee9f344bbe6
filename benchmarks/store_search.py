"""Vector store benchmark at 100k x 256: Milvus Lite (each installed engine) vs in-memory numpy and FAISS HNSW.

Insert rows/s (batched vs one row per call), single-query p50/p95 with and without a filter, batched
queries, and FAISS recall@10 against exact search. Results: benchmarks/results/store_search.json.

    python -m benchmarks.store_search --rows 100000 [--milvus-python /path/to/other/venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import write_result
from benchmarks.milvus_engine import make_vectors, percentiles, queries
from fashion_retrieval.embeddings import EmbeddingSet
from fashion_retrieval.store.memory import MemoryStore

FILTERS = {"gender": ["WOMEN"], "product_type": ["Dresses", "Skirts"]}


def memory_store(vectors, genders, types, use_faiss: bool) -> MemoryStore:
    meta = pd.DataFrame(
        {
            "id": [f"id{i}" for i in range(len(vectors))],
            "path": "",
            "caption": "",
            "gender": genders,
            "product_type": types,
        }
    )
    data = EmbeddingSet(Path("."), vectors, None, meta, {"model": {}}, [])
    return MemoryStore(data, use_faiss=use_faiss)


def time_store(store: MemoryStore, qs: np.ndarray) -> dict:
    out = {}
    for label, filters in (("no_filter", None), ("filter", FILTERS)):
        store.search(qs[0], "image", 10, filters)
        samples = []
        for q in qs:
            t = time.perf_counter()
            store.search(q, "image", 10, filters)
            samples.append(time.perf_counter() - t)
        t = time.perf_counter()
        store.search(qs, "image", 10, filters)
        out[label] = {
            **percentiles(samples),
            "batched_per_query_ms": round((time.perf_counter() - t) / len(qs) * 1e3, 3),
        }
    return out


def memory_results(vectors, genders, types, qs) -> dict:
    """Exact numpy and FAISS HNSW over the same vectors, with FAISS recall@10 against exact."""
    exact = memory_store(vectors, genders, types, use_faiss=False)
    result = {"numpy_exact": time_store(exact, qs)}
    start = time.perf_counter()
    hnsw = memory_store(vectors, genders, types, use_faiss=True)
    hnsw.search(qs[0], "image", 10)
    build = time.perf_counter() - start
    result["faiss_hnsw"] = {**time_store(hnsw, qs), "build_seconds": round(build, 2)}
    truth = [[h.id for h in row] for row in exact.search(qs, "image", 10)]
    approx = [[h.id for h in row] for row in hnsw.search(qs, "image", 10)]
    result["faiss_hnsw"]["recall@10_vs_exact"] = float(
        np.mean([len(set(a) & set(t)) / 10 for a, t in zip(approx, truth, strict=True)])
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument(
        "--milvus-python",
        action="append",
        default=[],
        help="another Python with a different pymilvus/milvus-lite pair (repeatable)",
    )
    parser.add_argument("--index", default="AUTOINDEX")
    parser.add_argument("--name", default="store_search", help="result file name under benchmarks/results/")
    parser.add_argument("--milvus-only", action="store_true", help="skip the in-memory numpy and FAISS runs")
    args = parser.parse_args()
    vectors, genders, types = make_vectors(args.rows, 256)
    qs = queries(vectors, args.queries)
    result = {"rows": args.rows, "dim": 256, "queries": args.queries, "index": args.index}
    if not args.milvus_only:
        result.update(memory_results(vectors, genders, types, qs))
    result["milvus_lite"] = []
    for python in [sys.executable, *args.milvus_python]:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = [
                python,
                str(Path(__file__).with_name("milvus_engine.py")),
                "--rows",
                str(args.rows),
                "--queries",
                str(args.queries),
                "--index",
                args.index,
                "--out",
                out.name,
            ]
            completed = subprocess.run(cmd, capture_output=True, text=True)
            if completed.returncode:
                result["milvus_lite"].append({"python": python, "error": completed.stderr[-600:]})
                continue
            result["milvus_lite"].append({"python": python, **json.loads(Path(out.name).read_text())})
    result["command"] = "python -m benchmarks.store_search " + " ".join(sys.argv[1:])
    write_result(args.name, result)


if __name__ == "__main__":
    main()
