"""Catalogue writes on a Milvus collection: items checked against its fixed schema, then upserted, patched or
deleted, each acknowledged only once flushed and visible to a query.

The model is not here (store/ imports no model): a ``NewItem`` says what to encode through ``texts()`` and
``pixels()``, the two methods a search query has, so whoever owns the model (the serving engine, the CLI's
searcher) encodes items and queries alike; ``ItemWriter`` writes the vectors it is given.
"""

from __future__ import annotations

import logging
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fashion_retrieval.errors import ItemNotFoundError, QueryError

log = logging.getLogger(__name__)

MAX_ID_LENGTH = 256  # characters: at most 1,024 UTF-8 bytes, the pk field's max_length
MAX_CAPTION_LENGTH = 2000  # far beyond what a text tower reads (BLIP: 35 tokens): a bound, not a style rule
MAX_VALUE_LENGTH = 256  # as long as a filter value may be: every stored value stays filterable through the API


class ItemError(QueryError):
    """An item a collection cannot take as given (bad id, unknown field, ...): nothing is written."""


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in text)


def check_id(item_id: object) -> str:
    """Ids are opaque text, but Milvus Lite cannot look up one with a control character (``pk in ["a\\tb"]``
    finds nothing) and fails to upsert one with an apostrophe (it pastes the id into a delete expression)."""
    if not isinstance(item_id, str) or not item_id:
        raise ItemError("the item id must be a non-empty string")
    if len(item_id) > MAX_ID_LENGTH:
        raise ItemError(f"the item id is over {MAX_ID_LENGTH} characters")
    if _has_control(item_id) or "'" in item_id:
        raise ItemError("the item id may not hold control characters or an apostrophe (')")
    _valid_unicode(item_id, "the item id")
    return item_id


def check_caption(caption: object) -> str:
    if not isinstance(caption, str) or not caption.strip():  # strip(): the blanks of serve/schemas.py NOT_BLANK
        raise ItemError("the caption must be a non-blank string (it is encoded and searched)")
    if len(caption) > MAX_CAPTION_LENGTH:
        raise ItemError(f"the caption is over {MAX_CAPTION_LENGTH} characters")
    return _valid_unicode(caption, "the caption")


def check_attributes(attributes: object, fields: Sequence[str], *, complete: bool = True) -> dict[str, str]:
    """String values for known fields only. ``complete``: every field of the schema, absent ones empty (a new
    or replaced item); otherwise only the given ones (a patch). The schema is fixed, so a new field is refused."""
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, Mapping):
        raise ItemError('attributes must be a JSON object of field -> text, e.g. {"gender": "WOMEN"}')
    unknown = sorted(str(name)[:64] for name in attributes if name not in fields)
    if unknown:
        raise ItemError(
            f"unknown attribute field(s) {unknown[:10]}: this collection's fields are {', '.join(fields) or 'none'} "
            "(its schema is fixed: add the column to the catalogue and index it again to add a field)"
        )
    clean = dict.fromkeys(fields, "") if complete else {}
    for name, value in attributes.items():
        if not isinstance(value, str):
            raise ItemError(f"attribute {name!r}: the value must be a string")
        if len(value) > MAX_VALUE_LENGTH or _has_control(value):
            raise ItemError(f"attribute {name!r}: at most {MAX_VALUE_LENGTH} characters, no control characters")
        clean[name] = _valid_unicode(value, f"attribute {name!r}")
    return clean


def _valid_unicode(text: str, what: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ItemError(f"{what} holds invalid Unicode (a lone surrogate)") from None
    return text


@dataclass
class NewItem:
    """An item to add or replace: its fields, and (once decoded) its image's preprocessed pixels [3, H, W]."""

    id: str
    caption: str
    attributes: dict[str, str]
    path: str = ""
    image: np.ndarray | None = field(default=None, repr=False)
    encode_caption: bool = True  # the collection keeps caption vectors

    def texts(self) -> list[str]:
        return [self.caption] if self.encode_caption else []

    def pixels(self) -> list[np.ndarray]:
        return [] if self.image is None else [self.image]


@dataclass(frozen=True)
class WriteResult:
    """What a write did: ``durable`` once the store flushed it, ``searchable`` once a query sees it."""

    id: str
    status: str  # created | replaced | patched | deleted
    durable: bool
    searchable: bool

    def to_dict(self) -> dict:
        return {"id": self.id, "status": self.status, "durable": self.durable, "searchable": self.searchable}


def item_row(item: NewItem, image_vector: np.ndarray, text_vector: np.ndarray | None) -> dict:
    """A collection row: the pk, the vectors, caption, path and every attribute."""
    row = {
        "pk": item.id,
        "image_embedding": np.asarray(image_vector, dtype=np.float32).tolist(),
        "caption": item.caption,
        "path": item.path,
        **item.attributes,
    }
    if text_vector is not None:
        row["text_embedding"] = np.asarray(text_vector, dtype=np.float32).tolist()
    return row


class ItemWriter:
    """Writes items into a Milvus store, one write at a time in this process (a patch reads then writes its row),
    each made durable (flushed on a Lite file; a server persists it before it answers) and then checked with a
    strong-consistency query before it returns."""

    def __init__(self, store) -> None:
        self.store = store
        self.has_text = store.has_field("text")
        self._lock = threading.Lock()

    def _flush(self) -> None:
        if getattr(self.store, "flush_on_write", True):
            self.store.flush()

    def upsert(self, items: Sequence[NewItem], vectors: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[WriteResult]:
        """Add or replace ``items`` with their (text vectors, image vectors), as ``encode_queries`` returns them."""
        rows = {}
        for item, (texts, images) in zip(items, vectors, strict=True):
            if len(images) != 1:
                raise ItemError(f"item {item.id!r} has no image vector")
            rows[item.id] = item_row(item, images[0], texts[0] if self.has_text else None)  # the last one wins
        ids = list(rows)
        with self._lock:
            existing = self.store.existing_ids(ids)
            self.store.upsert(list(rows.values()))
            self._flush()
            visible = self.store.existing_ids(ids)
        log.debug("upserted %d item(s) into %s", len(ids), self.store.description)
        return [WriteResult(i, "replaced" if i in existing else "created", True, i in visible) for i in ids]

    def patch(self, item_id: str, attributes: dict[str, str]) -> WriteResult:
        """Change attributes only: the row is read back whole (vectors included) and written with the new values."""
        with self._lock:
            found = self.store.full_rows([item_id])
            if item_id not in found:
                raise ItemNotFoundError(f"no item {item_id[:80]!r}")
            row = {**found[item_id], **attributes}
            self.store.upsert([row])
            self._flush()
            after = self.store.full_rows([item_id], vectors=False).get(item_id, {})
        searchable = all(after.get(name) == value for name, value in attributes.items())
        return WriteResult(item_id, "patched", True, searchable)

    def delete(self, ids: Sequence[str]) -> list[WriteResult | None]:
        """Delete ``ids``; None for an id the store does not hold."""
        with self._lock:
            existing = self.store.existing_ids(list(ids))
            if existing:
                self.store.delete(sorted(existing))
                self._flush()
            remaining = self.store.existing_ids(sorted(existing)) if existing else set()
        return [WriteResult(i, "deleted", True, i not in remaining) if i in existing else None for i in ids]


__all__ = [
    "MAX_CAPTION_LENGTH",
    "MAX_ID_LENGTH",
    "MAX_VALUE_LENGTH",
    "ItemError",
    "ItemWriter",
    "NewItem",
    "WriteResult",
    "check_attributes",
    "check_caption",
    "check_id",
    "item_row",
]
