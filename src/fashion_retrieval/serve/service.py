"""``Service``: what the routes share once the app has started (the engine, the config, the writer, cheap checks)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import quote

from fastapi import HTTPException, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from fashion_retrieval.errors import QueryError
from fashion_retrieval.search.queries import Query
from fashion_retrieval.serve.config import ServeConfig
from fashion_retrieval.serve.engine import QueryEngine
from fashion_retrieval.serve.waiting import arrival, outcome
from fashion_retrieval.serve.writes import CatalogueWriter
from fashion_retrieval.store.base import validate_filters

log = logging.getLogger(__name__)

SHOWN_VALUES = 10


def _short(values, limit: int = SHOWN_VALUES) -> str:
    """A bounded rendering of user-given values for error messages (never echo a large input back)."""
    shown = [str(v)[:40] for v in list(values)[:limit]]
    return repr(shown) + (f" (+{len(values) - limit} more)" if len(values) > limit else "")


def image_url(item_id: str) -> str:
    """Where the page (and any client) fetches an item's image."""
    return f"/images/{quote(item_id, safe='')}"


class Service:
    """What the routes share: the engine, the config, and checks that use only cached facts."""

    def __init__(self, engine: QueryEngine, config: ServeConfig, metrics=None) -> None:
        self.engine, self.config = engine, config
        self.searcher = engine.searcher
        self.writes = CatalogueWriter(engine, config, metrics)

    async def checked_filters(self, filters: dict) -> dict:
        """Known fields, and for faceted fields known values (a typo or an injection attempt is a 400). A value the
        cached facets lack is looked up in the store first: another process (a worker, the CLI) may have added it."""
        clean = validate_filters(filters, [*self.engine.attributes, "id"])
        facets = self.engine.facets
        for name, values in clean.items():
            unknown = [v for v in values if name in facets and v not in facets[name]]
            if unknown and (missing := await self._not_in_store(name, unknown)):
                raise QueryError(
                    f"unknown value(s) {_short(missing)} for filter {name!r}; known: {_short(facets[name])}"
                )
        return clean

    async def _not_in_store(self, name: str, values: list[str]) -> list[str]:
        store = self.searcher.store
        try:
            found = await asyncio.wrap_future(self.engine.store_call(store.present_values, name, values))
        except Exception as exc:  # noqa: BLE001 - a value the store cannot look up is unknown, not a server error
            log.debug("could not look up %s values: %s", name, exc)
            found = set()
        if found:
            self.engine.add_facet_values({name: sorted(found)})
        return [v for v in values if v not in found]

    async def search(self, query: Query, request: Request | None = None) -> dict:
        """Queue ``query`` with the request's deadline (``--request-timeout``) and await it, dropping it unencoded
        if the client leaves first (499) or the deadline passes first (503); a full queue is a 503 at once."""
        deadline = arrival(request) + self.config.request_timeout
        (response,) = await outcome(self.engine, [self.engine.submit(query, deadline)], request, deadline)
        results = [
            {
                "id": h.id,
                "score": h.score,
                "caption": h.caption,
                "image_url": image_url(h.id),
                "attributes": {k: str(v) for k, v in h.attributes.items()},
            }
            for h in response.results
        ]
        return {"query": response.query, "results": results, "seconds": response.seconds, **response.extra}

    async def pixels(self, upload: UploadFile | str):
        """The upload decoded and preprocessed in a worker thread (never on the event loop, never under the model).

        A part sent without a filename (as OpenAPI clients send a binary property) arrives as text that Starlette
        decoded as UTF-8 or, failing that, Latin-1; both are undone here to get the bytes back."""
        self.engine.check_room(images=1)  # a search the queue will refuse is refused before the decoding
        data = raw_part_bytes(upload) if isinstance(upload, str) else await upload.read()
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


def raw_part_bytes(text: str) -> bytes:
    """A multipart part sent without a filename arrives as text that Starlette decoded: its bytes back."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


__all__ = ["SHOWN_VALUES", "Service", "image_url", "raw_part_bytes"]
