"""Request and response models of the HTTP API (documented at /docs)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

FilterValues = dict[str, list[str] | str]


class TextSearchRequest(BaseModel):
    query: str = Field(..., min_length=1, max_length=1000, description="What to look for.")
    top_k: int = Field(12, ge=1, le=200)
    filters: FilterValues = Field(default_factory=dict, description='e.g. {"gender": ["WOMEN"]}')
    against: Literal["image", "text"] = "image"
    rerank: int = Field(0, ge=0, le=100, description="Rescore the top N with the ITM head.")


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


class Health(BaseModel):
    status: str
    model: dict | None
    store: str
    count: int
