"""The server itself: health (behind the API key) and Prometheus metrics (``metrics_router``: only when on)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from fashion_retrieval.serve.dependencies import require_key, service
from fashion_retrieval.serve.schemas import Health, error_responses
from fashion_retrieval.serve.service import Service

router = APIRouter()
# A router of its own: create_app includes it only when ``config.metrics`` (else /metrics is a 404).
metrics_router = APIRouter()


@router.get("/api/health", response_model=Health, dependencies=[Depends(require_key)], responses=error_responses(401))
async def health(svc: Service = Depends(service)) -> dict:
    """From cached values: answers at once however busy the model and the store are."""
    engine = svc.engine
    return {
        "status": "ok",
        "model": svc.searcher.identity.to_dict(),
        "precision": svc.searcher.encoder.precision.to_dict(),
        "store": svc.searcher.store.description,
        "count": engine.count or 0,
        "engine": engine.describe(),
    }


@metrics_router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request) -> Response:
    # no API key: public, as a scrape target usually is
    metrics = request.app.state.metrics
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


__all__ = ["metrics_router", "router"]
