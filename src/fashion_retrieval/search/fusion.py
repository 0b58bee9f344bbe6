"""Fusing two ranked lists: weighted scores, or reciprocal rank fusion (RRF)."""

from __future__ import annotations

from collections.abc import Sequence

from fashion_retrieval.store.base import Hit

RRF_K = 60  # the constant of Cormack et al. (2009); dampens the weight of the very top ranks


def rrf(rankings: Sequence[Sequence[Hit]], weights: Sequence[float] | None = None, k: int = RRF_K) -> list[Hit]:
    """Score each id by sum(weight / (k + rank)) over the lists it appears in (rank from 1); best first.

    Ties keep the order of first appearance (list order, then rank).
    """
    weights = weights or [1.0] * len(rankings)
    scores: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + weight / (k + rank)
            first.setdefault(hit.id, hit)
    order = sorted(first, key=lambda i: -scores[i])  # sorted is stable: ties stay in first-seen order
    return [Hit(i, scores[i], first[i].caption, first[i].path, first[i].attributes) for i in order]
