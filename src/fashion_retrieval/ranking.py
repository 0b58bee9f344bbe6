"""The one top-k rule of the project: highest score first, ties in catalogue (index) order."""

from __future__ import annotations

import numpy as np


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores along the last axis, best first; ties keep index order.

    Works on a vector [N] or a matrix [Q, N] (one ranking per row). Uses a partial sort when k << N.
    """
    scores = np.asarray(scores)
    n = scores.shape[-1]
    k = max(0, min(int(k), n))
    if k == 0:
        return np.zeros((*scores.shape[:-1], 0), dtype=np.int64)
    if scores.ndim == 1:
        if k < n:
            candidates = np.argpartition(-scores, k - 1)[:k]
            # the k-th score may be tied with rows outside the partition: take every row tied with it
            kth = scores[candidates].min()
            candidates = np.union1d(candidates, np.flatnonzero(scores == kth))
        else:
            candidates = np.arange(n)
        return candidates[np.lexsort((candidates, -scores[candidates]))][:k]
    return np.argsort(-scores, axis=-1, kind="stable")[..., :k]


__all__ = ["top_k_indices"]
