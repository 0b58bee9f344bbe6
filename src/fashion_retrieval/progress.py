"""Progress for long work: a tqdm bar on a terminal (or a notebook), a log line every few seconds otherwise.

Without a terminal (CI, a log file, ``make demo | tee``) thousands of bar redraws are noise; a periodic
``logging`` line says the same (done, total, rate, time left) and lands wherever the logs go.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("fashion_retrieval.progress")

LOG_EVERY_SECONDS = 5.0


def _interactive() -> bool:
    return sys.stderr.isatty() or "ipykernel" in sys.modules


class LogProgress:
    """The part of tqdm's interface the library uses, reporting through ``logging`` at most every few seconds."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int = 0, every: float = LOG_EVERY_SECONDS):
        self.total, self.desc, self.unit, self.n, self.every = total, desc, unit, initial, every
        self.started = self.last = time.monotonic()
        self.initial = initial
        self.postfix: dict[str, Any] = {}

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._report(now)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def _report(self, now: float, final: bool = False) -> None:
        done = self.n - self.initial
        rate = done / max(now - self.started, 1e-9)
        parts = [f"{self.desc}: {self.n}" + (f"/{self.total}" if self.total else "") + f" {self.unit}"]
        if self.total:
            parts.append(f"{self.n / self.total:.0%}")
        parts.append(f"{rate:.1f} {self.unit}/s")
        if self.total and rate > 0 and not final:
            parts.append(f"{(self.total - self.n) / rate:.0f} s left")
        if final:
            parts.append(f"done in {now - self.started:.1f} s")
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        log.info(", ".join(parts))

    def close(self) -> None:
        if self.n > self.initial:
            self._report(time.monotonic(), final=True)

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(total: int | None, desc: str, unit: str = "it", *, enabled: bool = True, initial: int = 0):
    """A progress reporter: tqdm on a terminal, ``LogProgress`` elsewhere, a silent tqdm when not ``enabled``."""
    from tqdm.auto import tqdm

    if not enabled:
        return tqdm(total=total, disable=True)
    if _interactive():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, smoothing=0.1)
    return LogProgress(total, desc, unit, initial)


__all__ = ["LogProgress", "progress_bar"]
