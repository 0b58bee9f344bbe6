"""Request and response models of the HTTP API (documented at /docs).

Types are strict (``top_k: true`` is not a number), strings must be valid Unicode (no lone surrogates), and
filters are bounded in shape and size before any work is done: at most ``MAX_FILTER_FIELDS`` fields of at
most ``MAX_FILTER_VALUES`` values each.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    StrictStr,
    Tag,
    TypeAdapter,
    ValidationError,
)

MAX_FILTER_FIELDS = 16
MAX_FILTER_VALUES = 64
MAX_VALUE_LENGTH = 256
MAX_QUERY_LENGTH = 1000


def valid_unicode(text: str) -> str:
    """Strings that cannot be encoded (lone UTF-16 surrogates from a JSON ``\\ud800`` escape) are refused."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the text holds invalid Unicode (a lone surrogate)") from None
    return text


def json_integer(value: object) -> object:
    """A JSON number that is a whole number (12 or 12.0, as JSON Schema's "integer" allows); never a boolean
    or a string: strict, but true to the documented schema."""
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not a boolean")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Text = Annotated[StrictStr, AfterValidator(valid_unicode)]
JsonInt = Annotated[StrictInt, BeforeValidator(json_integer)]
# At least one character that is not whitespace as Python's str.strip() sees it (the server strips queries),
# spelled out: "\S" means something else in the ECMA regexes of JSON Schema (the ASCII separators \x1c-\x1f).
NOT_BLANK = r"[^\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
FieldName = Annotated[Text, Field(min_length=1, max_length=64)]
FilterValue = Annotated[Text, Field(max_length=MAX_VALUE_LENGTH)]
# One value or a list of values; the discriminator picks the branch by shape, so errors name "value" or "values".
FilterValues = Annotated[
    Annotated[FilterValue, Tag("value")]
    | Annotated[list[FilterValue], Field(min_length=1, max_length=MAX_FILTER_VALUES), Tag("values")],
    Discriminator(lambda v: "values" if isinstance(v, list) else "value"),
]
Filters = Annotated[dict[FieldName, FilterValues], Field(max_length=MAX_FILTER_FIELDS)]
FILTERS = TypeAdapter(Filters)
FILTERS_EXAMPLE = '{"gender": ["WOMEN"], "product_type": ["Dresses", "Skirts"]}'


def parse_form_filters(raw: str | None) -> dict[str, list[str] | str]:
    """The ``filters`` form field of the multipart endpoints: a JSON object of field -> value(s), validated as
    strictly as the JSON endpoints' ``filters``. Raises ValueError with a short message (never the input)."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        raise ValueError(f"filters must be a JSON object such as {FILTERS_EXAMPLE}") from None
    try:
        return FILTERS.validate_python(value)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])[:80]
        raise ValueError(f"filters{'.' + where if where else ''}: {first['msg']}") from None


def not_blank(text: str) -> str:
    """The server strips queries; one of nothing but whitespace is refused (``NOT_BLANK`` documents the same
    rule in the OpenAPI document, where a regex is the only way to say it)."""
    if not text.strip():
        raise ValueError("must not be blank")
    return text


def blank_checked(max_length: int) -> dict:
    """Field options for a text that must not be blank: checked by ``not_blank``, documented by the pattern."""
    return {"min_length": 1, "max_length": max_length, "json_schema_extra": {"pattern": NOT_BLANK}}


NonBlank = Annotated[Text, AfterValidator(not_blank)]
NegativeText = Annotated[NonBlank, Field(**blank_checked(200))]
ItemId = Annotated[Text, Field(min_length=1, max_length=1024)]


class Strict(BaseModel):
    model_config = ConfigDict(strict=True)


class TextSearchRequest(Strict):
    query: Annotated[NonBlank, Field(**blank_checked(MAX_QUERY_LENGTH), description="What to look for.")]
    top_k: JsonInt = Field(12, ge=1, le=200)
    filters: Filters = Field(default_factory=dict, description=f"e.g. {FILTERS_EXAMPLE}")
    against: Literal["image", "text"] = "image"
    rerank: JsonInt = Field(0, ge=0, le=100, description="Rescore the top N with the ITM head.")
    minus: Annotated[
        list[NegativeText], Field(max_length=8, description='Exclude what matches these texts, e.g. ["stripes"].')
    ] = []


class SearchHit(BaseModel):
    id: str
    score: float
    caption: str
    image_url: str
    attributes: dict[str, str]


class SearchResult(BaseModel):
    query: dict
    results: list[SearchHit]
    seconds: float
    reference_caption: str | None = None
    caption_estimated: bool | None = None
    composed_caption: str | None = None
    ignored_feedback: list[str] | None = None


class Health(BaseModel):
    status: str
    model: dict | None
    precision: dict | None
    store: str
    count: int
    engine: dict


class Item(BaseModel):
    id: str
    caption: str
    image_url: str
    attributes: dict[str, str]


class WriteAnswer(BaseModel):
    """A write, acknowledged: ``durable`` once the store flushed it, ``searchable`` once a query sees it."""

    id: str
    status: Literal["created", "replaced", "patched", "deleted"]
    durable: bool
    searchable: bool
    item: Item | None = None


class ErrorDetail(BaseModel):
    loc: list[str | int] = []
    msg: str
    type: str


class ErrorBody(BaseModel):
    detail: str | list[ErrorDetail]


def error_responses(*codes: int) -> dict:
    """OpenAPI entries for the 4xx answers a route really gives, all with the same body shape."""
    meaning = {
        400: "Invalid query or item: unknown filter or attribute field, unknown filter value, empty text",
        401: "Missing or wrong X-API-Key",
        403: "Writes are off (no --admin-key), the read key may not write, or the image path is not in --images-dir",
        404: "No such item (or image file)",
        408: "The request body arrived too slowly",
        409: "The store is read-only (an embeddings folder served in memory)",
        413: "Body, upload, image or batch too large",
        415: "Not an image PIL can read, or not the body's media type",
        422: "Malformed request: wrong types, out of range, invalid Unicode",
        503: "Busy (the queue is full or the request waited past its deadline: see Retry-After) or store unavailable",
    }
    return {code: {"model": ErrorBody, "description": meaning[code]} for code in codes}


__all__ = [
    "FILTERS",
    "ErrorBody",
    "Health",
    "Item",
    "SearchHit",
    "SearchResult",
    "TextSearchRequest",
    "WriteAnswer",
    "error_responses",
    "parse_form_filters",
]
