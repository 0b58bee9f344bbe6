"""The plain search requests as values: text, image and hybrid; what each needs encoded, and how it searches.

Splitting a request into "encode" and "search" is what lets a serving engine encode the texts of many
requests in one batch and their images in another, then run each request's own store search. A Python
call runs the very same two steps for a batch of one, so both give the same results.

Each query validates its inputs when built (a ``QueryError`` naming the problem), before any model work, and
runs against a ``SearchContext`` (``search/context.py``), the ``Searcher`` or any object like it. What all
queries share is in ``search/base.py`` (re-exported here); the composed request is ``search/compose/``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from fashion_retrieval.errors import QueryError
from fashion_retrieval.ranking import top_k_indices
from fashion_retrieval.search.base import (
    MAX_NEGATIVES,
    MAX_TOP_K,
    Against,
    Query,
    SearchResponse,
    check_against,
    check_top_k,
    clean_list,
    clean_text,
    rescored,
)
from fashion_retrieval.search.compose.algebra import DEFAULT_WEIGHTS, ComposeWeights
from fashion_retrieval.search.compose.request import exclude_negatives
from fashion_retrieval.search.fusion import rrf
from fashion_retrieval.store.base import Filters, Hit

if TYPE_CHECKING:
    from fashion_retrieval.search.context import SearchContext

Fusion = Literal["weighted", "rrf"]
CANDIDATES = 100  # per list, for RRF and for weighted fusion across two vector fields


@dataclass
class TextQuery(Query):
    """Text -> images (``against="image"``) or -> captions (``against="text"``)."""

    text: str
    top_k: int = 10
    filters: Filters | None = None
    against: Against = "image"
    rerank: int = 0
    minus: Sequence[str] = ()  # "without ...": texts whose matches sink to the bottom of a candidate pool
    weights: ComposeWeights = field(default_factory=lambda: DEFAULT_WEIGHTS)

    def __post_init__(self) -> None:
        self._check_text_search()
        self.minus = clean_list(self.minus, "negative texts", MAX_NEGATIVES)

    def texts(self) -> list[str]:
        return [self.text, *self.minus]

    def execute(self, context: SearchContext, texts: np.ndarray, images: np.ndarray) -> SearchResponse:
        want = max(self.top_k, self.rerank, self.weights.pool if self.minus else 0)
        hits = context.store.search(texts[0], self.against, want, self.filters)[0]
        extra = {}
        if self.rerank:
            hits, extra = context.rerank(self.text, hits[: max(self.top_k, self.rerank)])
        hits = exclude_negatives(context.store, hits, self.minus, texts[1:], self.weights, self.against)
        query = {
            "type": "text",
            "text": self.text,
            "against": self.against,
            "top_k": self.top_k,
            "filters": dict(self.filters or {}),
            "rerank": self.rerank,
            "minus": list(self.minus),
        }
        return self.respond(query, hits[: self.top_k], extra)


@dataclass
class ImageQuery(Query):
    """Image -> images (``against="image"``) or image -> captions (``against="text"``); ``image`` is the
    preprocessed pixel array [3, H, W] (``Searcher.prepare_image`` makes it)."""

    image: np.ndarray
    top_k: int = 10
    filters: Filters | None = None
    against: Against = "image"

    def __post_init__(self) -> None:
        self.started = time.perf_counter()
        self.top_k, self.against = check_top_k(self.top_k), check_against(self.against)

    def pixels(self) -> list[np.ndarray]:
        return [self.image]

    def execute(self, context: SearchContext, texts: np.ndarray, images: np.ndarray) -> SearchResponse:
        hits = context.store.search(images[0], self.against, self.top_k, self.filters)[0]
        query = {"type": "image", "against": self.against, "top_k": self.top_k, "filters": dict(self.filters or {})}
        return self.respond(query, hits)


@dataclass
class HybridQuery(Query):
    """Text and image together: ``alpha`` weighs the text (1 = text only, 0 = image only)."""

    text: str
    image: np.ndarray
    alpha: float = 0.5
    fusion: Fusion = "weighted"
    top_k: int = 10
    filters: Filters | None = None
    against: Against = "image"
    rerank: int = 0

    def __post_init__(self) -> None:
        self._check_text_search()
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int | float) or not 0.0 <= self.alpha <= 1.0:
            raise QueryError(f"alpha must be between 0 and 1, got {self.alpha!r}")
        if self.fusion not in ("weighted", "rrf"):
            raise QueryError(f"fusion must be 'weighted' or 'rrf', got {self.fusion!r}")

    def texts(self) -> list[str]:
        return [self.text]

    def pixels(self) -> list[np.ndarray]:
        return [self.image]

    def execute(self, context: SearchContext, texts: np.ndarray, images: np.ndarray) -> SearchResponse:
        store, alpha, want = context.store, float(self.alpha), max(self.top_k, self.rerank)
        text_vec, image_vec = texts[0], images[0]
        if self.fusion == "rrf":
            pool = max(want, CANDIDATES)
            lists = [
                store.search(text_vec, self.against, pool, self.filters)[0],
                store.search(image_vec, "image", pool, self.filters)[0],
            ]
            hits = rrf(lists, weights=[alpha, 1.0 - alpha])[:want]
        elif self.against == "image":
            # Both parts score the same vectors, so alpha*(t.v) + (1-alpha)*(i.v) = (alpha*t + (1-alpha)*i).v:
            # one exact search with the combined query.
            hits = store.search(alpha * text_vec + (1.0 - alpha) * image_vec, "image", want, self.filters)[0]
        else:
            hits = weighted_two_fields(store, text_vec, image_vec, alpha, want, self.filters)
        extra = {}
        if self.rerank:
            hits, extra = context.rerank(self.text, hits)
        query = {
            "type": "hybrid",
            "text": self.text,
            "alpha": alpha,
            "fusion": self.fusion,
            "against": self.against,
            "top_k": self.top_k,
            "filters": dict(self.filters or {}),
            "rerank": self.rerank,
        }
        return self.respond(query, hits[: self.top_k], extra)


def weighted_two_fields(store, text_vec, image_vec, alpha: float, want: int, filters) -> list[Hit]:
    """Weighted fusion of captions (text field) and images: candidates from both, then exact scores."""
    pool = max(want, CANDIDATES)
    candidates: dict[str, Hit] = {}
    for hit in store.search(text_vec, "text", pool, filters)[0] + store.search(image_vec, "image", pool, filters)[0]:
        candidates.setdefault(hit.id, hit)
    ids = list(candidates)
    if not ids:
        return []
    scores = alpha * (store.vectors(ids, "text") @ text_vec) + (1.0 - alpha) * (store.vectors(ids, "image") @ image_vec)
    return [rescored(candidates[ids[i]], float(scores[i])) for i in top_k_indices(scores, want)]


def split_rows(matrix: np.ndarray, counts: Sequence[int]) -> list[np.ndarray]:
    """Rows of ``matrix`` cut into consecutive blocks of ``counts`` rows."""
    edges = np.cumsum([0, *counts])
    return [matrix[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]


__all__ = [
    "CANDIDATES",
    "MAX_TOP_K",
    "Against",
    "Fusion",
    "HybridQuery",
    "ImageQuery",
    "Query",
    "SearchResponse",
    "TextQuery",
    "check_top_k",
    "clean_text",
    "split_rows",
]
