"""Catalogue writes without a server (``fashion-retrieval items``): operations in the batch format the API takes
(one JSON object a line: ``{"op": "upsert" | "patch" | "delete", "id", "caption", "attributes", "image_path" |
"image_base64"}``), applied to a Milvus store in chunks, each flushed and checked before its results are given.

The model is passed in (``decode`` an image, ``encode`` items), so store/ loads none; ``chunks`` is shared with the
server's batch route, so both group lines the same way.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fashion_retrieval.errors import FashionRetrievalError, ItemNotFoundError
from fashion_retrieval.store.items import ItemError, ItemWriter, NewItem, check_attributes, check_caption, check_id

OPERATIONS = ("upsert", "patch", "delete")
LINE_FIELDS = frozenset({"op", "id", "caption", "attributes", "image_base64", "image_path"})


@dataclass
class Operation:
    """One checked line: ready to apply, or its error."""

    number: int
    op: str = "upsert"
    id: str | None = None
    item: NewItem | None = None
    attributes: dict[str, str] | None = None
    image: str | bytes | None = None  # a path, or the image's bytes
    error: str | None = None


def chunks(lines: Sequence, size: int) -> Iterator[list]:
    """Runs of consecutive lines of one operation with distinct ids, at most ``size`` (a failed line and a patch go
    alone): each run is one write. Lines are anything with ``op``, ``id`` and ``error``."""
    group: list = []
    for line in lines:
        joins = (
            group
            and line.error is None
            and group[0].op == line.op != "patch"
            and len(group) < size
            and line.id not in {member.id for member in group}
        )
        if group and not joins:
            yield group
            group = []
        group.append(line)
        if line.error is not None:
            yield group
            group = []
    if group:
        yield group


def parse_operation(number: int, text: str, fields: Sequence[str], encode_caption: bool, base: Path) -> Operation:
    """A line of the batch format, checked against the collection's fields; ``image_path`` is relative to ``base``."""
    operation = Operation(number)
    try:
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ItemError("a line must be a JSON object")
        unknown = sorted(str(name)[:40] for name in value if name not in LINE_FIELDS)
        if unknown:
            raise ItemError(f"unknown field(s) {unknown[:5]}")
        operation.op = value.get("op", "upsert")
        if operation.op not in OPERATIONS:
            raise ItemError('op must be "upsert" (the default), "patch" or "delete"')
        operation.id = check_id(value.get("id"))
        if operation.op == "patch":
            operation.attributes = check_attributes(value.get("attributes"), fields, complete=False)
        elif operation.op == "upsert":
            attributes = check_attributes(value.get("attributes"), fields)
            operation.item = NewItem(operation.id, check_caption(value.get("caption")), attributes)
            operation.item.encode_caption = encode_caption
            operation.image = _image_source(value, base)
    except (json.JSONDecodeError, RecursionError):
        operation.error = "not valid JSON"
    except FashionRetrievalError as exc:
        operation.error = str(exc)
    return operation


def _image_source(value: dict, base: Path) -> str | bytes:
    encoded, path = value.get("image_base64"), value.get("image_path")
    if (encoded is None) == (path is None) or not isinstance(encoded or path, str):
        raise ItemError("give the image as image_path or image_base64 (one string)")
    if path is not None:
        return str((base / path).expanduser())
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ItemError("image_base64 is not valid base64") from None


def apply_operations(
    writer: ItemWriter,
    operations: Iterable[Operation],
    decode: Callable[[str | bytes], object],
    encode: Callable[[list[NewItem]], list],
    chunk: int = 64,
) -> Iterator[dict]:
    """Apply ``operations`` chunk by chunk: a result per line (``status``: created, replaced, patched, deleted or
    failed, with ``error``), given once its chunk is durable; then ``{"summary": ...}``."""
    started, counts = time.perf_counter(), Counter()
    operations = list(operations)
    for group in chunks(operations, chunk):
        for result in _apply_group(writer, group, decode, encode):
            counts[result["status"]] += 1
            yield result
    yield {"summary": {"lines": len(operations), **counts, "seconds": round(time.perf_counter() - started, 3)}}


def _failed(operation: Operation, message: str) -> dict:
    return {"line": operation.number, "id": operation.id, "status": "failed", "error": message}


def _apply_group(writer: ItemWriter, group: list[Operation], decode, encode) -> list[dict]:
    first = group[0]
    if first.error is not None:
        return [_failed(first, first.error)]
    try:
        if first.op == "patch":
            results = [writer.patch(first.id, first.attributes)]
        elif first.op == "delete":
            results = writer.delete([operation.id for operation in group])
        else:
            return _upsert(writer, group, decode, encode)
    except ItemNotFoundError as exc:
        return [_failed(first, str(exc))]
    return [
        _failed(operation, "no such item") if result is None else {"line": operation.number, **result.to_dict()}
        for operation, result in zip(group, results, strict=True)
    ]


def _upsert(writer: ItemWriter, group: list[Operation], decode, encode) -> list[dict]:
    answers: dict[int, dict] = {}
    ready = []
    for operation in group:
        try:
            operation.item.image = decode(operation.image)
            ready.append(operation)
        except FashionRetrievalError as exc:  # a bad image fails its line only
            answers[operation.number] = _failed(operation, str(exc))
    if ready:
        items = [operation.item for operation in ready]
        for operation, result in zip(ready, writer.upsert(items, encode(items)), strict=True):
            answers[operation.number] = {"line": operation.number, **result.to_dict()}
    return [answers[operation.number] for operation in group]


__all__ = ["LINE_FIELDS", "OPERATIONS", "Operation", "apply_operations", "chunks", "parse_operation"]
