"""The OpenAPI document, made exact for the catalogue being served.

FastAPI documents ``filters`` as "an object" (JSON endpoints) and "a string" (the multipart form field). The
server knows better once its store is open: which fields can be filtered and, for faceted fields, which
values exist. This module writes that into the document, so /docs shows the real choices and a client
generated from it (or a fuzzer such as schemathesis) sends only what the server accepts, or knowingly not.
The multipart ``filters`` part is declared as that same object (sent as JSON: OpenAPI's default for objects).
The write routes' bodies (an upload or a path on the server, a patch, NDJSON lines) are declared here too, with
the collection's attribute fields once the store is open.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from fashion_retrieval.serve.schemas import MAX_FILTER_FIELDS, MAX_FILTER_VALUES, MAX_VALUE_LENGTH, NOT_BLANK
from fashion_retrieval.store.items import MAX_CAPTION_LENGTH, MAX_ID_LENGTH

FORM_ROUTES = ("/api/search/image", "/api/search/hybrid", "/api/search/compose")
IMAGE_TYPES = "image/*"  # sniffed from the bytes: JPEG, PNG, WebP, GIF, BMP, TIFF ... whatever PIL reads
IMAGE_PROPERTY = {
    "type": "string",
    "contentMediaType": IMAGE_TYPES,
    "minLength": 1,
    "title": "Image",
    "description": "The image's bytes (JPEG, PNG, WebP ...; decided from the bytes, not the name).",
}
# What store/items.py checks, said in JSON Schema (no control characters, U+0000-U+001F and U+007F-U+009F; no
# apostrophe in an id): a client or fuzzer that follows the document sends only what the server takes.
ID_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f']+$"
VALUE_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
ITEM_ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": ID_PATTERN, "title": "Id"}
CAPTION = {"type": "string", "minLength": 1, "maxLength": MAX_CAPTION_LENGTH, "pattern": NOT_BLANK, "title": "Caption"}
IMAGE_PATH = {
    "type": "string",
    "minLength": 1,
    "maxLength": 4096,
    "title": "Image path",
    "description": "A file inside the server's --images-dir (the server fetches nothing: no URLs).",
}


def filters_schema(attributes: list[str], facets: dict[str, list[str]]) -> dict:
    """JSON Schema of a filters object: one property per filterable field, enums for faceted fields."""

    def field(values: list[str] | None) -> dict:
        one = {"type": "string", "maxLength": MAX_VALUE_LENGTH}
        if values:
            one = {"type": "string", "enum": list(values)}
        many = {"type": "array", "items": one, "minItems": 1, "maxItems": MAX_FILTER_VALUES}
        return {"oneOf": [one, many]}

    names = [*attributes, "id"]
    return {
        "type": "object",
        "title": "Filters",
        "description": "Field -> value or list of values; a faceted field takes only its listed values.",
        "properties": {name: field(facets.get(name)) for name in names},
        "additionalProperties": False,
        "maxProperties": min(MAX_FILTER_FIELDS, len(names)),
    }


def attributes_schema(attributes: list[str] | None) -> dict:
    """An item's attributes: the collection's fields (fixed: no new field), each a short text without control
    characters. New values are welcome (they join the facets), so no enums here."""
    value = {"type": "string", "maxLength": MAX_VALUE_LENGTH, "pattern": VALUE_PATTERN}
    schema = {"type": "object", "title": "Attributes", "description": 'Field -> value, e.g. {"gender": "WOMEN"}.'}
    if attributes is None:  # before start-up: any field (the server refuses unknown ones)
        return {**schema, "additionalProperties": value}
    return {**schema, "properties": dict.fromkeys(attributes, value), "additionalProperties": False}


def item_request_body(attributes: list[str] | None = None, *, with_id: bool = True) -> dict:
    """POST /api/items (``with_id``) and PUT /api/items/{id}: an upload (multipart) or a path on the server (JSON)."""
    ids = {"id": ITEM_ID} if with_id else {}
    required = ["id"] if with_id else []
    fields = {**ids, "caption": CAPTION, "attributes": attributes_schema(attributes)}
    upload = {
        "type": "object",
        "title": "ItemUpload",
        "properties": {**fields, "image": IMAGE_PROPERTY},
        "required": [*required, "caption", "image"],
    }
    on_server = {
        "type": "object",
        "title": "ItemOnServer",
        "properties": {**fields, "image_path": IMAGE_PATH},
        "required": [*required, "caption", "image_path"],
        "additionalProperties": False,
    }
    content = {"multipart/form-data": {"schema": upload}, "application/json": {"schema": on_server}}
    return {"required": True, "content": content}


def patch_request_body(attributes: list[str] | None = None) -> dict:
    """PATCH /api/items/{id}: new attribute values (no re-encoding)."""
    schema = {
        "type": "object",
        "title": "ItemPatch",
        "properties": {"attributes": {**attributes_schema(attributes), "minProperties": 1}},
        "required": ["attributes"],
        "additionalProperties": False,
    }
    return {"required": True, "content": {"application/json": {"schema": schema}}}


BATCH_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/x-ndjson": {
            "schema": {
                "type": "string",
                "title": "ItemLines",
                "description": 'One JSON object a line: {"op": "upsert", "id", "caption", "attributes", "image_base64" '
                'or "image_path"}, {"op": "patch", "id", "attributes"} or {"op": "delete", "id"}.',
            }
        }
    },
}


def _item_routes(document: dict, attributes: list[str]) -> None:
    """The write routes' bodies with the collection's attribute fields."""
    paths = document.get("paths", {})
    if "post" in paths.get("/api/items", {}):
        paths["/api/items"]["post"]["requestBody"] = item_request_body(attributes)
    by_id = paths.get("/api/items/{item_id}", {})
    if "put" in by_id:
        by_id["put"]["requestBody"] = item_request_body(attributes, with_id=False)
    if "patch" in by_id:
        by_id["patch"]["requestBody"] = patch_request_body(attributes)
    for method in ("put", "patch", "delete"):
        if method in by_id:
            by_id[method]["parameters"][0]["schema"] = ITEM_ID


def catalogue_openapi(app: FastAPI, engine_of) -> dict:
    """The app's OpenAPI document with the served catalogue's filters (and an item id as example)."""
    engine = engine_of()
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    if engine is None:  # before start-up: the generic document
        return document
    schema = filters_schema(engine.attributes, engine.facets)
    components = document.get("components", {}).get("schemas", {})
    if "TextSearchRequest" in components:
        components["TextSearchRequest"]["properties"]["filters"] = {**schema, "default": {}}
    for path in FORM_ROUTES:
        operation = document.get("paths", {}).get(path, {}).get("post")
        if not operation:
            continue
        content = operation["requestBody"]["content"]["multipart/form-data"]
        body = components[content["schema"]["$ref"].rsplit("/", 1)[1]]
        body["properties"]["filters"] = schema
        for prop in body["properties"].values():  # a multipart field is absent or a value: it cannot be null
            if "anyOf" in prop:
                kept = [branch for branch in prop["anyOf"] if branch.get("type") != "null"]
                if len(kept) == 1:
                    prop.update(kept[0])
                    del prop["anyOf"]
                else:
                    prop["anyOf"] = kept
        if "image" in body["properties"]:  # one part holding an image (a file or not), not any bytes
            body["properties"]["image"] = dict(IMAGE_PROPERTY)
        # no "encoding" entry needed: OpenAPI's default for an object property of a multipart body is JSON
        if path == "/api/search/compose":  # something to refine: a reference, a modifier or liked items
            body["anyOf"] = [{"required": [name]} for name in ("modifier", "item", "image")]
            # an empty list sends nothing in a multipart body: "like" counts only with an id in it
            body["anyOf"].append({"required": ["like"], "properties": {"like": {"minItems": 1}}})
            body["not"] = {"required": ["item", "image"]}  # one reference at most
            operation["requestBody"]["required"] = True
    item = document.get("paths", {}).get("/api/items/{item_id}", {}).get("get")
    if item and engine.example_id is not None:
        item["parameters"][0]["schema"]["examples"] = [engine.example_id]
    _item_routes(document, engine.attributes)
    return document


def use_catalogue_openapi(app: FastAPI) -> None:
    """Serve ``catalogue_openapi`` as the app's document, rebuilt when the catalogue's version changes."""

    def openapi() -> dict:
        service = getattr(app.state, "service", None)  # set in the lifespan: none before start-up
        version = service.engine.version if service else -1
        if app.openapi_schema is None or app.state.openapi_version != version:
            app.openapi_schema = catalogue_openapi(app, lambda: service.engine if service else None)
            app.state.openapi_version = version
        return app.openapi_schema

    app.openapi = openapi


__all__ = [
    "BATCH_REQUEST_BODY",
    "attributes_schema",
    "catalogue_openapi",
    "filters_schema",
    "item_request_body",
    "patch_request_body",
    "use_catalogue_openapi",
]
