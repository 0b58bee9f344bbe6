"""Exception handlers: the package's errors as HTTP statuses, shed load as 503 + Retry-After, and request validation
errors kept small."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from fashion_retrieval.errors import (
    FashionRetrievalError,
    ImageError,
    ItemNotFoundError,
    ModelMismatchError,
    StoreError,
)
from fashion_retrieval.serve.scheduler import Expired, Overloaded


def status_of(exc: FashionRetrievalError) -> int:
    """The HTTP status of an error a user caused."""
    if isinstance(exc, ItemNotFoundError):
        return 404
    if isinstance(exc, ImageError):
        return 413 if "too many pixels" in str(exc) else 415
    if isinstance(exc, ModelMismatchError):
        return 409
    if isinstance(exc, StoreError):
        return 503
    return 400


async def user_error(_: Request, exc: FashionRetrievalError) -> JSONResponse:
    return JSONResponse({"detail": str(exc).replace("uploaded image: ", "")}, status_code=status_of(exc))


async def busy(_: Request, exc: Overloaded | Expired) -> JSONResponse:
    """Shed load: a 503 that says when to come back (the queue's drain time at the measured rate)."""
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after)})


async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's default echoes each bad input back: a deep or huge one would be serialised in full.
    errors = [
        {"loc": [str(p)[:64] for p in e.get("loc", ())][:8], "msg": str(e.get("msg", ""))[:200], "type": e["type"]}
        for e in exc.errors()[:10]
    ]
    return JSONResponse({"detail": errors}, status_code=422)


# For ``FastAPI(exception_handlers=...)``: they replace FastAPI's defaults for these exceptions.
EXCEPTION_HANDLERS = {
    FashionRetrievalError: user_error,
    RequestValidationError: invalid_request,
    Overloaded: busy,
    Expired: busy,
}

__all__ = ["EXCEPTION_HANDLERS", "busy", "invalid_request", "status_of", "user_error"]
