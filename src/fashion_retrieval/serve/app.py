"""The HTTP API and web page: ``create_app(config)``; the model and store open once, at start-up."""

from __future__ import annotations

import json
import secrets
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from fashion_retrieval.errors import FashionRetrievalError, ImageError, ModelMismatchError, StoreError
from fashion_retrieval.serve.schemas import Health, SearchResult, TextSearchRequest

STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True)
class ServeConfig:
    db: str | None = None
    uri: str | None = None
    token: str | None = None
    collection: str = "fashion_items"
    embeddings: str | None = None
    use_faiss: bool = False
    images_dir: str | None = None
    base: str | None = None
    checkpoint: str | None = None
    lora_alpha: float | None = None
    device: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    cors_origin: str | None = None
    max_upload_bytes: int = 10 * 1024 * 1024


class SearchService:
    """The searcher behind a lock: one model and one store connection shared by all requests."""

    def __init__(self, searcher, config: ServeConfig) -> None:
        self.searcher = searcher
        self.config = config
        self.lock = threading.Lock()

    def hits(self, response) -> dict:
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
        return {"query": response.query, "results": results, "seconds": response.seconds}

    def check_filter_values(self, filters: dict) -> dict:
        """Values of a faceted field must be ones the catalogue has: a typo or an injection attempt is a 400."""
        with self.lock:
            facets = self.searcher.store.facets()
        for name, values in filters.items():
            values = [values] if isinstance(values, str) else values
            unknown = [v for v in values if name in facets and v not in facets[name]]
            if unknown:
                raise HTTPException(400, f"unknown value(s) {unknown} for filter {name!r}; known: {facets[name][:20]}")
        return filters

    def image_path(self, item_id: str) -> Path:
        with self.lock:
            found = self.searcher.store.get([item_id])
        if not found:
            raise HTTPException(404, f"no item {item_id!r}")
        path = Path(found[0].path)
        if self.config.images_dir:
            # Paths recorded on another machine: look the file up by name under --images-dir, and nowhere else.
            root = Path(self.config.images_dir).resolve()
            path = (root / path.name).resolve()
            if root not in path.parents:
                raise HTTPException(404, "image outside the images folder")
        if not path.is_file():
            raise HTTPException(404, f"the image of {item_id!r} is not on this machine (use --images-dir)")
        return path


def open_config_searcher(config: ServeConfig):
    """The searcher a ServeConfig names."""
    from fashion_retrieval.search.searcher import open_searcher

    return open_searcher(
        db=config.db,
        uri=config.uri,
        token=config.token,
        collection=config.collection,
        embeddings=config.embeddings,
        use_faiss=config.use_faiss,
        base=config.base,
        checkpoint=config.checkpoint,
        lora_alpha=config.lora_alpha,
        device=config.device,
    )


def _parse_filters(raw: str | None) -> dict:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise HTTPException(422, f'filters must be a JSON object such as {{"gender": ["WOMEN"]}}: {exc}') from exc
    if not isinstance(value, dict):
        raise HTTPException(422, "filters must be a JSON object of field -> value or list of values")
    return value


