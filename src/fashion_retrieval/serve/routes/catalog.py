"""The catalogue: an item by id, the facets (filterable values), and an item's image file."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from fashion_retrieval.serve.dependencies import require_key, service
from fashion_retrieval.serve.schemas import Item, error_responses
from fashion_retrieval.serve.service import Service, image_url

# Reads only: the writes (add, replace, patch, delete, batch) are in routes/items.py, behind the admin key.
router = APIRouter(dependencies=[Depends(require_key)])


@router.get("/api/items/{item_id:path}", response_model=Item, responses=error_responses(401, 404))
async def item(item_id: str, svc: Service = Depends(service)) -> dict:
    hit = await svc.found(item_id)
    return {"id": hit.id, "caption": hit.caption, "image_url": image_url(hit.id), "attributes": hit.attributes}


@router.get("/api/facets", responses=error_responses(401))
async def facets(svc: Service = Depends(service)) -> dict[str, list[str]]:
    return svc.engine.facets


@router.get("/images/{item_id:path}", include_in_schema=False)
async def image_file(item_id: str, svc: Service = Depends(service)) -> FileResponse:
    # Behind a key, a browser cache must not hand the image to a request without one.
    headers = {"Cache-Control": "private, no-store", "Vary": "X-API-Key"} if svc.config.api_key else None
    return FileResponse(svc.image_path(await svc.found(item_id)), headers=headers)


__all__ = ["router"]
