"""Search requests as values: what each needs encoded, and how it searches once its vectors exist.

Splitting a request into "encode" and "search" is what lets a serving engine encode the texts of many
requests in one batch and their images in another, then run each request's own store search. A Python
call runs the very same two steps for a batch of one, so both give the same results.

Each query validates its inputs when built (a ``QueryError`` naming the problem), before any model work.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from fashion_retrieval.errors import QueryError
from fashion_retrieval.ranking import top_k_indices
from fashion_retrieval.search.compose import DEFAULT_WEIGHTS, ComposeWeights, score_without
from fashion_retrieval.search.fusion import rrf
from fashion_retrieval.store.base import Filters, Hit

if TYPE_CHECKING:
    from fashion_retrieval.search.searcher import Searcher

Against = Literal["image", "text"]
Fusion = Literal["weighted", "rrf"]
MAX_TOP_K = 1000
CANDIDATES = 100  # per list, for RRF and for weighted fusion across two vector fields
MAX_NEGATIVES = 8


@dataclass
class SearchResponse:
    query: dict
    results: list[Hit]
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "query": self.query,
            "results": [h.to_dict() for h in self.results],
            "seconds": self.seconds,
            **self.extra,
        }


def clean_text(text: object, what: str = "the text query") -> str:
    if not isinstance(text, str) or not text.strip():
        raise QueryError(f"{what} is empty: type what you are looking for")
    return text.strip()


def check_top_k(top_k: object) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or not 1 <= int(top_k) <= MAX_TOP_K:
        raise QueryError(f"top_k must be a whole number between 1 and {MAX_TOP_K}, got {top_k!r}")
    return int(top_k)


def check_against(against: object) -> Against:
    if against not in ("image", "text"):
        raise QueryError(f"against must be 'image' or 'text', got {against!r}")
    return against  # type: ignore[return-value]


def check_rerank(rerank: object) -> int:
    if isinstance(rerank, bool) or not isinstance(rerank, int | np.integer) or not 0 <= int(rerank) <= MAX_TOP_K:
        raise QueryError(f"rerank must be a whole number between 0 and {MAX_TOP_K}, got {rerank!r}")
    return int(rerank)


class Query:
    """A search request: ``texts()`` and ``pixels()`` say what to encode; ``execute`` searches with the vectors."""

    started: float

    def texts(self) -> list[str]:
        return []

    def pixels(self) -> list[np.ndarray]:
        return []

    def execute(self, searcher: Searcher, texts: np.ndarray, images: np.ndarray) -> SearchResponse:
        raise NotImplementedError

    def respond(self, query: dict, hits: list[Hit], extra: dict | None = None) -> SearchResponse:
        return SearchResponse(query, hits, round(time.perf_counter() - self.started, 4), extra or {})

    def _check_text_search(self) -> None:
        """The checks every query with a typed text shares: the text, top_k, what it searches, the rerank."""
        self.started = time.perf_counter()
        self.text = clean_text(self.text)
        self.top_k, self.against, self.rerank = (
            check_top_k(self.top_k),
            check_against(self.against),
            check_rerank(self.rerank),
        )


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

    def execute(self, searcher: Searcher, texts: np.ndarray, images: np.ndarray) -> SearchResponse:
        want = max(self.top_k, self.rerank, self.weights.pool if self.minus else 0)
        hits = searcher.store.search(texts[0], self.against, want, self.filters)[0]
        extra = {}
        if self.rerank:
            hits, extra = searcher.rerank(self.text, hits[: max(self.top_k, self.rerank)])
        hits = exclude_negatives(searcher, hits, self.minus, texts[1:], self.weights, self.against)
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

    def execute(self, searcher: Searcher, texts: np.ndarray, images: np.ndarray) -> SearchResponse:
        hits = searcher.store.search(images[0], self.against, self.top_k, self.filters)[0]
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

    def execute(self, searcher: Searcher, texts: np.ndarray, images: np.ndarray) -> SearchResponse:
        store, alpha, want = searcher.store, float(self.alpha), max(self.top_k, self.rerank)
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
            hits, extra = searcher.rerank(self.text, hits)
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


def rescored(hit: Hit, score: float, **attributes: str) -> Hit:
    return Hit(hit.id, score, hit.caption, hit.path, {**hit.attributes, **attributes})


def exclude_negatives(
    searcher: Searcher,
    hits: list[Hit],
    negatives: Sequence[str],
    vectors: np.ndarray,
    weights: ComposeWeights,
    field: Against = "image",
) -> list[Hit]:
    """Re-score a candidate pool for negative texts (``compose.score_without``) on the vectors it was searched
    by (images, or captions for ``against="text"``); best first."""
    if not hits or not len(negatives):
        return hits
    candidates = searcher.store.vectors([h.id for h in hits], field)
    scores = np.array([h.score for h in hits], np.float32)
    scores = score_without(candidates, scores, [h.caption for h in hits], negatives, vectors, weights)
    return [rescored(hits[i], float(scores[i])) for i in top_k_indices(scores, len(hits))]


def clean_list(values: Sequence[str] | None, what: str, limit: int) -> tuple[str, ...]:
    items = tuple(v.strip() for v in (values or ()) if isinstance(v, str) and v.strip())
    if len(items) > limit:
        raise QueryError(f"at most {limit} {what}, got {len(items)}")
    if any(len(v) > 1000 for v in items):
        raise QueryError(f"{what} must be at most 1000 characters each")
    return items


def split_rows(matrix: np.ndarray, counts: Sequence[int]) -> list[np.ndarray]:
    """Rows of ``matrix`` cut into consecutive blocks of ``counts`` rows."""
    edges = np.cumsum([0, *counts])
    return [matrix[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]


__all__ = [
    "CANDIDATES",
    "MAX_TOP_K",
    "HybridQuery",
    "ImageQuery",
    "Query",
    "SearchResponse",
    "TextQuery",
    "check_top_k",
    "clean_text",
]
