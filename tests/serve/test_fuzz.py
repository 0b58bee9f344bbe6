"""schemathesis over the OpenAPI document, against a real server on a Milvus Lite file, with real image bytes,
the write routes included (with the admin key; item uploads carry real images, batch imports real NDJSON lines).

Every check is on, for schema-valid and schema-invalid requests. The document is exact for the catalogue
(its filter fields and values), so schema-valid requests must be accepted, schema-invalid ones refused with a
4xx, and nothing may ever answer 5xx. Two things a schema cannot say are supplied here: the upload fields get
real image bytes (JPEG, PNG, WebP, a large JPEG) through a format strategy, and for an upload that is some
other string, 415 (not an image) is an accepted answer to a schema-valid request. One check is left out where
the wire cannot carry what it tests: a multipart body sends every value as text, so an item id list turned
from strings into numbers or nulls ("-339", "null") arrives as valid ids; for multipart operations the
negative run keeps every other check (no 5xx, documented status codes and bodies) but not "schema-violating
request accepted". The same holds for a batch import, whose NDJSON body no JSON Schema describes (its lines are
checked one by one, and a bad line is that line's error in a 200 answer). The searches are fuzzed before the writes
(the document lists reads first), so the filter values the writes add never meet the read fuzzing.
"""

from __future__ import annotations

import base64
import io
import json
import shutil

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

from fashion_retrieval.embeddings import load_embeddings
from tests.helpers import ServedIndex

pytestmark = pytest.mark.slow
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "415", "429"]  # no 5xx: a server error fails
SEARCHES = ("/api/search/text", "/api/search/image", "/api/search/hybrid")
ADMIN = "fuzz-admin-key"
WRITES = (("POST", "/api/items"), ("PUT", "/api/items/{item_id}"), ("POST", "/api/items:batch"))


def _image(fmt: str, size=(40, 40), color=(10, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


IMAGES = [_image("JPEG"), _image("PNG"), _image("WEBP"), _image("JPEG", (900, 1200), (200, 30, 30))]
schemathesis.openapi.format("image-bytes", st.sampled_from(IMAGES))


def _item_line(item_id: str, caption: str, image: int, delete: bool) -> str:
    if delete:
        return json.dumps({"op": "delete", "id": item_id})
    return json.dumps({"id": item_id, "caption": caption, "image_base64": base64.b64encode(IMAGES[image]).decode()})


# Batch imports: real NDJSON lines (ids, captions and images), upserts and deletes
ITEM_LINE = st.builds(
    _item_line,
    st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1).filter(str.strip),
    st.integers(0, len(IMAGES) - 1),
    st.booleans(),
)
schemathesis.openapi.format("item-lines", st.lists(ITEM_LINE, min_size=1, max_size=4).map("\n".join))


@schemathesis.serializer("application/x-ndjson")
def _ndjson(_context, value) -> bytes:
    return value.encode() if isinstance(value, str) else json.dumps(value).encode()


@pytest.fixture(scope="module")
def served(lite_file_db, embeddings_dir, tmp_path_factory):
    images = tmp_path_factory.mktemp("fuzz_images")  # image_path values are read from here only
    for path in load_embeddings(embeddings_dir).metadata["path"][:2]:
        shutil.copy(path, images)
    server = ServedIndex("--db", str(lite_file_db), "--admin-key", ADMIN, "--images-dir", str(images))
    yield server
    server.close()
    assert "Traceback" not in server.output, server.output[-3000:]


def _with_image_bytes(node):
    """Mark the upload fields (in components and inline request bodies) with a format whose strategy gives real
    image bytes, and the batch body with one that gives real item lines."""
    if isinstance(node, dict):
        if node.get("contentMediaType") == "image/*":
            node["format"] = "image-bytes"
        if node.get("title") == "ItemLines":
            node["format"] = "item-lines"
        for value in node.values():
            _with_image_bytes(value)
    elif isinstance(node, list):
        for value in node:
            _with_image_bytes(value)
    return node


def _run(operation, mode: GenerationMode, base_url: str, failures: list[str], statuses: dict) -> None:
    """Hypothesis over one operation in one mode; a failing case is recorded (with its reproduction) and the
    search goes on with the next operation."""

    content = operation.definition.raw.get("requestBody", {}).get("content", {})
    untyped = "multipart/form-data" in content or "application/x-ndjson" in content  # see the module docstring
    excluded = [negative_data_rejection] if untyped and mode is GenerationMode.NEGATIVE else []

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case) -> None:
        headers = {"X-API-Key": ADMIN}  # reads take it too; writes need it
        response = case.call_and_validate(base_url=base_url, headers=headers, excluded_checks=excluded)
        statuses.setdefault((case.method.upper(), case.path, mode.value), set()).add(response.status_code)

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
        assert 200 in statuses.get(("POST", path, "positive"), ()), (path, statuses)
        assert any(400 <= s < 500 for s in statuses.get(("POST", path, "negative"), ())), (path, statuses)
    assert all(400 <= s < 500 for s in statuses[("POST", "/api/search/text", "negative")]), statuses
    # the writes were reached too: items added from real uploads, batches imported, bad writes refused
    for method, path in WRITES:
        assert statuses.get((method, path, "positive"), set()) & {200, 201}, (method, path, statuses)
        assert any(400 <= s < 500 for s in statuses.get((method, path, "negative"), ())), (method, path, statuses)
