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


__all__ = ["configure_logging"]
