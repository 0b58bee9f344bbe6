"""Catalogue writes, behind the admin key: add (POST), replace (PUT), change attributes (PATCH), remove (DELETE), and
batch imports (NDJSON). Each answer says the write is durable (the store flushed it) and searchable (a query sees
it); a write that fails changes nothing and says why. The bodies are read by hand (an item is an upload or JSON
naming a file on the server), so their OpenAPI entries are written in ``serve/openapi.py``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import StreamingResponse

from fashion_retrieval.serve.batch import run_batch
from fashion_retrieval.serve.dependencies import require_admin_key, service, writable
from fashion_retrieval.serve.item_requests import read_batch, read_item, read_patch
from fashion_retrieval.serve.openapi import BATCH_REQUEST_BODY, item_request_body, patch_request_body
from fashion_retrieval.serve.schemas import WriteAnswer, error_responses
from fashion_retrieval.serve.service import Service, image_url
from fashion_retrieval.store.items import NewItem, WriteResult, check_id

router = APIRouter(dependencies=[Depends(require_admin_key), Depends(writable)])
UPSERT_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 415, 422, 503)


def _answer(result: WriteResult, response: Response, item: dict | None = None) -> dict:
    response.status_code = 201 if result.status == "created" else 200
    return {**result.to_dict(), "item": item}


def _item(item: NewItem) -> dict:
    return {"id": item.id, "caption": item.caption, "image_url": image_url(item.id), "attributes": item.attributes}


@router.post(
    "/api/items",
    status_code=201,
    response_model=WriteAnswer,
    responses={200: {"model": WriteAnswer, "description": "Replaced an item of that id"}, **UPSERT_ERRORS},
    openapi_extra={"requestBody": item_request_body()},
)
async def add_item(request: Request, response: Response, svc: Service = Depends(service)) -> dict:
    """Add an item (or replace the item of that id: sending it twice leaves one), encoded by the server's model."""
    item = await read_item(request, svc.writes, None)
    (result,) = await svc.writes.upsert([item], request)
    return _answer(result, response, _item(item))


@router.put(
    "/api/items/{item_id:path}",
    response_model=WriteAnswer,
    responses={201: {"model": WriteAnswer, "description": "Created"}, **UPSERT_ERRORS},
    openapi_extra={"requestBody": item_request_body(with_id=False)},
)
async def replace_item(item_id: str, request: Request, response: Response, svc: Service = Depends(service)) -> dict:
    """Replace the item of this id (or create it): image, caption and attributes, encoded again."""
    item = await read_item(request, svc.writes, check_id(item_id))
    (result,) = await svc.writes.upsert([item], request)
    return _answer(result, response, _item(item))


@router.patch(
    "/api/items/{item_id:path}",
    response_model=WriteAnswer,
    responses=error_responses(400, 401, 403, 404, 409, 413, 415, 422, 503),
    openapi_extra={"requestBody": patch_request_body()},
)
async def patch_item(item_id: str, request: Request, response: Response, svc: Service = Depends(service)) -> dict:
    """Change attributes only (a price band, a stock flag): nothing is encoded again."""
    item_id = check_id(item_id)
    result = await svc.writes.patch(item_id, await read_patch(request, svc.writes))
    hit = await svc.found(item_id)
    item = {"id": hit.id, "caption": hit.caption, "image_url": image_url(hit.id), "attributes": hit.attributes}
    return _answer(result, response, item)


@router.delete(
    "/api/items/{item_id:path}",
    response_model=WriteAnswer,
    responses=error_responses(400, 401, 403, 404, 409, 503),
)
async def delete_item(item_id: str, response: Response, svc: Service = Depends(service)) -> dict:
    """Remove the item: no search returns it once this answers."""
    (result,) = await svc.writes.delete([check_id(item_id)])
    if result is None:
        raise HTTPException(404, f"no item {item_id[:80]!r}")
    return _answer(result, response)


@router.post(
    "/api/items:batch",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "One result line per input line as each chunk is durable and searchable, then a summary",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        },
        **error_responses(401, 403, 409, 413, 415, 422, 503),
    },
    openapi_extra={"requestBody": BATCH_REQUEST_BODY},
)
async def batch(request: Request, svc: Service = Depends(service)) -> StreamingResponse:
    """Upsert, patch and delete items from NDJSON lines (at most ``--max-batch-lines``): the whole batch is refused
    (nothing written) if it is too large or not NDJSON; a bad line fails alone, with its own result line."""
    lines = await read_batch(request, svc.writes)
    return StreamingResponse(run_batch(lines, svc.writes), media_type="application/x-ndjson")


__all__ = ["router"]
