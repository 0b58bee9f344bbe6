"""The vector-store front: one protocol over Milvus (Lite file or server) and in-memory back ends,
and filters built from typed values (never user text pasted into an expression)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from fashion_retrieval.errors import QueryError

VectorField = Literal["image", "text"]
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")  # use fullmatch: "$" would accept a trailing newline
BASE_FIELDS = ("id", "caption", "path")


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    caption: str = ""
    path: str = ""
    attributes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"id": self.id, "score": self.score, "caption": self.caption, "path": self.path, **self.attributes}


Filters = Mapping[str, Sequence[str]]


def parse_filters(pairs: Sequence[str] | None) -> dict[str, list[str]]:
    """``["gender=WOMEN", "product_type=Denim,Pants"]`` -> {"gender": ["WOMEN"], "product_type": ["Denim", "Pants"]}."""
    filters: dict[str, list[str]] = {}
    for pair in pairs or ():
        name, sep, values = pair.partition("=")
        if not sep or not name.strip():
            raise QueryError(f"filter {pair!r}: write it as field=value or field=value1,value2")
        filters.setdefault(name.strip(), []).extend(v for v in values.split(",") if v != "")
    return filters


def validate_filters(filters: Filters | None, allowed: Sequence[str]) -> dict[str, list[str]]:
    """Known fields only, values as strings; an unknown field is a clear error listing the known ones."""
    clean: dict[str, list[str]] = {}
    for name, values in (filters or {}).items():
        if name not in allowed:
            raise QueryError(f"unknown filter field {name!r}; filterable fields: {', '.join(sorted(allowed))}")
        if isinstance(values, str):
            values = [values]
        values = [str(v) for v in values]
        if not values:
            raise QueryError(f"filter {name!r} has no values")
        clean[name] = values
    return clean


def milvus_literal(value: str) -> str:
    """A Milvus string literal: JSON escaping (quotes, backslashes, control characters) is what its parser reads."""
    return json.dumps(str(value), ensure_ascii=False)


def milvus_filter(filters: Mapping[str, Sequence[str]], column_of: Mapping[str, str]) -> str:
    """Filters (already validated) -> a boolean expression with every value escaped as a literal."""
    clauses = []
    for name, values in filters.items():
        column = column_of[name]
        if not FIELD_NAME.fullmatch(column):  # field names come from the schema, but check anyway
            raise QueryError(f"invalid field name {column!r}")
        clauses.append(f"{column} in [{', '.join(milvus_literal(v) for v in values)}]")
    return " and ".join(clauses)


def query_matrix(store: VectorStore, queries: np.ndarray, vector_field: VectorField) -> np.ndarray:
    """Queries as a float32 [Q, D] matrix, after checking the store has that vector field."""
    from fashion_retrieval.errors import StoreError

    if not store.has_field(vector_field):
        raise StoreError(f"{store.description} has no {vector_field} embeddings")
    matrix = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if matrix.ndim != 2 or matrix.shape[1] != store.dim:
        raise StoreError(
            f"query vectors of shape {matrix.shape}: {store.description} holds {store.dim}-d vectors "
            "(vectors of another model? query with the model the store was built with)"
        )
    return matrix


class VectorStore(Protocol):
    """What search needs from a store; Milvus and in-memory implement it with the same results."""

    description: str
    max_concurrency: int  # how many searches callers should run at once (the store's engine decides)
    writable: bool  # items can be written (store/items.py): Milvus yes, an embeddings folder in memory no
    dim: int  # the size of its vectors (the model's)

    def count(self) -> int: ...

    def identity(self) -> dict | None: ...

    def precision(self) -> dict | None: ...

    def attributes(self) -> list[str]: ...

    def has_field(self, vector_field: VectorField) -> bool: ...

    def search(
        self, queries: np.ndarray, vector_field: VectorField, top_k: int, filters: Filters | None = None
    ) -> list[list[Hit]]: ...

    def vectors(self, ids: Sequence[str], vector_field: VectorField) -> np.ndarray: ...

    def get(self, ids: Sequence[str]) -> list[Hit]: ...

    def some_ids(self, n: int) -> list[str]: ...

    def captions(self, limit: int) -> list[str]: ...

    def facets(self, limit: int = 200, *, fresh: bool = False) -> dict[str, list[str]]: ...

    def present_values(self, name: str, values: Sequence[str]) -> set[str]: ...

    def close(self) -> None: ...
