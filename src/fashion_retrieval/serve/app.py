"""The HTTP API and web page: ``create_app(config)``. Wiring only: the routes are in ``serve/routes/`` (one
router per concern), and the query engine owns the model and the store.

``create_app`` keeps the config (and the metrics) on ``app.state``, where the lifespan and the routes'
dependencies read them; the lifespan opens the searcher, starts the engine and sets ``app.state.service``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from fashion_retrieval.serve.config import ServeConfig
from fashion_retrieval.serve.engine import EngineSettings, QueryEngine, in_fresh_thread
from fashion_retrieval.serve.errors import EXCEPTION_HANDLERS
from fashion_retrieval.serve.limits import BodyLimitMiddleware, keep_uploads_in_memory
from fashion_retrieval.serve.metrics import AccessLogMiddleware, ServeMetrics
from fashion_retrieval.serve.openapi import use_catalogue_openapi
from fashion_retrieval.serve.routes import catalog, items, page, search, system
from fashion_retrieval.serve.service import Service
from fashion_retrieval.serve.shedding import ShedLoadMiddleware

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI, *, searcher=None) -> AsyncIterator[None]:
    """Open the searcher (unless one was given, already open), run the query engine, close both at the end."""
    config: ServeConfig = app.state.config
    owned = searcher is None
    opened = searcher or await asyncio.wrap_future(in_fresh_thread(config.open_searcher))
    settings = EngineSettings.for_device(
        opened.encoder.device.type,
        max_batch=config.max_batch,
        max_image_batch=config.max_image_batch,
        max_wait_ms=config.max_wait_ms,
        max_queue=config.max_queue,
        write_batch=config.write_batch,
    )
    engine = await run_in_threadpool(QueryEngine(opened, settings, app.state.metrics).start)
    app.state.service = await run_in_threadpool(Service, engine, config, app.state.metrics)  # reads the schema
    try:
        yield
    finally:
        engine.close()
        if owned:
            opened.store.close()


def create_app(config: ServeConfig, *, searcher=None) -> FastAPI:
    """The FastAPI app. ``searcher`` may be given (already open); otherwise it is opened in the lifespan."""
    keep_uploads_in_memory(config.max_upload_bytes)
    app = FastAPI(
        title="fashion-retrieval",
        version="0.1.0",
        lifespan=partial(lifespan, searcher=searcher),
        description="Multimodal fashion search: text, image and hybrid queries with filters; catalogue writes "
        "behind an admin key.",
        # an image part sent without a filename is a plain field: let it be as large as an upload
        form_limits={"max_part_size": config.max_upload_bytes, "max_files": 4, "max_fields": 256},
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.config = config  # before the lifespan: the API key check and the lifespan read it
    app.state.metrics = metrics = ServeMetrics() if config.metrics else None
    if config.cors_origin:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=[config.cors_origin],
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Content-Type", "X-API-Key"],
        )
    app.add_middleware(
        BodyLimitMiddleware,
        json_limit=config.max_json_bytes,
        upload_limit=config.max_upload_bytes,
        body_timeout=config.body_timeout,
        batch_limit=config.max_batch_bytes,
    )
    app.add_middleware(ShedLoadMiddleware)  # before the body is read: refusing must cost next to nothing
    app.add_middleware(AccessLogMiddleware, metrics=metrics)

    # In this order (the OpenAPI document lists paths as added): reads, then the writes.
    for router in (system.router, search.router, catalog.router, items.router):
        app.include_router(router)
    if metrics is not None:
        app.include_router(system.metrics_router)
    app.include_router(page.router)
    app.mount("/static", StaticFiles(directory=page.STATIC), name="static")
    use_catalogue_openapi(app)
    return app


def app_from_environment() -> FastAPI:
    """The app of one `serve --workers N` worker process (the config travels in an environment variable)."""
    from fashion_retrieval.logs import configure_logging

    config = ServeConfig.from_environment()
    configure_logging(quiet=config.log_level in ("warning", "error", "critical"), verbose=config.log_level == "debug")
    return create_app(config)


__all__ = ["app_from_environment", "create_app"]
