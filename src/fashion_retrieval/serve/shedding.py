"""Shed load before reading it: an image search that the engine's queue has no room for is answered 503 with
Retry-After before its upload is read or parsed.

Refusing costs next to nothing this way. Parsing each refused multipart upload first cost the event loop a few
milliseconds a request; under a flood of image searches that work took the cores the model needed, batches that
take 0.2 s took 4 s, and the server refused nearly everything (measured on 2 cores, tests/serve/test_overload.py).
The connection is closed after the answer: the unread upload is drained by the connection's lingering close.
"""

from __future__ import annotations

import json

from fashion_retrieval.serve.scheduler import Overloaded

IMAGE_SEARCHES = frozenset({"/api/search/image", "/api/search/hybrid"})  # each carries one image


class ShedLoadMiddleware:
    """Pure ASGI: a POST to an image search gets 503 + Retry-After at once when the queue cannot take it."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in IMAGE_SEARCHES:
            service = getattr(scope["app"].state, "service", None)
            try:
                if service is not None:
                    service.engine.check_room(images=1)
            except Overloaded as exc:
                await _busy(send, exc)
                return
        await self.app(scope, receive, send)


async def _busy(send, exc: Overloaded) -> None:
    body = json.dumps({"detail": str(exc)}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(exc.retry_after).encode()),
        (b"connection", b"close"),  # the upload was not read
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ["IMAGE_SEARCHES", "ShedLoadMiddleware"]
