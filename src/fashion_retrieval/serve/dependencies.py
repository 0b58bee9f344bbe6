"""The routes' dependencies: the shared ``Service``, the read and write key checks, the store's writability, and the
multipart form's checks.

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


def _given_key(request: Request) -> bytes:
    # as bytes: Starlette decodes header values as Latin-1, and compare_digest refuses non-ASCII str
    return request.headers.get("X-API-Key", "").encode("latin-1")


def _matches(given: bytes, key: str | None) -> bool:
    return bool(key) and secrets.compare_digest(given, key.encode())


async def require_key(request: Request) -> None:
    """Reads: a 401 unless the request carries the read key (``config.api_key``, when one is set) or the admin key."""
    config = request.app.state.config
    given = _given_key(request)
    if config.api_key and not (_matches(given, config.api_key) or _matches(given, config.admin_key)):
        raise HTTPException(401, "missing or wrong X-API-Key header")


async def require_admin_key(request: Request) -> None:
    """Writes: the admin key (``serve --admin-key``) only. Without one configured writes are off (403); the read
    key is known but may not write (403); no key or a wrong one is a 401."""
    config = request.app.state.config
    if not config.admin_key:
        raise HTTPException(403, "writes are off on this server: start it with --admin-key KEY to take them")
    given = _given_key(request)
    if _matches(given, config.admin_key):
        return
    if _matches(given, config.api_key):
        raise HTTPException(403, "this key reads only: writes need the admin key (X-API-Key: the --admin-key)")
    raise HTTPException(401, "missing or wrong X-API-Key header: writes need the admin key")


async def writable(request: Request) -> None:
    """A 409 when the store cannot take writes (an embeddings folder served in memory)."""
    if not request.app.state.service.searcher.store.writable:
        raise HTTPException(
            409,
            "this server serves an embeddings folder in memory, read-only: index it into Milvus "
            "(`fashion-retrieval index DIR --db fashion.db`) and serve that to add, change or remove items",
        )


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


__all__ = ["form_filters", "no_empty_fields", "require_admin_key", "require_key", "service", "writable"]
