"""Limits enforced before any work is done: body size (declared or streamed), body arrival time, and
uploads kept in memory.

A request whose ``Content-Length`` is over the limit is answered 413 without reading its body; a chunked body
is cut off as soon as it passes the limit; a body that trickles in slower than ``body_timeout`` is answered 408.
Multipart uploads are parsed in memory: Starlette spools file parts to a temporary file beyond
``MultiPartParser.spool_max_size``, which is raised to the upload limit, and the body limit guarantees no part
is ever larger, so nothing is written to disk.
"""

from __future__ import annotations

import asyncio
import json

from starlette.exceptions import HTTPException

MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and the small form fields beside the file
BATCH_PATH = "/api/items:batch"  # NDJSON imports: larger bodies (--max-batch-mb), behind the admin key


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the {limit:,} byte limit")


class BodyTimeout(HTTPException):
    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"the request body did not arrive within {seconds:g} s")


def keep_uploads_in_memory(max_upload_bytes: int) -> None:
    """Raise Starlette's spooling threshold (a documented class attribute) to the upload limit."""
    from starlette.formparsers import MultiPartParser

    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, max_upload_bytes + MULTIPART_OVERHEAD)


class BodyLimitMiddleware:
    """Pure ASGI: caps request bodies (JSON and others at ``json_limit``, multipart at ``upload_limit``, a batch
    import at ``batch_limit``)."""

    def __init__(self, app, *, json_limit: int, upload_limit: int, body_timeout: float, batch_limit: int = 0) -> None:
        self.app = app
        self.json_limit, self.upload_limit, self.body_timeout = json_limit, upload_limit, body_timeout
        self.batch_limit = batch_limit or json_limit

    def limit_for(self, scope) -> int:
        if scope.get("path") == BATCH_PATH:
            return self.batch_limit
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"").lower()
        return self.upload_limit + MULTIPART_OVERHEAD if content_type.startswith(b"multipart/") else self.json_limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _answer(send, 400, "invalid Content-Length header")
                return
            if int(declared) > limit:
                await _answer(send, 413, BodyTooLarge(limit).detail)
                return
        received = 0
        started = complete = False

        async def limited_receive():
            nonlocal received, complete
            if complete:  # after the body only the disconnect comes, whenever it comes (serve/waiting.py waits)
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except TimeoutError:
                raise BodyTimeout(self.body_timeout) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
                complete = not message.get("more_body", False)
            return message

        async def tracked_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except (BodyTooLarge, BodyTimeout) as exc:  # raised past the app's own handlers (e.g. in middleware)
            if not started:
                await _answer(send, exc.status_code, exc.detail)


async def _answer(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    # the unread body stays on the wire: do not reuse this connection (serve/protocol.py reads and discards it
    # for a while before closing, so a client that sends its whole body before reading still reads this answer)
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ["BodyLimitMiddleware", "BodyTimeout", "BodyTooLarge", "keep_uploads_in_memory"]
