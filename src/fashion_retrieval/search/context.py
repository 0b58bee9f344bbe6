"""What a query needs from whoever executes it: a store to search and a few model services.

A query (``search/base.py``) is a value; ``Query.execute(context, texts, images)`` runs it against a
``SearchContext``. The ``Searcher`` is one, structurally (it never names this class); a test can pass any
object with these members. Defining the contract here, below the queries, is what keeps them from importing
the searcher that imports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

    from fashion_retrieval.search.caption_edit import CaptionEditor
    from fashion_retrieval.store.base import Hit, VectorStore


class SearchContext(Protocol):
    """The executor's side of a query: its store, and model work a query asks for while it runs."""

    @property
    def store(self) -> VectorStore: ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of a few texts a query composes while it runs (e.g. an edited caption)."""
        ...

    def caption_editor(self) -> CaptionEditor:
        """The caption editor learned from the store's captions."""
        ...

    def rerank(self, text: str, hits: list[Hit]) -> tuple[list[Hit], dict]:
        """``hits`` re-scored against ``text`` by the ITM head, best first, and what to report about it."""
        ...


__all__ = ["SearchContext"]
