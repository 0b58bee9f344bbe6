"""Item writes read from requests: a multipart upload or JSON naming a file under --images-dir (POST, PUT), a JSON
patch, and NDJSON lines (batch). Shapes are checked here (422, or 415 for a media type the route does not take);
values by ``store/items.py`` (400, naming the problem). A line of a batch that fails becomes that line's error.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile  # what request.form() gives (FastAPI's is a subclass)

from fashion_retrieval.errors import FashionRetrievalError
from fashion_retrieval.serve.errors import status_of
from fashion_retrieval.serve.service import raw_part_bytes
from fashion_retrieval.serve.writes import CatalogueWriter
from fashion_retrieval.store.importer import LINE_FIELDS
from fashion_retrieval.store.items import NewItem, check_id

JSON_FIELDS = frozenset({"id", "caption", "image_path", "attributes"})
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines")


def _json_object(raw: bytes | str, what: str = "the body") -> dict:
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise HTTPException(422, f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise HTTPException(422, f"{what} must be a JSON object")
    return value


def _same_id(given: object, item_id: str) -> None:
    if given is not None and given != item_id:
        raise HTTPException(422, "the id in the body differs from the id in the path")


async def read_item(request: Request, writer: CatalogueWriter, item_id: str | None) -> NewItem:
    """The item of a POST (``item_id`` None: the body names it) or PUT, with its image decoded."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        return await _from_upload(request, writer, item_id)
    if content_type.startswith("application/json"):
        return await _from_json(request, writer, item_id)
    raise HTTPException(415, "send the item as multipart/form-data (with its image) or JSON (with an image_path)")


async def _text_part(value: UploadFile | str | None, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    try:
        return (await value.read()).decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(422, f"the {name} part is not UTF-8 text") from None


async def _from_upload(request: Request, writer: CatalogueWriter, item_id: str | None) -> NewItem:
    form = await request.form(max_files=4, max_fields=16, max_part_size=writer.config.max_upload_bytes)
    parts: dict[str, UploadFile | str] = {}
    for name, value in form.multi_items():  # other parts are ignored, as in the search forms
        if name in ("id", "caption", "attributes", "image"):
            if name in parts:
                raise HTTPException(422, f"the {name} part is repeated")
            parts[name] = value
    given_id = await _text_part(parts.get("id"), "id")
    if item_id is None:
        if given_id is None:
            raise HTTPException(422, "the id part is required")
        item_id = given_id
    _same_id(given_id, item_id)
    caption = await _text_part(parts.get("caption"), "caption")
    if caption is None or "image" not in parts:
        raise HTTPException(422, "the caption and image parts are required")
    raw_attributes = await _text_part(parts.get("attributes"), "attributes")
    attributes = _json_object(raw_attributes, "the attributes part") if raw_attributes is not None else {}
    item = writer.new_item(item_id, caption, attributes)
    image = parts["image"]
    await writer.add_upload(item, await image.read() if isinstance(image, UploadFile) else raw_part_bytes(image))
    return item


async def _from_json(request: Request, writer: CatalogueWriter, item_id: str | None) -> NewItem:
    value = _json_object(await request.body())
    allowed = JSON_FIELDS if item_id is None else JSON_FIELDS - {"id"}
    unknown = sorted(str(name)[:40] for name in value if name not in allowed)
    if unknown:
        raise HTTPException(422, f"unknown field(s) {unknown[:5]}; an item is {sorted(allowed)}")
    if item_id is None and "id" not in value:
        raise HTTPException(422, "the id field is required")
    if "caption" not in value or not isinstance(value.get("image_path"), str):
        raise HTTPException(422, "the caption and image_path fields are required (image_path: a string)")
    item = writer.new_item(value["id"] if item_id is None else item_id, value["caption"], value.get("attributes"))
    await writer.add_file(item, value["image_path"])
    return item


async def read_patch(request: Request, writer: CatalogueWriter) -> dict[str, str]:
    if not request.headers.get("content-type", "").lower().startswith("application/json"):
        raise HTTPException(415, 'a patch is JSON: {"attributes": {"field": "value"}}')
    value = _json_object(await request.body())
    if set(value) != {"attributes"}:
        raise HTTPException(422, 'a patch is {"attributes": {...}} and nothing else')
    return writer.checked_patch(value["attributes"])


# -- batches ------------------------------------------------------------------------------------------------
@dataclass
class Line:
    """One line of a batch, checked: an operation ready to run, or its error (status, message)."""

    number: int
    op: str = "upsert"
    id: str | None = None
    item: NewItem | None = None
    attributes: dict[str, str] | None = None
    image: bytes | None = None
    image_path: str | None = None
    error: tuple[int, str] | None = None

    def failed(self, status: int, message: str) -> dict:
        self.error = (status, message)
        return self.result()

    def result(self, **fields) -> dict:
        if self.error is not None:
            return {"line": self.number, "id": self.id, "status": self.error[0], "error": self.error[1]}
        return {"line": self.number, "id": self.id, **fields}


def line_error(exc: Exception) -> tuple[int, str]:
    """An error as a line's status and message, as the API would answer it alone; anything else is the store's."""
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail)
    if isinstance(exc, FashionRetrievalError):
        return status_of(exc), str(exc).replace("uploaded image: ", "")
    first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return 503, f"the store could not take the write: {first}"


