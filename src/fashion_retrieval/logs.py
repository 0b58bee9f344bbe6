"""Logging set-up for the faces (CLI, server workers): the library itself only ever calls ``getLogger``."""

from __future__ import annotations

import logging
import sys


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (a test runner or a notebook may swap
    it; a handler holding the old, closed stream would fail on every later record)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; the property decides
        pass


class DropMessages(logging.Filter):
    """Drops a third-party logger's records that start with one of ``prefixes`` (and nothing else)."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


# Third-party lines that tell our users nothing, each dropped by its own logger and message only:
NOISE = {
    # Milvus Lite keeps no session timestamp for query iterators; pymilvus falls back to the client's clock and
    # warns on every iterator (facets, captions, ids). Harmless for a one-process Lite file.
    "pymilvus.orm.iterator": DropMessages("failed to get mvccTs from milvus server"),
}


def quiet_third_party_noise() -> None:
    """Install the narrow filters of ``NOISE`` (idempotent). For processes we own: the CLI and server workers."""
    for name, noise in NOISE.items():
        logger = logging.getLogger(name)
        if noise not in logger.filters:
            logger.addFilter(noise)


def configure_logging(*, verbose: bool = False, quiet: bool = False) -> None:
    """INFO from this library by default (its decisions), DEBUG with ``verbose``, WARNING with ``quiet``; other
    libraries at WARNING unless ``verbose``. Everything goes to stderr, so --json output on stdout stays clean."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("fashion_retrieval").setLevel(level)
    quiet_third_party_noise()


__all__ = ["configure_logging", "quiet_third_party_noise"]
