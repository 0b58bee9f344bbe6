"""``fashion-retrieval index``: an embeddings folder into a Milvus collection, batched, idempotent."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from fashion_retrieval.embeddings import load_embeddings
from fashion_retrieval.identity import ensure_same_model
from fashion_retrieval.progress import progress_bar
from fashion_retrieval.store.base import BASE_FIELDS
from fashion_retrieval.store.milvus import MilvusStore, MilvusTarget


@dataclass(frozen=True)
class IndexConfig:
    embeddings: str
    target: MilvusTarget
    batch_size: int = 2000
    delete_missing: bool = False


def index_embeddings(config: IndexConfig, *, progress: bool = True) -> dict:
    """Upsert every embedded item (failed items are not in the folder); optionally delete rows no longer there."""
    started = time.perf_counter()
    data = load_embeddings(config.embeddings)
    store = MilvusStore(config.target, must_exist=False)
    try:
        attributes = [c for c in data.metadata.columns if c not in BASE_FIELDS]
        created = False
        if store.exists():
            ensure_same_model(store.identity() or {}, data.identity, f"{store.description}")
            store.require()
            missing = sorted(set(attributes) - set(store.attributes()))
            if missing:
                from fashion_retrieval.errors import StoreError

                raise StoreError(
                    f"{store.description} has no field(s) {', '.join(missing)}: drop it with "
                    "`fashion-retrieval schema drop` and index again"
                )
        else:
            store.create(
                int(data.image_embeddings.shape[1]),
                attributes,
                data.identity,
                has_text=data.text_embeddings is not None,
                precision=data.manifest.get("precision"),
            )
            created = True
        meta = data.metadata.astype(str)
        upserted = 0
        with progress_bar(len(meta), "indexing", "row", enabled=progress) as bar:
            for start in range(0, len(meta), config.batch_size):
                stop = min(start + config.batch_size, len(meta))
                rows = _rows(
                    meta.iloc[start:stop],
                    data.image_embeddings[start:stop],
                    None if data.text_embeddings is None else data.text_embeddings[start:stop],
                    attributes,
                )
                upserted += store.upsert(rows)
                bar.update(stop - start)
        deleted = 0
        if config.delete_missing:
            stale = sorted(set(store.all_ids()) - set(meta["id"]))
            deleted = store.delete(stale)
        store.flush()
        return {
            "collection": config.target.collection,
            "address": config.target.address,
            "created": created,
            "upserted": upserted,
            "deleted": deleted,
            "count": store.count(),
            "seconds": round(time.perf_counter() - started, 3),
        }
    finally:
        store.close()


def _rows(meta, image: np.ndarray, text: np.ndarray | None, attributes: list[str]) -> list[dict]:
    image_lists = np.asarray(image, dtype=np.float32).tolist()
    text_lists = None if text is None else np.asarray(text, dtype=np.float32).tolist()
    rows = []
    for n, values in enumerate(meta.to_dict("records")):
        row = {
            "pk": values["id"],
            "image_embedding": image_lists[n],
            "caption": values["caption"],
            "path": values["path"],
        }
        if text_lists is not None:
            row["text_embedding"] = text_lists[n]
        for name in attributes:
            row[name] = values[name]
        rows.append(row)
    return rows
