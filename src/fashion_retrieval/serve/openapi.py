"""The OpenAPI document, made exact for the catalogue being served.

FastAPI documents ``filters`` as "an object" (JSON endpoints) and "a string" (the multipart form field). The
server knows better once its store is open: which fields can be filtered and, for faceted fields, which
values exist. This module writes that into the document, so /docs shows the real choices and a client
generated from it (or a fuzzer such as schemathesis) sends only what the server accepts, or knowingly not.
The multipart ``filters`` part is declared as that same object (sent as JSON: OpenAPI's default for objects).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from fashion_retrieval.serve.schemas import MAX_FILTER_FIELDS, MAX_FILTER_VALUES, MAX_VALUE_LENGTH

FORM_ROUTES = ("/api/search/image", "/api/search/hybrid", "/api/search/compose")
IMAGE_TYPES = "image/*"  # sniffed from the bytes: JPEG, PNG, WebP, GIF, BMP, TIFF ... whatever PIL reads


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
            body["properties"]["image"] = {
                "type": "string",
                "contentMediaType": IMAGE_TYPES,
                "minLength": 1,
                "title": "Image",
                "description": "The image's bytes (JPEG, PNG, WebP ...; decided from the bytes, not the name).",
            }
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


__all__ = ["catalogue_openapi", "filters_schema", "use_catalogue_openapi"]