async def read_batch(request: Request, writer: CatalogueWriter) -> list[Line]:
    """The batch's lines, each checked; the batch as a whole is refused (and nothing written) when it is empty, too
    long, or not NDJSON."""
    if not request.headers.get("content-type", "").lower().startswith(NDJSON_TYPES):
        raise HTTPException(415, "a batch is NDJSON: Content-Type application/x-ndjson, one JSON object a line")
    raw = [line for line in (await request.body()).split(b"\n") if line.strip()]
    if not raw:
        raise HTTPException(422, "the batch is empty")
    if len(raw) > writer.config.max_batch_lines:
        raise HTTPException(
            413, f"{len(raw)} lines: a batch holds at most {writer.config.max_batch_lines}; send it in parts"
        )
    return [parse_line(number, text, writer) for number, text in enumerate(raw, 1)]


def parse_line(number: int, raw: bytes, writer: CatalogueWriter) -> Line:
    line = Line(number)
    try:
        value = _json_object(raw, f"line {number}")
        line.op = value.get("op", "upsert")
        line.id = value.get("id") if isinstance(value.get("id"), str) else None
        _check_line(line, value, writer)
    except (HTTPException, FashionRetrievalError) as exc:
        line.error = line_error(exc)
    return line


def _check_line(line: Line, value: dict, writer: CatalogueWriter) -> None:
    unknown = sorted(str(name)[:40] for name in value if name not in LINE_FIELDS)
    if unknown:
        raise HTTPException(422, f"unknown field(s) {unknown[:5]}")
    if line.op == "delete":
        line.id = check_id(value.get("id"))
    elif line.op == "patch":
        line.id = check_id(value.get("id"))
        line.attributes = writer.checked_patch(value.get("attributes"))
    elif line.op == "upsert":
        line.item = writer.new_item(value.get("id"), value.get("caption"), value.get("attributes"))
        line.id = line.item.id
        _line_image(line, value, writer)
    else:
        raise HTTPException(422, 'op must be "upsert" (the default), "patch" or "delete"')


def _line_image(line: Line, value: dict, writer: CatalogueWriter) -> None:
    encoded, path = value.get("image_base64"), value.get("image_path")
    if (encoded is None) == (path is None):
        raise HTTPException(422, "give the image as image_base64 or image_path (one of them)")
    if path is not None:
        if not isinstance(path, str):
            raise HTTPException(422, "image_path must be a string")
        line.image_path = str(writer.image_file(path))
        return
    if not isinstance(encoded, str) or len(encoded) > writer.config.max_upload_bytes * 4 // 3 + 4:
        raise HTTPException(413 if isinstance(encoded, str) else 422, "image_base64: a base64 string within the limit")
    try:
        line.image = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(422, "image_base64 is not valid base64") from None


__all__ = ["Line", "line_error", "parse_line", "read_batch", "read_item", "read_patch"]
