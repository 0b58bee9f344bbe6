"""The HTTP API and web page: ``create_app(config)``. Routes only: the query engine owns the model and the store.

Every route is ``async`` and awaits work done elsewhere (the engine's model worker, its store pool, a thread for
decoding uploads): nothing on the event loop waits on a lock, a model or a store, so ``/api/health`` answers in
milliseconds while every worker is busy.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from fashion_retrieval.errors import (
    FashionRetrievalError,
    ImageError,
    ItemNotFoundError,
    ModelMismatchError,
    QueryError,
    StoreError,
)
from fashion_retrieval.search.compose.algebra import DEFAULT_WEIGHTS
from fashion_retrieval.search.compose.request import ComposeQuery
from fashion_retrieval.search.queries import HybridQuery, ImageQuery, Query, TextQuery
from fashion_retrieval.serve.config import ServeConfig
from fashion_retrieval.serve.engine import EngineSettings, QueryEngine, in_fresh_thread
from fashion_retrieval.serve.limits import BodyLimitMiddleware, keep_uploads_in_memory
from fashion_retrieval.serve.metrics import AccessLogMiddleware, ServeMetrics
from fashion_retrieval.serve.openapi import catalogue_openapi
from fashion_retrieval.serve.schemas import (
    Health,
    Item,
    ItemId,
    NegativeText,
    NonBlank,
    SearchResult,
    TextSearchRequest,
    blank_checked,
    error_responses,
    parse_form_filters,
)
from fashion_retrieval.store.base import validate_filters

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
SHOWN_VALUES = 10
TEXT_FIELD, ID_FIELD = blank_checked(1000), blank_checked(1024)


def _short(values, limit: int = SHOWN_VALUES) -> str:
    """A bounded rendering of user-given values for error messages (never echo a large input back)."""
    shown = [str(v)[:40] for v in list(values)[:limit]]
    return repr(shown) + (f" (+{len(values) - limit} more)" if len(values) > limit else "")


class Service:
    """What the routes share: the engine, the config, and checks that use only cached facts."""

    def __init__(self, engine: QueryEngine, config: ServeConfig) -> None:
        self.engine, self.config = engine, config
        self.searcher = engine.searcher

    def checked_filters(self, filters: dict) -> dict:
        """Known fields, and for faceted fields known values (a typo or an injection attempt is a 400)."""
        clean = validate_filters(filters, [*self.engine.attributes, "id"])
        facets = self.engine.facets
        for name, values in clean.items():
            unknown = [v for v in values if name in facets and v not in facets[name]]
            if unknown:
                raise QueryError(
                    f"unknown value(s) {_short(unknown)} for filter {name!r}; known: {_short(facets[name])}"
                )
        return clean

    async def search(self, query: Query) -> dict:
        response = await asyncio.wrap_future(self.engine.submit(query))
        results = [
            {
                "id": h.id,
                "score": h.score,
                "caption": h.caption,
                "image_url": f"/images/{quote(h.id, safe='')}",
                "attributes": {k: str(v) for k, v in h.attributes.items()},
            }
            for h in response.results
        ]
        return {"query": response.query, "results": results, "seconds": response.seconds, **response.extra}

    async def pixels(self, upload: UploadFile | str):
        """The upload decoded and preprocessed in a worker thread (never on the event loop, never under the model).

        A part sent without a filename (as OpenAPI clients send a binary property) arrives as text that Starlette
        decoded as UTF-8 or, failing that, Latin-1; both are undone here to get the bytes back."""
        data = _raw_bytes(upload) if isinstance(upload, str) else await upload.read()
        if len(data) > self.config.max_upload_bytes:
            raise HTTPException(413, f"image over the {self.config.max_upload_bytes // (1024 * 1024)} MB limit")
        if not data:
            raise HTTPException(422, "the uploaded image is empty")
        return await run_in_threadpool(self.searcher.prepare_image, data)

    async def found(self, item_id: str):
        found = await asyncio.wrap_future(self.engine.store_call(self.searcher.store.get, [item_id]))
        if not found:
            raise HTTPException(404, f"no item {_short([item_id], 1)}")
        return found[0]

    def image_path(self, hit) -> Path:
        path = Path(hit.path)
        if self.config.images_dir:
            # Paths recorded on another machine: look the file up by name under --images-dir, and nowhere else.
            root = Path(self.config.images_dir).resolve()
            path = (root / path.name).resolve()
            if root not in path.parents:
                raise HTTPException(404, "image outside the images folder")
        if not path.is_file():
            raise HTTPException(404, "this item's image is not on this machine (use --images-dir)")
        return path


def _raw_bytes(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _status_of(exc: FashionRetrievalError) -> int:
    if isinstance(exc, ItemNotFoundError):
        return 404
    if isinstance(exc, ImageError):
        return 413 if "too many pixels" in str(exc) else 415
    if isinstance(exc, ModelMismatchError):
        return 409
    if isinstance(exc, StoreError):
        return 503
    return 400


def create_app(config: ServeConfig, *, searcher=None) -> FastAPI:
    """The FastAPI app. ``searcher`` may be given (already open); otherwise it is opened in the lifespan."""
    metrics = ServeMetrics() if config.metrics else None
    keep_uploads_in_memory(config.max_upload_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        owned = searcher is None
        opened = searcher or await asyncio.wrap_future(in_fresh_thread(config.open_searcher))
        settings = EngineSettings.for_device(
            opened.encoder.device.type,
            max_batch=config.max_batch,
            max_image_batch=config.max_image_batch,
            max_wait_ms=config.max_wait_ms,
        )
        engine = await run_in_threadpool(QueryEngine(opened, settings, metrics).start)
        app.state.service = Service(engine, config)
        try:
            yield
        finally:
            engine.close()
            if owned:
                opened.store.close()

    app = FastAPI(
        title="fashion-retrieval",
        version="0.1.0",
        lifespan=lifespan,
        description="Multimodal fashion search: text, image and hybrid queries with filters.",
        # an image part sent without a filename is a plain field: let it be as large as an upload
        form_limits={"max_part_size": config.max_upload_bytes, "max_files": 4, "max_fields": 256},
    )
    if config.cors_origin:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=[config.cors_origin],
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-API-Key"],
        )
    app.add_middleware(
        BodyLimitMiddleware,
        json_limit=config.max_json_bytes,
        upload_limit=config.max_upload_bytes,
        body_timeout=config.body_timeout,
    )
    app.add_middleware(AccessLogMiddleware, metrics=metrics)

    # Dependencies are async: FastAPI runs a plain ``def`` dependency in its thread pool, two thread hand-offs
    # per request for work that takes microseconds (measured: ~0.9 ms of a lone text search's latency).
    async def service(request: Request) -> Service:
        return request.app.state.service

    expected_key = config.api_key.encode() if config.api_key else b""

    async def require_key(request: Request) -> None:
        # as bytes: Starlette decodes header values as Latin-1, and compare_digest refuses non-ASCII str
        given = request.headers.get("X-API-Key", "").encode("latin-1")
        if expected_key and not secrets.compare_digest(given, expected_key):
            raise HTTPException(401, "missing or wrong X-API-Key header")

    @app.exception_handler(FashionRetrievalError)
    async def user_error(_: Request, exc: FashionRetrievalError) -> JSONResponse:
        return JSONResponse({"detail": str(exc).replace("uploaded image: ", "")}, status_code=_status_of(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes each bad input back: a deep or huge one would be serialised in full.
        errors = [
            {"loc": [str(p)[:64] for p in e.get("loc", ())][:8], "msg": str(e.get("msg", ""))[:200], "type": e["type"]}
            for e in exc.errors()[:10]
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    api = [Depends(require_key)]

    @app.get("/api/health", response_model=Health, dependencies=api, responses=error_responses(401))
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

    @app.post(
        "/api/search/text",
        response_model=SearchResult,
        dependencies=api,
        responses=error_responses(400, 401, 413, 422, 503),
    )
    async def search_text(body: TextSearchRequest, svc: Service = Depends(service)) -> dict:
        filters = svc.checked_filters(body.filters)
        return await svc.search(TextQuery(body.query, body.top_k, filters, body.against, body.rerank, body.minus))

    def no_empty_fields(*names: str):
        """A form field of the route sent empty is refused, not read as absent (FastAPI would quietly use the
        default): the OpenAPI document says each field, when present, holds a value. Other parts are ignored."""

        async def check(request: Request) -> None:
            form = await request.form()
            empty = sorted({name for name, value in form.multi_items() if value == "" and name in names})
            if empty:
                raise HTTPException(422, f"empty form field(s) {empty}: leave a field out instead of sending it empty")

        return Depends(check)

    async def form_filters(filters: str | None = Form(None, max_length=64 * 1024)) -> dict:
        try:
            return parse_form_filters(filters)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    upload_errors = error_responses(400, 401, 413, 415, 422, 503)
    common_fields = ("image", "top_k", "filters", "against")

    @app.post(
        "/api/search/image",
        response_model=SearchResult,
        dependencies=[*api, no_empty_fields(*common_fields)],
        responses=upload_errors,
    )
    async def search_image(
        image: UploadFile | str = File(...),
        top_k: int = Form(12, ge=1, le=200),
        filters: dict = Depends(form_filters),
        against: str = Form("image", pattern="^(image|text)$"),
        svc: Service = Depends(service),
    ) -> dict:
        query = ImageQuery(None, top_k, svc.checked_filters(filters), against)  # options checked before decoding
        query.image = await svc.pixels(image)
        return await svc.search(query)

    @app.post(
        "/api/search/hybrid",
        response_model=SearchResult,
        dependencies=[*api, no_empty_fields(*common_fields, "text", "alpha", "fusion", "rerank")],
        responses=upload_errors,
    )
    async def search_hybrid(
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
        query = HybridQuery(text, None, alpha, fusion, top_k, svc.checked_filters(filters), against, rerank)
        query.image = await svc.pixels(image)
        return await svc.search(query)

    @app.post(
        "/api/search/compose",
        response_model=SearchResult,
        dependencies=[*api, no_empty_fields(*common_fields, "modifier", "item", "minus", "like", "unlike", "method")],
        responses=error_responses(400, 401, 404, 413, 415, 422, 503),
    )
    async def search_compose(
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
        checked = svc.checked_filters(filters)
        if image is not None and item is not None:
            raise HTTPException(422, "give a reference item or a reference image, not both")
        pixels = await svc.pixels(image) if image is not None else None
        query = ComposeQuery(modifier, item, pixels, minus, like, unlike, method, DEFAULT_WEIGHTS, top_k, checked)
        return await svc.search(query)

    @app.get("/api/items/{item_id:path}", response_model=Item, dependencies=api, responses=error_responses(401, 404))
    async def item(item_id: str, svc: Service = Depends(service)) -> dict:
        hit = await svc.found(item_id)
        return {
            "id": hit.id,
            "caption": hit.caption,
            "image_url": f"/images/{quote(hit.id, safe='')}",
            "attributes": hit.attributes,
        }

    @app.get("/api/facets", dependencies=api, responses=error_responses(401))
    async def facets(svc: Service = Depends(service)) -> dict[str, list[str]]:
        return svc.engine.facets

    @app.get("/images/{item_id:path}", include_in_schema=False, dependencies=api)
    async def image_file(item_id: str, svc: Service = Depends(service)) -> FileResponse:
        # Behind a key, a browser cache must not hand the image to a request without one.
        headers = {"Cache-Control": "private, no-store", "Vary": "X-API-Key"} if config.api_key else None
        return FileResponse(svc.image_path(await svc.found(item_id)), headers=headers)

    if metrics is not None:

        @app.get("/metrics", include_in_schema=False)
        async def prometheus_metrics() -> Response:
            return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def openapi() -> dict:
        service = getattr(app.state, "service", None)
        version = service.engine.version if service else -1
        if app.openapi_schema is None or app.state.openapi_version != version:
            app.openapi_schema = catalogue_openapi(app, lambda: service.engine if service else None)
            app.state.openapi_version = version
        return app.openapi_schema

    app.openapi = openapi
    return app


def app_from_environment() -> FastAPI:
    """The app of one `serve --workers N` worker process (the config travels in an environment variable)."""
    from fashion_retrieval.logs import configure_logging

    config = ServeConfig.from_environment()
    configure_logging(quiet=config.log_level in ("warning", "error", "critical"), verbose=config.log_level == "debug")
    return create_app(config)


__all__ = ["app_from_environment", "create_app"]
