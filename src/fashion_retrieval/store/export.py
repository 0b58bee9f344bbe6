"""A Milvus collection written back as an embeddings folder (the format ``embed`` writes), so ``eval``, ``report``
and indexing elsewhere work on a live catalogue: rows read in batches with a query iterator, sorted by id."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fashion_retrieval.embeddings import library_versions, read_manifest, write_embeddings
from fashion_retrieval.errors import StoreError
from fashion_retrieval.progress import progress_bar
from fashion_retrieval.store.milvus import VECTOR_FIELDS

log = logging.getLogger(__name__)


def _read_rows(store, batch_size: int, progress: bool) -> list[dict]:
    rows: list[dict] = []
    with progress_bar(store.count(), "exporting", "row", enabled=progress) as bar:
        for batch in store.iter_rows(batch_size):
            rows.extend(batch)
            bar.update(len(batch))
    rows.sort(key=lambda row: str(row["pk"]))
    return rows


def _matrix(rows: list[dict], name: str, dim: int) -> np.ndarray:
    if not rows:
        return np.zeros((0, dim), np.float32)
    return np.asarray([row[name] for row in rows], dtype=np.float32)


def export_store(store, out: str | Path, *, batch_size: int = 2000, overwrite: bool = False, progress: bool = False):
    """Write every item of ``store`` (a ``MilvusStore``) into ``out``; the manifest carries what the store records
    (model identity, precision, attributes, dimension). Returns a summary."""
    started = time.perf_counter()
    out = Path(out)
    identity = store.identity()
    if not identity:
        raise StoreError(f"{store.description} records no model: an embeddings folder needs one")
    if read_manifest(out) is not None and not overwrite:
        raise StoreError(f"{out} holds an embeddings folder already: choose another --out (or remove it)")
    out.mkdir(parents=True, exist_ok=True)
    attributes = list(store.attributes())
    rows = _read_rows(store, batch_size, progress)
    has_text = store.has_field("text")
    image = _matrix(rows, VECTOR_FIELDS["image"], store.dim)
    text = _matrix(rows, VECTOR_FIELDS["text"], store.dim) if has_text else None
    frame = pd.DataFrame(
        {"id": [str(r["pk"]) for r in rows], **{c: [str(r.get(c, "")) for r in rows] for c in ("path", "caption")}}
    )
    for name in attributes:
        frame[name] = [str(r.get(name, "")) for r in rows]
    summary = {
        "status": "done",
        "out": str(out),
        "items": len(rows),
        "embedded": len(rows),
        "failed": 0,
        "seconds": round(time.perf_counter() - started, 3),
        "engine": "export",
    }
    manifest = {
        "model": identity,
        "dim": int(store.dim),
        "has_text": has_text,
        "attributes": attributes,
        "precision": store.precision(),
        "source": {"store": store.description, "exported": True},
        "engine": {"name": "export"},
        "versions": library_versions(),
        "summary": summary,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_embeddings(out, image, text, frame, [], manifest)
    log.info("exported %d items from %s into %s in %.1f s", len(rows), store.description, out, summary["seconds"])
    return summary


__all__ = ["export_store"]
