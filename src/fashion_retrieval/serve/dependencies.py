"""The routes' dependencies: the shared ``Service``, the API key check, and the multipart form's checks.

Dependencies are async: FastAPI runs a plain ``def`` dependency in its thread pool, two thread hand-offs per
request for work that takes microseconds (measured: ~0.9 ms of a lone text search's latency).
"""

from __future__ import annotations

import secrets

from fastapi import Depends, Form, HTTPException, Request
from fastapi.params import Depends as DependsParam

from fashion_retrieval.serve.schemas import parse_form_filters
from fashion_retrieval.serve.service import Service


async def service(request: Request) -> Service:
    """The app's ``Service``, made in the lifespan once the searcher is open."""
    return request.app.state.service


async def require_key(request: Request) -> None:
    """A 401 unless the request carries the configured key (``app.state.config.api_key``), when one is set."""
    api_key = request.app.state.config.api_key
    expected = api_key.encode() if api_key else b""
    # as bytes: Starlette decodes header values as Latin-1, and compare_digest refuses non-ASCII str
    given = request.headers.get("X-API-Key", "").encode("latin-1")
    if expected and not secrets.compare_digest(given, expected):
        raise HTTPException(401, "missing or wrong X-API-Key header")


def no_empty_fields(*names: str) -> DependsParam:
    """A form field of the route sent empty is refused, not read as absent (FastAPI would quietly use the
    default): the OpenAPI document says each field, when present, holds a value. Other parts are ignored."""

    async def check(request: Request) -> None:
        form = await request.form()
        empty = sorted({name for name, value in form.multi_items() if value == "" and name in names})
        if empty:
            raise HTTPException(422, f"empty form field(s) {empty}: leave a field out instead of sending it empty")

    return Depends(check)


async def form_filters(filters: str | None = Form(None, max_length=64 * 1024)) -> dict:
    """The multipart ``filters`` part (JSON), parsed; a malformed one is a 422."""
    try:
        return parse_form_filters(filters)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


__all__ = ["form_filters", "no_empty_fields", "require_key", "service"]
