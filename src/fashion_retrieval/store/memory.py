"""In-memory search over an embeddings folder: exact numpy, or FAISS HNSW for large folders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fashion_retrieval.embeddings import EmbeddingSet, load_embeddings
from fashion_retrieval.errors import StoreError
from fashion_retrieval.ranking import top_k_indices
from fashion_retrieval.store.base import BASE_FIELDS, Filters, Hit, VectorField, query_matrix, validate_filters

FAISS_AUTO_ROWS = 200_000  # above this, exact search costs more than HNSW's small recall loss
# With FAISS and a filter, the rows that pass are searched exactly when they are few (a share below this, or
# no more rows than exact search handles quickly anyway): an HNSW walk restricted to part of its graph loses
# recall badly on clustered data (recall@10 0.30 at a 26% filter in benchmarks/results/store_search.json).
FAISS_FILTER_FRACTION = 0.25


class MemoryStore:
    def __init__(self, data: EmbeddingSet, *, use_faiss: bool | None = None, ef_search: int = 128) -> None:
        self.data = data
        self.meta: pd.DataFrame = data.metadata.reset_index(drop=True)
        self.description = f"embeddings folder {data.folder}"
        self._matrix = {"image": np.ascontiguousarray(data.image_embeddings, dtype=np.float32)}
        if data.text_embeddings is not None:
            self._matrix["text"] = np.ascontiguousarray(data.text_embeddings, dtype=np.float32)
        self._row = {str(i): n for n, i in enumerate(self.meta["id"])}
        self.use_faiss = len(self.meta) > FAISS_AUTO_ROWS if use_faiss is None else use_faiss
        self.ef_search = ef_search
        self._faiss: dict[str, object] = {}
        self._facets: dict[int, dict[str, list[str]]] = {}
        self.max_concurrency = 1  # numpy's matrix products already use every core
        # An embeddings folder is served read-only: with `serve --workers N` each process holds its own copy, so
        # a write would reach one of them; a live catalogue lives in Milvus (`index` the folder, then serve that).
        self.writable = False

    @classmethod
    def open(cls, folder: str | Path, *, use_faiss: bool | None = None) -> MemoryStore:
        return cls(load_embeddings(folder), use_faiss=use_faiss)

    def count(self) -> int:
        return len(self.meta)

    def identity(self) -> dict | None:
        return self.data.manifest.get("model")

    def precision(self) -> dict | None:
        return self.data.manifest.get("precision")

    def attributes(self) -> list[str]:
        return [c for c in self.meta.columns if c not in BASE_FIELDS]

    def has_field(self, vector_field: VectorField) -> bool:
        return vector_field in self._matrix

    @property
    def dim(self) -> int:
        return int(self._matrix["image"].shape[1])

    def _mask(self, filters: Filters | None) -> np.ndarray | None:
        clean = validate_filters(filters, self.attributes() + ["id"])
        if not clean:
            return None
        mask = np.ones(len(self.meta), dtype=bool)
        for name, values in clean.items():
            mask &= self.meta[name].astype(str).isin(values).to_numpy()
        return mask

    def _faiss_index(self, vector_field: VectorField):
        if vector_field not in self._faiss:
            try:
                import faiss
            except ImportError as exc:
                raise StoreError("FAISS is not installed: pip install faiss-cpu (or search without --faiss)") from exc
            index = faiss.IndexHNSWFlat(self._matrix[vector_field].shape[1], 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 200
            index.add(self._matrix[vector_field])
            self._faiss[vector_field] = index
        return self._faiss[vector_field]

    def search(
        self, queries: np.ndarray, vector_field: VectorField, top_k: int, filters: Filters | None = None
    ) -> list[list[Hit]]:
        queries = query_matrix(self, queries, vector_field)
        mask = self._mask(filters)
        if (
            mask is not None
            and self.use_faiss
            and (mask.mean() < FAISS_FILTER_FRACTION or mask.sum() <= FAISS_AUTO_ROWS)
        ):
            return self._search_exact_subset(queries, vector_field, top_k, np.flatnonzero(mask))
        if self.use_faiss:
            return self._search_faiss(queries, vector_field, top_k, mask)
        scores = queries @ self._matrix[vector_field].T
        if mask is not None:
            scores[:, ~mask] = -np.inf
        allowed = len(self.meta) if mask is None else int(mask.sum())
        return [self._hits(top_k_indices(row, min(top_k, allowed)), row) for row in scores]

    def _search_exact_subset(self, queries, vector_field, top_k, rows: np.ndarray) -> list[list[Hit]]:
        """Exact search over the rows a filter lets through. An HNSW graph walk that may only stop at part of
        its nodes misses many of them, and scanning the allowed rows exactly is cheap while they are few: the
        usual remedy (Milvus and Qdrant switch to brute force for selective filters too)."""
        scores = queries @ self._matrix[vector_field][rows].T
        return [[self._hit(int(rows[i]), float(row[i])) for i in top_k_indices(row, top_k)] for row in scores]

    def _search_faiss(self, queries, vector_field, top_k, mask) -> list[list[Hit]]:
        import faiss

        index = self._faiss_index(vector_field)
        ef = max(self.ef_search, top_k)
        params = faiss.SearchParametersHNSW(efSearch=ef)
        if mask is not None:
            # the walk may stop only at allowed nodes: widen it in proportion to what the filter removes
            params = faiss.SearchParametersHNSW(efSearch=int(min(ef / max(mask.mean(), 1e-9), 4 * ef)))
            params.sel = faiss.IDSelectorBatch(np.flatnonzero(mask).astype(np.int64))
        scores, rows = index.search(queries, top_k, params=params)
        return [self._hits(r[r >= 0], None, s[r >= 0]) for r, s in zip(rows, scores, strict=True)]

    def _hits(self, rows: np.ndarray, scores_row: np.ndarray | None, scores: np.ndarray | None = None) -> list[Hit]:
        values = scores if scores is not None else scores_row[rows]
        return [self._hit(int(r), float(s)) for r, s in zip(rows, values, strict=True)]

    def _hit(self, row: int, score: float) -> Hit:
        record = self.meta.iloc[row]
        attrs = {k: str(record[k]) for k in self.attributes()}
        return Hit(str(record["id"]), score, str(record["caption"]), str(record["path"]), attrs)

    def vectors(self, ids: Sequence[str], vector_field: VectorField) -> np.ndarray:
        rows = [self._row[i] for i in ids]
        return self._matrix[vector_field][rows]

    def captions(self, limit: int) -> list[str]:
        """Up to ``limit`` captions, an even sample of the catalogue."""
        step = max(1, len(self.meta) // max(1, limit))
        return self.meta["caption"].astype(str).tolist()[::step][:limit]

    def some_ids(self, n: int) -> list[str]:
        return [str(i) for i in self.meta["id"][:n]]

    def get(self, ids: Sequence[str]) -> list[Hit]:
        return [self._hit(self._row[i], 0.0) for i in ids if i in self._row]

    def present_values(self, name: str, values: Sequence[str]) -> set[str]:
        """Which of ``values`` some item holds in the attribute ``name``."""
        if name not in self.attributes():
            return set()
        return set(self.meta[name].astype(str)) & set(values)

    def facets(self, limit: int = 200, *, fresh: bool = False) -> dict[str, list[str]]:
        if limit in self._facets:  # the folder does not change under us; the API asks on every search
            return self._facets[limit]
        out = {}
        for name in self.attributes():
            values = self.meta[name].astype(str).unique()
            if 1 < len(values) <= limit and len(values) < len(self.meta):  # ids are not facets
                out[name] = sorted(values)
        self._facets[limit] = out
        return out

    def close(self) -> None:
        self._faiss.clear()