def create_app(config: ServeConfig, *, searcher=None) -> FastAPI:
    """The FastAPI app. ``searcher`` may be given (already open); otherwise it is opened in the lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        owned = searcher is None
        app.state.service = SearchService(searcher or open_config_searcher(config), config)
        try:
            yield
        finally:
            if owned:
                app.state.service.searcher.store.close()

    app = FastAPI(
        title="fashion-retrieval",
        version="0.1.0",
        lifespan=lifespan,
        description="Multimodal fashion search: text, image and hybrid queries with filters.",
    )
    if config.cors_origin:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=[config.cors_origin],
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-API-Key"],
        )

    def service(request: Request) -> SearchService:
        return request.app.state.service

    def require_key(request: Request) -> None:
        if config.api_key and not secrets.compare_digest(request.headers.get("X-API-Key", ""), config.api_key):
            raise HTTPException(401, "missing or wrong X-API-Key header")

    @app.exception_handler(FashionRetrievalError)
    async def user_error(_: Request, exc: FashionRetrievalError) -> JSONResponse:
        status = (
            415
            if isinstance(exc, ImageError)
            else 409
            if isinstance(exc, ModelMismatchError)
            else 503
            if isinstance(exc, StoreError)
            else 400
        )
        if isinstance(exc, ImageError) and "decompression bomb" in str(exc):
            status = 413
        return JSONResponse({"detail": str(exc).replace("uploaded image: ", "")}, status_code=status)

    async def read_upload(image: UploadFile) -> bytes:
        data = await image.read(config.max_upload_bytes + 1)
        if len(data) > config.max_upload_bytes:
            raise HTTPException(413, f"image over the {config.max_upload_bytes // (1024 * 1024)} MB limit")
        if not data:
            raise HTTPException(422, "the uploaded image is empty")
        return data  # decoded in memory by open_image, which sniffs the bytes (not the content type)

    api = [Depends(require_key)]

    @app.get("/api/health", response_model=Health, dependencies=api)
    def health(svc: SearchService = Depends(service)) -> dict:
        with svc.lock:
            count = svc.searcher.store.count()
        return {
            "status": "ok",
            "model": svc.searcher.identity.to_dict(),
            "store": svc.searcher.store.description,
            "count": count,
        }

    @app.post("/api/search/text", response_model=SearchResult, dependencies=api)
    def search_text(body: TextSearchRequest, svc: SearchService = Depends(service)) -> dict:
        filters = svc.check_filter_values(body.filters)
        with svc.lock:
            response = svc.searcher.text(
                body.query, top_k=body.top_k, filters=filters, against=body.against, rerank=body.rerank
            )
        return svc.hits(response)

    @app.post("/api/search/image", response_model=SearchResult, dependencies=api)
    async def search_image(
        image: UploadFile = File(...),
        top_k: int = Form(12, ge=1, le=200),
        filters: str | None = Form(None),
        against: str = Form("image", pattern="^(image|text)$"),
        svc: SearchService = Depends(service),
    ) -> dict:
        data, parsed = await read_upload(image), svc.check_filter_values(_parse_filters(filters))

        def run():
            with svc.lock:
                return svc.searcher.image(data, top_k=top_k, filters=parsed, against=against)

        return svc.hits(await run_in_threadpool(run))

    @app.post("/api/search/hybrid", response_model=SearchResult, dependencies=api)
    async def search_hybrid(
        text: str = Form(..., min_length=1, max_length=1000),
        image: UploadFile = File(...),
        alpha: float = Form(0.5, ge=0.0, le=1.0),
        fusion: str = Form("weighted", pattern="^(weighted|rrf)$"),
        top_k: int = Form(12, ge=1, le=200),
        filters: str | None = Form(None),
        against: str = Form("image", pattern="^(image|text)$"),
        rerank: int = Form(0, ge=0, le=100),
        svc: SearchService = Depends(service),
    ) -> dict:
        data, parsed = await read_upload(image), svc.check_filter_values(_parse_filters(filters))

        def run():
            with svc.lock:
                return svc.searcher.hybrid(
                    text, data, alpha=alpha, fusion=fusion, top_k=top_k, filters=parsed, against=against, rerank=rerank
                )

        return svc.hits(await run_in_threadpool(run))

    @app.get("/api/items/{item_id:path}", dependencies=api)
    def item(item_id: str, svc: SearchService = Depends(service)) -> dict:
        with svc.lock:
            found = svc.searcher.store.get([item_id])
        if not found:
            raise HTTPException(404, f"no item {item_id!r}")
        hit = found[0]
        return {
            "id": hit.id,
            "caption": hit.caption,
            "image_url": f"/images/{quote(hit.id, safe='')}",
            "attributes": hit.attributes,
        }

    @app.get("/api/facets", dependencies=api)
    def facets(svc: SearchService = Depends(service)) -> dict:
        with svc.lock:
            return svc.searcher.store.facets()

    @app.get("/images/{item_id:path}", include_in_schema=False)
    def image_file(item_id: str, svc: SearchService = Depends(service)) -> FileResponse:
        return FileResponse(svc.image_path(item_id))

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
