"""The HTTP/1.1 connection, guarded: uvicorn's httptools protocol with what it lacks (measured, DESIGN.md).

- A request-header timeout: a connection that has not sent a complete request line and headers within
  ``header_timeout`` seconds of connecting (or of the first byte of its next request) is answered 408 and closed.
  Uvicorn keeps such a connection open for as long as the client likes (3,000 were held for 40 s and more).
  Between requests uvicorn's keep-alive timeout (``--keep-alive``) closes an idle connection.
- A cap on the request line and headers: past ``max_header_bytes``, 431 and close (httptools has no cap;
  uvicorn's ``h11_max_incomplete_event_size`` applies only to its h11 protocol).
- A lingering close: when the app answers before the request body has arrived (an early 413, a 408, a 401) and
  the connection is to close, the answer is sent, our side is shut for writing, and what the client still sends is
  read and discarded, for up to ``linger_seconds`` and ``linger_bytes``, before the socket closes. A client that
  writes its whole body before reading (Python's urllib) then reads the answer instead of "connection reset by
  peer"; closing at once with unread data makes the kernel send a reset.

``serve --workers N`` imports this class by name in each worker, so its settings travel in an environment variable.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import asdict, dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

LIMITS_ENV = "FASHION_RETRIEVAL_CONNECTION_LIMITS"
PROTOCOL = "fashion_retrieval.serve.protocol:GuardedHttpToolsProtocol"  # uvicorn's ``http=`` by name


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0
    max_header_bytes: int = 16 * 1024  # request line + headers, as nginx's large_client_header_buffers allow
    linger_seconds: float = 10.0
    linger_bytes: int = 128 * 1024 * 1024

    def to_environment(self) -> None:
        os.environ[LIMITS_ENV] = json.dumps(asdict(self))

    @classmethod
    def from_environment(cls) -> ConnectionLimits:
        raw = os.environ.get(LIMITS_ENV)
        return cls(**json.loads(raw)) if raw else cls()


def _refusal(status: int, reason: str) -> bytes:
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(reason)}\r\nconnection: close\r\n\r\n{reason}"
    ).encode("ascii")


class _LingeringTransport:
    """The connection's transport as uvicorn's request cycle sees it: ``close()`` goes through the protocol, which
    lingers when the request body is still arriving; everything else is the real transport's."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpToolsProtocol) -> None:
        self._transport, self._protocol = transport, protocol

    def __getattr__(self, name: str):
        return getattr(self._transport, name)

    def close(self) -> None:
        self._protocol.close_connection()

    def is_closing(self) -> bool:
        return self._transport.is_closing() or self._protocol.lingering


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout, a header size cap and a lingering close."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limits = ConnectionLimits.from_environment()
        self._raw_transport: asyncio.Transport | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0  # raw bytes received while a request's headers are incomplete
        self._header_size = 0  # the current request's line and headers, as parsed
        self._reading_headers = True
        self._refused = False
        self._linger_timer: asyncio.TimerHandle | None = None
        self._linger_left = 0
        self.lingering = False

    # -- connection --------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._raw_transport = transport
        self.transport = _LingeringTransport(transport, self)  # type: ignore[assignment]
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._header_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.lingering:  # the rest of a body nobody will read
            self._linger_left -= len(data)
            if self._linger_left <= 0:
                self._raw_transport.close()
            return
        if self._refused:
            return
        if self._reading_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        # headers still incomplete after this much (the parser buffers a header until it ends): refuse
        if self._reading_headers and self._header_bytes > self.limits.max_header_bytes:
            self._refuse(431, "Request Header Fields Too Large")

    def eof_received(self) -> bool | None:
        if self.lingering:  # the client has sent everything and read the answer: done
            self._raw_transport.close()
        return super().eof_received()

    # -- the parser's callbacks ----------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_headers = True
        self._header_size = 0
        self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._add_header_size(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._add_header_size(len(name) + len(value) + 4)

    def _add_header_size(self, size: int) -> None:
        # headers that arrive whole in one read: counted as parsed (the raw count sees them only across reads)
        self._header_size += size
        if self._header_size > self.limits.max_header_bytes:
            self._refuse(431, "Request Header Fields Too Large")

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._header_bytes = 0
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if not self._refused:  # a refused request never reaches the app
            super().on_headers_complete()

    # -- timeouts and closing ------------------------------------------------------------------------------
    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.limits.header_timeout, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._reading_headers:
            self._refuse(408, "Request Timeout")

    def _refuse(self, status: int, reason: str) -> None:
        self._refused = True
        transport = self._raw_transport
        if transport is not None and not transport.is_closing():
            transport.write(_refusal(status, reason))
            transport.close()

    def close_connection(self) -> None:
        """Close, or linger first when the app answered while the request body was still on its way."""
        transport, cycle = self._raw_transport, self.cycle
        if transport is None or transport.is_closing() or self.lingering:
            return
        if cycle is None or not cycle.more_body or cycle.disconnected or not transport.can_write_eof():
            transport.close()
            return
        self.lingering = True
        self._linger_left = self.limits.linger_bytes
        transport.write_eof()  # the answer is complete: the client may read it while it finishes sending
        self.flow.resume_reading()
        self._linger_timer = self.loop.call_later(self.limits.linger_seconds, transport.close)


__all__ = ["LIMITS_ENV", "PROTOCOL", "ConnectionLimits", "GuardedHttpToolsProtocol"]
