"""Retrieval metrics in pure numpy: Recall@K, MRR, median and mean rank, with pair or attribute relevance.

Ranking follows the searcher: score descending, ties in gallery order. The rank of a query is the
position of its best-ranked relevant gallery item (1-based).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CHUNK = 1024


def first_relevant_ranks(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """For each query row, the 1-based rank of its best relevant item; ``inf`` where none is relevant."""
    scores = np.asarray(scores, dtype=np.float64)
    masked = np.where(relevant, scores, -np.inf)
    best = masked.argmax(axis=1)  # argmax takes the lowest index among equal scores: the tie order
    best_score = masked[np.arange(len(best)), best]
    higher = (scores > best_score[:, None]).sum(axis=1)
    tied_before = ((scores == best_score[:, None]) & (np.arange(scores.shape[1])[None, :] < best[:, None])).sum(axis=1)
    ranks = 1.0 + higher + tied_before
    ranks[~relevant.any(axis=1)] = np.inf
    return ranks


def summarize(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    ranks = np.asarray(ranks, dtype=np.float64)
    out = {f"recall@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["mrr"] = float(np.mean(1.0 / ranks))
    finite = ranks[np.isfinite(ranks)]
    out["median_rank"] = float(np.median(finite)) if len(finite) else float("inf")
    out["mean_rank"] = float(np.mean(finite)) if len(finite) else float("inf")
    return out


def relevance_matrix(query_keys: Sequence, gallery_keys: Sequence) -> np.ndarray:
    """relevant[i, j] = query i's key equals gallery j's key (keys: ids for pairs, attribute tuples otherwise)."""
    codes: dict = {}
    q = np.array([codes.setdefault(k, len(codes)) for k in query_keys])
    g = np.array([codes.setdefault(k, len(codes)) for k in gallery_keys])
    return q[:, None] == g[None, :]


def retrieval_ranks(
    queries: np.ndarray, gallery: np.ndarray, query_keys: Sequence, gallery_keys: Sequence
) -> np.ndarray:
    """Ranks of each query against the whole gallery, computed in chunks to bound memory."""
    ranks = []
    for start in range(0, len(queries), CHUNK):
        stop = start + CHUNK
        scores = queries[start:stop] @ gallery.T
        ranks.append(first_relevant_ranks(scores, relevance_matrix(query_keys[start:stop], gallery_keys)))
    return np.concatenate(ranks) if ranks else np.zeros(0)


def recall_report(
    image: np.ndarray,
    text: np.ndarray,
    keys: Sequence,
    ks: Sequence[int] = (1, 5, 10),
    query_rows: np.ndarray | None = None,
) -> dict:
    """Text->image and image->text metrics; ``keys`` decide relevance; ``query_rows`` picks the queries."""
    rows = np.arange(len(keys)) if query_rows is None else np.asarray(query_rows)
    keys = list(keys)
    query_keys = [keys[i] for i in rows]
    t2i = retrieval_ranks(text[rows], image, query_keys, keys)
    i2t = retrieval_ranks(image[rows], text, query_keys, keys)
    return {
        "text_to_image": summarize(t2i, ks),
        "image_to_text": summarize(i2t, ks),
        "queries": int(len(rows)),
        "gallery": int(len(keys)),
        "_ranks": {"text_to_image": t2i, "image_to_text": i2t},
    }
