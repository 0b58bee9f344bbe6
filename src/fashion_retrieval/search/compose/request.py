"""Composed and refined search requests: "like this, but in red", "not striped", "more like these".

``ComposeQuery`` carries a reference (a catalogue item or an uploaded image), a modifier text, negative
texts and relevance feedback (liked / unliked item ids). The algebra is ``search/compose/algebra.py``; this
module fetches what it needs from the store (the reference's caption and vector, the feedback items' vectors),
encodes the captions it composes, searches a candidate pool and re-scores it for the negatives.

Negatives are re-scored on the candidate pool as for a plain text search (``exclude_negatives``, here, which
``queries.TextQuery`` uses too).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fashion_retrieval.errors import ItemNotFoundError, QueryError
from fashion_retrieval.ranking import top_k_indices
from fashion_retrieval.search.base import (
    MAX_NEGATIVES,
    Against,
    Query,
    SearchResponse,
    check_top_k,
    clean_list,
    clean_text,
    rescored,
)
from fashion_retrieval.search.compose.algebra import (
    COMPOSED,
    DEFAULT_WEIGHTS,
    METHODS,
    MODIFIER,
    NEGATIVE,
    REFERENCE,
    ComposeWeights,
    compose_query,
    compose_texts,
    negative_vectors,
    rocchio,
    score_without,
)
from fashion_retrieval.store.base import Filters, Hit, VectorStore

if TYPE_CHECKING:
    from fashion_retrieval.search.context import SearchContext

MAX_FEEDBACK = 50


@dataclass
class ComposeQuery(Query):
    """A refined search; give at least a reference (``item`` or ``image``), a ``modifier`` or ``like`` ids.

    ``image`` is the preprocessed upload ([3, H, W], ``Searcher.prepare_image``). The reference item and
    the liked items are left out of the results: the shopper has seen them already."""

    modifier: str | None = None
    item: str | None = None
    image: np.ndarray | None = None
    minus: Sequence[str] = ()
    like: Sequence[str] = ()
    unlike: Sequence[str] = ()
    method: str | None = None
    weights: ComposeWeights = field(default_factory=lambda: DEFAULT_WEIGHTS)
    top_k: int = 10
    filters: Filters | None = None

    def __post_init__(self) -> None:
        self.started = time.perf_counter()
        self.modifier = clean_text(self.modifier, "the modifier") if self.modifier is not None else None
        self.item = clean_text(self.item, "the reference item id") if self.item is not None else None
        self.minus = clean_list(self.minus, "negative texts", MAX_NEGATIVES)
        self.like = clean_list(self.like, "liked items", MAX_FEEDBACK)
        self.unlike = clean_list(self.unlike, "unliked items", MAX_FEEDBACK)
        self.top_k = check_top_k(self.top_k)
        if self.method is not None and self.method not in METHODS:
            raise QueryError(f"method {self.method!r}: use one of {', '.join(METHODS)}")
        if self.item is not None and self.image is not None:
            raise QueryError("give a reference item or a reference image, not both")
        if self.item is None and self.image is None and not self.modifier and not self.like:
            raise QueryError("a refined search needs a reference (item or image), a modifier, or liked items")

    def texts(self) -> list[str]:
        return [t for t in (self.modifier,) if t] + list(self.minus)

    def pixels(self) -> list[np.ndarray]:
        return [] if self.image is None else [self.image]

    def _reference(self, context: SearchContext, images: np.ndarray) -> tuple[np.ndarray | None, str | None, bool]:
        """(image vector, caption, caption is an estimate) of the reference."""
        store = context.store
        if self.item is not None:
            found = store.get([self.item])
            if not found:
                raise ItemNotFoundError(f"no item {self.item[:80]!r} in {store.description}")
            return store.vectors([self.item], "image")[0], found[0].caption or None, False
        if self.image is None:
            return None, None, False
        vector = images[0]
        if not store.has_field("text"):
            return vector, None, False
        # An upload has no caption: the caption of its nearest catalogue item stands in (measured on the demo:
        # Recall@10 0.593 against 0.601 with the real caption).
        nearest = store.search(vector, "text", 1)[0]
        return vector, (nearest[0].caption if nearest else None), True

    def _feedback(self, store, ids: Sequence[str], ignored: list[str]) -> np.ndarray | None:
        """The image vectors of the marked items. An id the store no longer holds (a page open while the index
        changed) is ignored and reported back, not an error: the rest of the feedback still counts."""
        known = {h.id for h in store.get(list(ids))} if ids else set()
        ignored.extend(i for i in ids if i not in known)
        present = [i for i in ids if i in known]
        return store.vectors(present, "image") if present else None

    def execute(self, context: SearchContext, texts: np.ndarray, images: np.ndarray) -> SearchResponse:
        store, weights = context.store, self.weights
        image_vec, caption, estimated = self._reference(context, images)
        given = dict(zip([MODIFIER] if self.modifier else [], texts[:1], strict=False))
        given.update({f"{NEGATIVE}{i}": texts[len(given) + i] for i in range(len(self.minus))})
        wanted = compose_texts(self.modifier, caption, editor=context.caption_editor() if caption else None)
        to_encode = {k: v for k, v in wanted.items() if k in (REFERENCE, COMPOSED)}
        encoded = context.encode_texts(list(to_encode.values())) if to_encode else []
        text_vecs = {**given, **dict(zip(to_encode, encoded, strict=True))}
        if self.modifier or image_vec is not None:
            method = self.method or (weights.method if self.modifier else "image")
            query = compose_query(image_vec, text_vecs, method if self.modifier else "image", weights)
        else:  # feedback alone: start from the liked items
            method, query = "feedback", None
        ignored: list[str] = []
        liked, unliked = self._feedback(store, self.like, ignored), self._feedback(store, self.unlike, ignored)
        if liked is not None or unliked is not None:
            if query is None:  # feedback alone: start from zero, in the size of the feedback's vectors
                query = np.zeros(next(v for v in (liked, unliked) if v is not None).shape[-1], np.float32)
            query = rocchio(query, liked, unliked, weights)
        if query is None:
            raise ItemNotFoundError(f"none of the liked items {[i[:80] for i in self.like[:5]]} is in the catalogue")
        seen = {self.item, *self.like} - {None}
        pool = store.search(query, "image", max(weights.pool, self.top_k) + len(seen), self.filters)[0]
        pool = [h for h in pool if h.id not in seen]
        hits = exclude_negatives(store, pool, self.minus, negative_vectors(text_vecs), weights)
        described = {
            "type": "compose",
            "modifier": self.modifier,
            "item": self.item,
            "image": self.image is not None,
            "minus": list(self.minus),
            "like": list(self.like),
            "unlike": list(self.unlike),
            "method": method,
            "top_k": self.top_k,
            "filters": dict(self.filters or {}),
        }
        extra = {"reference_caption": caption, "caption_estimated": estimated}
        if ignored:
            extra["ignored_feedback"] = [i[:80] for i in ignored[:10]]
        if COMPOSED in wanted:
            extra["composed_caption"] = wanted[COMPOSED]
        return self.respond(described, hits[: self.top_k], extra)


def exclude_negatives(
    store: VectorStore,
    hits: list[Hit],
    negatives: Sequence[str],
    vectors: np.ndarray,
    weights: ComposeWeights,
    field: Against = "image",
) -> list[Hit]:
    """Re-score a candidate pool for negative texts (``algebra.score_without``) on the store's vectors it was
    searched by (images, or captions for ``against="text"``); best first."""
    if not hits or not len(negatives):
        return hits
    candidates = store.vectors([h.id for h in hits], field)
    scores = np.array([h.score for h in hits], np.float32)
    scores = score_without(candidates, scores, [h.caption for h in hits], negatives, vectors, weights)
    return [rescored(hits[i], float(scores[i])) for i in top_k_indices(scores, len(hits))]


__all__ = ["ComposeQuery", "exclude_negatives"]
