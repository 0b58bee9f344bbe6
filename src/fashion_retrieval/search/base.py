"""What every search request shares: the ``Query`` base, the ``SearchResponse`` and the input checks.

A query is a value: built (and validated, a ``QueryError`` naming the problem) before any model work, encoded
by whoever runs it, then executed against a ``SearchContext`` (``search/context.py``). The query types are in
``search/queries.py`` (text, image, hybrid) and ``search/compose/request.py`` (composed and refined).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from fashion_retrieval.errors import QueryError
from fashion_retrieval.store.base import Hit

if TYPE_CHECKING:
    from fashion_retrieval.search.context import SearchContext

Against = Literal["image", "text"]
MAX_TOP_K = 1000
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

    def execute(self, context: SearchContext, texts: np.ndarray, images: np.ndarray) -> SearchResponse:
        """Search with the vectors of ``texts()`` and ``pixels()`` (rows in that order) against ``context``."""
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


def rescored(hit: Hit, score: float, **attributes: str) -> Hit:
    return Hit(hit.id, score, hit.caption, hit.path, {**hit.attributes, **attributes})


def clean_list(values: Sequence[str] | None, what: str, limit: int) -> tuple[str, ...]:
    items = tuple(v.strip() for v in (values or ()) if isinstance(v, str) and v.strip())
    if len(items) > limit:
        raise QueryError(f"at most {limit} {what}, got {len(items)}")
    if any(len(v) > 1000 for v in items):
        raise QueryError(f"{what} must be at most 1000 characters each")
    return items


__all__ = [
    "MAX_NEGATIVES",
    "MAX_TOP_K",
    "Against",
    "Query",
    "SearchResponse",
    "check_against",
    "check_rerank",
    "check_top_k",
    "clean_list",
    "clean_text",
    "rescored",
]
