"""Vector stores: Milvus (Lite file or server by URI) and in-memory (numpy / FAISS) behind one front."""

from __future__ import annotations

import logging
from pathlib import Path

from fashion_retrieval.store.base import Filters, Hit, VectorStore, parse_filters

log = logging.getLogger(__name__)


def open_store(
    *,
    db: str | None = None,
    uri: str | None = None,
    token: str | None = None,
    collection: str | None = None,
    embeddings: str | None = None,
    use_faiss: bool | None = None,
    ef: int | None = None,
    nprobe: int | None = None,
) -> VectorStore:
    """Open an existing store: ``embeddings`` (an embeddings folder, in memory), ``uri`` (a Milvus server),
    or ``db`` (a Milvus Lite file; the default ``fashion.db``). ``ef`` / ``nprobe`` tune an HNSW / IVF index
    at search time (used only if the collection has that index)."""
    if embeddings:
        from fashion_retrieval.store.memory import MemoryStore

        return MemoryStore.open(embeddings, use_faiss=use_faiss)
    from fashion_retrieval.store.milvus import DEFAULT_COLLECTION, DEFAULT_DB, MilvusStore, MilvusTarget

    tuning = {k: v for k, v in (("ef", ef), ("nprobe", nprobe)) if v is not None}
    target = MilvusTarget(
        db=db or DEFAULT_DB, uri=uri, token=token, collection=collection or DEFAULT_COLLECTION, **tuning
    )
    if target.is_lite and not Path(target.address).exists():
        from fashion_retrieval.errors import StoreError

        raise StoreError(
            f"Milvus Lite file {target.address} does not exist: build it with "
            "`fashion-retrieval index EMBEDDINGS_DIR --db PATH`"
        )
    store = MilvusStore(target)
    log.info("opened %s", store.description)
    return store


__all__ = ["Filters", "Hit", "VectorStore", "open_store", "parse_filters"]
