"""Errors a user can cause: each carries a one-line message naming the input and the fix."""

from __future__ import annotations


class FashionRetrievalError(Exception):
    """Base class: the CLI prints these as one line (no traceback); the API turns them into 4xx."""


class CheckpointError(FashionRetrievalError):
    """A checkpoint that cannot be read, or does not fit the model architecture."""


class ImageError(FashionRetrievalError):
    """An image that is missing, unreadable or unsafe to decode."""


class CatalogError(FashionRetrievalError):
    """A catalogue that is missing columns, has duplicate ids, or is empty."""


class ModelMismatchError(FashionRetrievalError):
    """Vectors made by one model queried or mixed with another."""


class StoreError(FashionRetrievalError):
    """A vector store that is missing, locked, or asked for unknown fields."""


class QueryError(FashionRetrievalError):
    """A search request that is empty or out of range."""


class ItemNotFoundError(QueryError):
    """A request names a catalogue item the store does not hold (the API answers 404)."""


class UnsupportedFeatureError(QueryError):
    """A feature the loaded model family lacks (e.g. --rerank without an image-text matching head)."""
