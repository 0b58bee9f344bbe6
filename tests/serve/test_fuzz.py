"""schemathesis over the OpenAPI document, against a real server on a Milvus Lite file, with real image bytes.

Every check is on, for schema-valid and schema-invalid requests. The document is exact for the catalogue
(its filter fields and values), so schema-valid requests must be accepted, schema-invalid ones refused with a
4xx, and nothing may ever answer 5xx. Two things a schema cannot say are supplied here: the upload fields get
real image bytes (JPEG, PNG, WebP, a large JPEG) through a format strategy, and for an upload that is some
other string, 415 (not an image) is an accepted answer to a schema-valid request. One check is left out where
the wire cannot carry what it tests: a multipart body sends every value as text, so an item id list turned
from strings into numbers or nulls ("-339", "null") arrives as valid ids; for multipart operations the
negative run keeps every other check (no 5xx, documented status codes and bodies) but not "schema-violating
request accepted".
"""

from __future__ import annotations

import io

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from PIL import Image
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection

from tests.helpers import ServedIndex

pytestmark = pytest.mark.slow
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "415", "429"]  # no 5xx: a server error fails
SEARCHES = ("/api/search/text", "/api/search/image", "/api/search/hybrid")


def _image(fmt: str, size=(40, 40), color=(10, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


schemathesis.openapi.format(
    "image-bytes",
    st.sampled_from([_image("JPEG"), _image("PNG"), _image("WEBP"), _image("JPEG", (900, 1200), (200, 30, 30))]),
)


@pytest.fixture(scope="module")
def served(lite_file_db):
    server = ServedIndex("--db", str(lite_file_db))
    yield server
    server.close()
    assert "Traceback" not in server.output, server.output[-3000:]


def _with_image_bytes(document: dict) -> dict:
    """Mark the upload fields with a format whose strategy gives real image bytes."""
    for schema in document["components"]["schemas"].values():
        image = schema.get("properties", {}).get("image")
        if image and image.get("contentMediaType") == "image/*":
            image["format"] = "image-bytes"
    return document


def _run(operation, mode: GenerationMode, base_url: str, failures: list[str], statuses: dict) -> None:
    """Hypothesis over one operation in one mode; a failing case is recorded (with its reproduction) and the
    search goes on with the next operation."""

    multipart = "multipart/form-data" in (operation.definition.raw.get("requestBody", {}).get("content", {}))
    excluded = [negative_data_rejection] if multipart and mode is GenerationMode.NEGATIVE else []

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case) -> None:
        response = case.call_and_validate(base_url=base_url, excluded_checks=excluded)
        statuses.setdefault((case.path, mode.value), set()).add(response.status_code)

    try:
        check()
    except Unsatisfiable:  # no input of this operation can break its schema (e.g. GET /api/health): nothing to try
        assert mode is GenerationMode.NEGATIVE, operation.path
    except Exception as exc:  # noqa: BLE001 - hypothesis re-raises the shrunk failing example: keep it
        failures.append(f"{mode.value} {operation.method.upper()} {operation.path}: {str(exc)[:1500]}")


def test_every_operation_holds_up(served):
    document = _with_image_bytes(httpx.get(f"{served.url}/openapi.json").json())
    config = SchemathesisConfig.from_dict({"checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}}})
    api = schemathesis.openapi.from_dict(document, config=config)
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.path for op in operations} >= set(SEARCHES)
    failures: list[str] = []
    statuses: dict[tuple[str, str], set[int]] = {}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _run(operation, mode, served.url, failures, statuses)
    assert not failures, "\n\n".join(failures[:3])
    # The run reached the searches (real images decoded and searched) and bad requests were refused with a 4xx.
    # A JSON body keeps its types, so every schema-invalid one must be refused; a multipart body does not (an
    # empty list or an unknown field sends nothing), so there schemathesis' own checks decide.
    for path in SEARCHES:
        assert 200 in statuses.get((path, "positive"), ()), (path, statuses)
        assert any(400 <= s < 500 for s in statuses.get((path, "negative"), ())), (path, statuses)
    assert all(400 <= s < 500 for s in statuses[("/api/search/text", "negative")]), statuses
