"""Searches: by text (JSON), by image, hybrid text and image, and composed refinements (multipart forms)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile

from fashion_retrieval.search.compose.algebra import DEFAULT_WEIGHTS
from fashion_retrieval.search.compose.request import ComposeQuery
from fashion_retrieval.search.queries import HybridQuery, ImageQuery, TextQuery
from fashion_retrieval.serve.dependencies import form_filters, no_empty_fields, require_key, service
from fashion_retrieval.serve.schemas import (
    ItemId,
    NegativeText,
    NonBlank,
    SearchResult,
    TextSearchRequest,
    blank_checked,
    error_responses,
)
from fashion_retrieval.serve.service import Service

TEXT_FIELD, ID_FIELD = blank_checked(1000), blank_checked(1024)
UPLOAD_ERRORS = error_responses(400, 401, 413, 415, 422, 503)  # 503: busy (Retry-After) or store down
COMMON_FIELDS = ("image", "top_k", "filters", "against")

router = APIRouter(dependencies=[Depends(require_key)])


@router.post("/api/search/text", response_model=SearchResult, responses=error_responses(400, 401, 413, 422, 503))
async def search_text(request: Request, body: TextSearchRequest, svc: Service = Depends(service)) -> dict:
    filters = await svc.checked_filters(body.filters)
    query = TextQuery(body.query, body.top_k, filters, body.against, body.rerank, body.minus)
    return await svc.search(query, request)


@router.post(
    "/api/search/image",
    response_model=SearchResult,
    dependencies=[no_empty_fields(*COMMON_FIELDS)],
    responses=UPLOAD_ERRORS,
)
async def search_image(
    request: Request,
    image: UploadFile | str = File(...),
    top_k: int = Form(12, ge=1, le=200),
    filters: dict = Depends(form_filters),
    against: str = Form("image", pattern="^(image|text)$"),
    svc: Service = Depends(service),
) -> dict:
    query = ImageQuery(None, top_k, await svc.checked_filters(filters), against)  # checked before decoding
    query.image = await svc.pixels(image)
    return await svc.search(query, request)


@router.post(
    "/api/search/hybrid",
    response_model=SearchResult,
    dependencies=[no_empty_fields(*COMMON_FIELDS, "text", "alpha", "fusion", "rerank")],
    responses=UPLOAD_ERRORS,
)
async def search_hybrid(
    request: Request,
    text: NonBlank = Form(..., **TEXT_FIELD),
    image: UploadFile | str = File(...),
    alpha: float = Form(0.5, ge=0.0, le=1.0),
    fusion: str = Form("weighted", pattern="^(weighted|rrf)$"),
    top_k: int = Form(12, ge=1, le=200),
    filters: dict = Depends(form_filters),
    against: str = Form("image", pattern="^(image|text)$"),
    rerank: int = Form(0, ge=0, le=100),
    svc: Service = Depends(service),
) -> dict:
    query = HybridQuery(text, None, alpha, fusion, top_k, await svc.checked_filters(filters), against, rerank)
    query.image = await svc.pixels(image)
    return await svc.search(query, request)


@router.post(
    "/api/search/compose",
    response_model=SearchResult,
    dependencies=[no_empty_fields(*COMMON_FIELDS, "modifier", "item", "minus", "like", "unlike", "method")],
    responses=error_responses(400, 401, 404, 413, 415, 422, 503),
)
async def search_compose(
    request: Request,
    modifier: NonBlank | None = Form(None, **TEXT_FIELD, description="What to change: in red"),
    item: NonBlank | None = Form(None, **ID_FIELD, description="Reference catalogue item id"),
    image: UploadFile | str | None = File(None, description="Or a reference image"),
    minus: list[NegativeText] = Form([], max_length=8, description="Exclude what matches: stripes"),
    like: list[ItemId] = Form([], max_length=50, description="More like these item ids"),
    unlike: list[ItemId] = Form([], max_length=50, description="Less like these item ids"),
    method: Literal["delta", "caption", "sum", "image", "text"] | None = Form(None),
    top_k: int = Form(12, ge=1, le=200),
    filters: dict = Depends(form_filters),
    svc: Service = Depends(service),
) -> dict:
    """Refine a search: a reference (item id or image) changed by a modifier, negatives, feedback ids."""
    checked = await svc.checked_filters(filters)
    if image is not None and item is not None:
        raise HTTPException(422, "give a reference item or a reference image, not both")
    pixels = await svc.pixels(image) if image is not None else None
    query = ComposeQuery(modifier, item, pixels, minus, like, unlike, method, DEFAULT_WEIGHTS, top_k, checked)
    return await svc.search(query, request)


__all__ = ["router"]
