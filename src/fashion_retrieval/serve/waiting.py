"""Waiting for the engine on the event loop, while watching the client and the request's deadline.

A route awaits the engine's futures here. If the client disconnects first, or the deadline passes first, the work
the model has not started is dropped (the engine counts it: abandoned, expired) and is never encoded; work it has
started finishes (a search is answered to nobody, an item's vectors are not used: nothing is written).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

from fastapi import HTTPException, Request

from fashion_retrieval.serve.scheduler import Expired

CLIENT_CLOSED = 499  # nginx's status for "the client closed the request": logged, never seen by the client


async def client_gone(request: Request) -> None:
    """Returns when the client disconnects. Only once the body has been read (the routes' parameters read it):
    from then on the server's ``receive`` waits for the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def arrival(request: Request | None) -> float:
    """When the request arrived (``time.monotonic()``, marked by the outermost middleware), so a deadline covers
    the upload and its decoding too; now for a request that came another way."""
    arrived = request.scope.get("state", {}).get("arrived") if request is not None else None
    return arrived if arrived is not None else time.monotonic()


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # read, so asyncio does not log it as never retrieved


async def outcome(
    engine, futures: list[concurrent.futures.Future], request: Request | None, deadline: float | None = None
) -> list:
    """The futures' results. The client leaving first is a 499 (when the model had not started some of the work),
    the deadline (``time.monotonic()``) passing first a 503 with Retry-After: an answer never comes after the
    deadline (work the model already has finishes, and is dropped)."""
    together = asyncio.gather(*(asyncio.wrap_future(future) for future in futures))
    watcher = asyncio.ensure_future(client_gone(request)) if request is not None else None
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        waits = [together] if watcher is None else [together, watcher]
        try:
            done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the caller went away (a streamed batch whose client left): drop it all
            for future in futures:
                engine.abandon(future)
            together.add_done_callback(_retrieve)
            together.cancel()
            raise
        if together in done:
            return together.result()
        reason = "abandoned" if watcher is not None and watcher in done else "expired"
        dropped = [engine.abandon(future, reason) for future in futures]
        if any(dropped) or reason == "expired":
            together.add_done_callback(_retrieve)
            together.cancel()
            if reason == "abandoned":
                raise HTTPException(CLIENT_CLOSED, "the client closed the request")
            if not any(dropped):  # the model had it, but its answer would come after the deadline: a 503 now
                engine.count_late()
            raise Expired(engine.retry_after())
        return await together  # the client left, but the model has all of it: it finishes soon
    finally:
        if watcher is not None:
            watcher.cancel()


__all__ = ["CLIENT_CLOSED", "arrival", "client_gone", "outcome"]
