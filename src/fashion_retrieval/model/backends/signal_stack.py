"""Keep the calling thread's alternate signal stack across OpenVINO calls that replace it.

OpenVINO's CPU plugin (2026.4) installs an alternate signal stack of its own (11,568 bytes) on the thread that
compiles a model and leaves it there: measured in one process, the main thread's stack moved from faulthandler's
16,880 bytes to such a buffer, then to another one at the next compile. A signal later delivered on a stale one
cannot be handled: the kernel kills the process with SIGSEGV (SI_KERNEL), without faulthandler's traceback. torch's
DataLoader installs its SIGCHLD handler with SA_ONSTACK, so the next child process that exits (a decoding worker,
any subprocess) took down a process that had compiled an OpenVINO model and used ``--workers``. Putting the caller's
stack back after the call leaves every handler a stack that stays valid.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

SS_DISABLE = 2  # <signal.h>: the only flag sigaltstack() accepts when a stack is set


class _Stack(ctypes.Structure):  # stack_t of <signal.h>
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    def key(self) -> tuple:
        return (self.ss_sp, self.ss_flags & SS_DISABLE, self.ss_size)


def _sigaltstack():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).sigaltstack
    except (OSError, AttributeError):
        return None


def current_signal_stack() -> _Stack | None:
    """The calling thread's alternate signal stack, or None where it cannot be read (not Linux)."""
    sigaltstack = _sigaltstack()
    stack = _Stack()
    if sigaltstack is None or sigaltstack(None, ctypes.byref(stack)) != 0:
        return None
    return stack


@contextmanager
def keep_signal_stack() -> Iterator[None]:
    """Run the block, then give the calling thread back the alternate signal stack it had before (Linux)."""
    saved = current_signal_stack()
    try:
        yield
    finally:
        now = current_signal_stack()
        if saved is not None and now is not None and now.key() != saved.key():
            saved.ss_flags &= SS_DISABLE
            if _sigaltstack()(ctypes.byref(saved), None) == 0:
                log.debug("the runtime's alternate signal stack (%d bytes) replaced by the caller's again", now.ss_size)


__all__ = ["current_signal_stack", "keep_signal_stack"]
