"""Milvus Lite measurements with the raw pymilvus client, so one script runs under any pymilvus /
milvus-lite pair (the store_search benchmark runs it in the project's venv and in a 2.5.x venv).

    python benchmarks/milvus_engine.py --rows 100000 --out result.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def make_vectors(rows: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clustered, normalised vectors (like real embeddings) with two attributes."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(10, rows // 100), dim)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), rows)] + 0.5 * rng.normal(size=(rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    genders = rng.choice(["MEN", "WOMEN"], rows)
    types = rng.choice(["Denim", "Dresses", "Pants", "Shorts", "Skirts", "Tees_Tanks", "Jackets", "Hoodies"], rows)
    return vectors, genders, types


def queries(vectors: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    """Queries near catalogue items, as real ones are (a uniformly random query is HNSW's worst case)."""
    rng = np.random.default_rng(seed)
    q = vectors[rng.integers(0, len(vectors), n)] + 0.05 * rng.normal(size=(n, vectors.shape[1])).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def wait_for_index(client, collection: str, field: str, timeout: float = 300.0) -> float:
    """Flush, then wait until the vector index covers every row (Milvus builds it in the background)."""
    start = time.perf_counter()
    client.flush(collection)
    while time.perf_counter() - start < timeout:
        info = client.describe_index(collection, field)
        if (
            not info
            or info.get("pending_index_rows", 0) == 0
            and info.get("indexed_rows", 0) >= info.get("total_rows", 0)
        ):
            break
        time.sleep(0.5)
    return time.perf_counter() - start


def percentiles(samples: list[float]) -> dict:
    ms = np.asarray(samples) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--single-inserts", type=int, default=300)
    parser.add_argument("--index", default="AUTOINDEX")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import pymilvus
    from pymilvus import DataType, MilvusClient

    try:
        from importlib.metadata import version

        lite_version = version("milvus-lite")
    except Exception:  # noqa: BLE001 - only for the report
        lite_version = "unknown"
    vectors, genders, types = make_vectors(args.rows, args.dim)
    folder = Path(tempfile.mkdtemp(prefix="milvus-bench-"))
    client = MilvusClient(str(folder / "bench.db"))
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("image_embedding", DataType.FLOAT_VECTOR, dim=args.dim)
    schema.add_field("gender", DataType.VARCHAR, max_length=16)
    schema.add_field("product_type", DataType.VARCHAR, max_length=32)
    index = client.prepare_index_params()
    index.add_index("image_embedding", index_type=args.index, metric_type="IP")
    client.create_collection("items", schema=schema, index_params=index)

    def rows(start: int, stop: int) -> list[dict]:
        return [
            {
                "pk": f"id{i}",
                "image_embedding": vectors[i].tolist(),
                "gender": str(genders[i]),
                "product_type": str(types[i]),
            }
            for i in range(start, stop)
        ]

    start = time.perf_counter()
    for s in range(0, args.rows, 5000):
        client.upsert("items", rows(s, min(s + 5000, args.rows)))
    batched_rate = args.rows / (time.perf_counter() - start)
    single = [rows(i, i + 1) for i in range(args.single_inserts)]
    start = time.perf_counter()
    for row in single:
        client.upsert("items", row)  # the original toolkit's notebook inserted like this
    single_rate = args.single_inserts / (time.perf_counter() - start)
    index_wait = wait_for_index(client, "items", "image_embedding")
    client.load_collection("items")
    qs = queries(vectors, args.queries)
    results = {}
    for label, expr in (("no_filter", ""), ("filter", 'gender in ["WOMEN"] and product_type in ["Dresses", "Skirts"]')):
        client.search("items", data=[qs[0].tolist()], anns_field="image_embedding", limit=10, filter=expr)
        samples = []
        for q in qs:
            t = time.perf_counter()
            client.search(
                "items",
                data=[q.tolist()],
                anns_field="image_embedding",
                limit=10,
                filter=expr,
                output_fields=["gender"],
            )
            samples.append(time.perf_counter() - t)
        t = time.perf_counter()
        client.search(
            "items", data=qs.tolist(), anns_field="image_embedding", limit=10, filter=expr, output_fields=["gender"]
        )
        per_query_batched = (time.perf_counter() - t) / len(qs) * 1000
        results[label] = {**percentiles(samples), "batched_per_query_ms": round(per_query_batched, 3)}
    hits = client.search("items", data=qs[:20].tolist(), anns_field="image_embedding", limit=10)
    exact = np.argsort(-(qs[:20] @ vectors.T), axis=1)[:, :10]
    found = [[int(h["id"][2:]) if "id" in h else int(h["pk"][2:]) for h in row] for row in hits]
    recall = float(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact, strict=True)]))
    client.close()
    shutil.rmtree(folder, ignore_errors=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "pymilvus": pymilvus.__version__,
                "milvus_lite": lite_version,
                "rows": args.rows,
                "index": args.index,
                "insert_rows_per_second": {
                    "batched_5000": round(batched_rate, 1),
                    "one_row_per_call": round(single_rate, 1),
                },
                "flush_and_index_seconds": round(index_wait, 2),
                "query": results,
                "recall@10_vs_exact": recall,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
