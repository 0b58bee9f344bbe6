"""Catalogue writes for the HTTP API: an item's image decoded off the event loop (an upload, or a file under
``--images-dir``: the server fetches nothing), encoded by the query engine at write priority, written through the
store pool (upsert, flush, a strong read: ``store/items.py``), and the engine's cached facts updated at once.

Nothing here waits on the event loop: decoding runs in the thread pool, encoding on the model thread, writes in
the store pool. An uploaded image is kept (content-addressed, ``upload-<sha256>.<format>``) in ``--images-dir``
when the server has one, so ``/images/{id}`` serves it; otherwise the item's path is empty.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import uuid
from pathlib import Path

import numpy as np
from fastapi import HTTPException, Request
from PIL import Image
from starlette.concurrency import run_in_threadpool

from fashion_retrieval.data.images import API_MAX_PIXELS, open_image
from fashion_retrieval.serve.waiting import outcome
from fashion_retrieval.store.items import (
    ItemWriter,
    NewItem,
    WriteResult,
    check_attributes,
    check_caption,
    check_id,
)

log = logging.getLogger(__name__)


class CatalogueWriter:
    """What the write routes share: item checks against the collection's schema, images, and the writes."""

    def __init__(self, engine, config, metrics=None) -> None:
        store = engine.searcher.store
        self.engine, self.config, self.metrics = engine, config, metrics
        self.writer = ItemWriter(store) if store.writable else None
        self.fields = list(engine.attributes)
        self.encode_caption = store.has_field("text")
        self.preprocess = engine.searcher.encoder.preprocess

    # -- items ----------------------------------------------------------------------------------------
    def new_item(self, item_id: object, caption: object, attributes: object) -> NewItem:
        """A checked item without its image yet (``ItemError``, a 400, names what is wrong)."""
        return NewItem(
            check_id(item_id),
            check_caption(caption),
            check_attributes(attributes, self.fields),
            encode_caption=self.encode_caption,
        )

    def checked_patch(self, attributes: object) -> dict[str, str]:
        clean = check_attributes(attributes, self.fields, complete=False)
        if not clean:
            raise HTTPException(422, "a patch needs at least one attribute")
        return clean

    # -- images ---------------------------------------------------------------------------------------
    async def add_upload(self, item: NewItem, data: bytes) -> None:
        """Decode an uploaded image into ``item`` (and keep the file when there is an --images-dir)."""
        if len(data) > self.config.max_upload_bytes:
            raise HTTPException(413, f"image over the {self.config.max_upload_bytes // (1024 * 1024)} MB limit")
        if not data:
            raise HTTPException(422, "the uploaded image is empty")
        item.image, item.path = await run_in_threadpool(self._decode_upload, data)

    async def add_file(self, item: NewItem, given: str) -> None:
        """Decode an image file under --images-dir into ``item``."""
        path = self.image_file(given)
        item.image = await run_in_threadpool(self._decode_file, path)
        item.path = str(path)

    def image_file(self, given: str) -> Path:
        """A path inside --images-dir, or a 403/404/422 saying why not. The server fetches nothing."""
        if "://" in given:
            raise HTTPException(403, "image_path is a URL: the server fetches nothing; upload the image instead")
        if not self.config.images_dir:
            raise HTTPException(403, "this server reads no image paths (no --images-dir): upload the image instead")
        root = Path(self.config.images_dir).resolve()
        try:
            path = (root / given).resolve()
            inside, found = root in path.parents, path.is_file()
        except (OSError, ValueError):  # a NUL byte, a name too long
            raise HTTPException(404, "no such image file under --images-dir") from None
        if not inside:
            raise HTTPException(403, "image_path points outside --images-dir")
        if not found:
            raise HTTPException(404, "no such image file under --images-dir")
        return path

    def _decode_upload(self, data: bytes) -> tuple[np.ndarray, str]:
        # decoded as `embed` decodes catalogue images (no reduced JPEG decoding unless the model asks for it), so an
        # item added here gets the vector `embed` would give it
        pixels = self.preprocess(open_image(data, max_pixels=API_MAX_PIXELS, reduce_to=self.preprocess.reduce_to))
        return pixels, self._keep(data)

    def _decode_file(self, path: Path) -> np.ndarray:
        return self.preprocess(open_image(path, reduce_to=self.preprocess.reduce_to))

    def _keep(self, data: bytes) -> str:
        """Store an upload in --images-dir under its content's hash (the same image twice is one file)."""
        if not self.config.images_dir:
            return ""
        with Image.open(io.BytesIO(data)) as image:
            kind = (image.format or "img").lower()
        path = Path(self.config.images_dir).resolve() / f"upload-{hashlib.sha256(data).hexdigest()[:40]}.{kind}"
        if path.is_file():
            return str(path)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        try:
            temporary.write_bytes(data)
            os.replace(temporary, path)  # whole or absent, before the row that names it is written
        except OSError as exc:  # the item is still written; only /images/{id} cannot serve it
            temporary.unlink(missing_ok=True)
            log.warning("could not keep an uploaded image in %s: %s", self.config.images_dir, exc)
            return ""
        return str(path)

    # -- writes ---------------------------------------------------------------------------------------
    async def upsert(self, items: list[NewItem], request: Request | None = None) -> list[WriteResult]:
        """Encode ``items`` (write priority) and upsert them; acknowledged once flushed and visible."""
        futures = []
        try:
            for item in items:
                futures.append(self.engine.submit_write(item))
        except Exception:
            for future in futures:
                future.cancel()
            raise
        vectors = await outcome(self.engine, futures, request)
        results = await asyncio.wrap_future(self.engine.store_call(self.writer.upsert, items, vectors))
        created = sum(result.status == "created" for result in results)
        self.engine.note_writes([item.attributes for item in items], added=created, example=items[0].id)
        self._count("upsert", len(results))
        return results

    async def patch(self, item_id: str, attributes: dict[str, str]) -> WriteResult:
        result = await asyncio.wrap_future(self.engine.store_call(self.writer.patch, item_id, attributes))
        self.engine.note_writes([attributes])
        self._count("patch", 1)
        return result

    async def delete(self, ids: list[str]) -> list[WriteResult | None]:
        results = await asyncio.wrap_future(self.engine.store_call(self.writer.delete, ids))
        deleted = sum(result is not None for result in results)
        self.engine.note_writes([], added=-deleted)
        self._count("delete", deleted)
        return results

    def _count(self, op: str, n: int) -> None:
        if self.metrics is not None and n:
            self.metrics.items_written.labels(op).inc(n)


__all__ = ["CatalogueWriter"]
