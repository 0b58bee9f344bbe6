"""The query engine between the HTTP API and the searcher: a queue, one model worker, dynamic batching.

Requests are queued as ``Query`` values. One worker thread owns the model: it takes what is waiting (up to
``max_batch`` queries, of which at most ``max_image_batch`` carry an image, waiting at most ``max_wait_ms``
for more), encodes the texts of all of them in one length-sorted batch and the images in one batch, and
hands each query to the search pool, which runs its store search while the worker encodes the next batch.
The search pool has as many threads as the store says it can serve at once (a Milvus Lite file: 1; a
Milvus server: several). Nothing here runs on the event loop: callers await the returned futures.

Under no load a request is encoded at once (no waiting for company); under load, requests that arrive while
the model is busy form the next batch: the batch size follows the load, as in TEI or Triton's dynamic batcher.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass

from fashion_retrieval.search.queries import Query, SearchResponse

log = logging.getLogger(__name__)

# Measured on 2 CPU cores with a BLIP-base-sized model (benchmarks/serve_load.py): waiting for company costs
# a lone request its full wait and buys nothing the queue does not already give under load, so 0 on CPU. On
# a GPU a forward of 64 costs about what a forward of 1 does: waiting a few ms to fill a batch pays.
DEFAULTS = {"cpu": {"max_batch": 32, "max_image_batch": 4, "max_wait_ms": 0.0}}
DEFAULTS["cuda"] = {"max_batch": 128, "max_image_batch": 64, "max_wait_ms": 5.0}
REFRESH_SECONDS = 10.0
MODEL_NICE = 5  # CFS weight 1024 vs 335: the event loop wins the cores when it has work


@dataclass(frozen=True)
class EngineSettings:
    max_batch: int = 32
    max_image_batch: int = 4
    max_wait_ms: float = 0.0

    @classmethod
    def for_device(cls, device_type: str, **overrides: float | None) -> EngineSettings:
        values = dict(DEFAULTS.get(device_type, DEFAULTS["cpu"]))
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        if settings.max_batch < 1 or settings.max_image_batch < 1 or settings.max_wait_ms < 0:
            raise ValueError("--max-batch and the image batch must be at least 1, --max-wait-ms at least 0")
        return settings


@dataclass
class _Job:
    query: Query
    future: concurrent.futures.Future


@dataclass
class _Call:
    """Other model work (a composed caption, a rerank) asked for by a query while it runs in the store pool."""

    function: object
    args: tuple
    future: concurrent.futures.Future


_STOP = object()


class QueryEngine:
    """Owns the searcher's model and store access for a server; thread-safe ``submit``."""

    def __init__(self, searcher, settings: EngineSettings, metrics=None) -> None:
        self.searcher, self.settings, self.metrics = searcher, settings, metrics
        self._queue: queue.Queue = queue.Queue()
        self._held: deque[_Job] = deque()  # taken from the queue but left for the next batch (image cap)
        self.store_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, int(getattr(searcher.store, "max_concurrency", 1))), thread_name_prefix="store"
        )
        self.batches = 0
        self.queries = 0
        self._closed = threading.Event()
        self._worker = threading.Thread(target=self._work, name="model-worker", daemon=True)
        self._refresher = threading.Thread(target=self._refresh_loop, name="store-refresh", daemon=True)
        self.count: int | None = None
        self.facets: dict[str, list[str]] = {}
        self.attributes: list[str] = []
        self.example_id: str | None = None
        self.version = 0  # bumped when the cached facets change (the OpenAPI document lists them)

    # -- life cycle -----------------------------------------------------------------------------------
    def start(self) -> QueryEngine:
        """Read the store's size, fields and facets once (so the API answers from memory), then serve."""
        self.attributes = list(self.searcher.store.attributes())
        self.refresh()
        self.searcher.on_model = self.on_model
        self._worker.start()
        self._refresher.start()
        log.info(
            "query engine: batches of up to %d queries (%d with images), waiting up to %g ms; %d store thread(s)",
            self.settings.max_batch,
            self.settings.max_image_batch,
            self.settings.max_wait_ms,
            self.store_pool._max_workers,
        )
        return self

    def close(self) -> None:
        self.searcher.on_model = lambda function, *args: function(*args)
        self._closed.set()
        self._queue.put(_STOP)
        if self._worker.is_alive():
            self._worker.join(timeout=30)
        self.store_pool.shutdown(wait=True, cancel_futures=True)

    def refresh(self) -> None:
        """Cached store facts (count, facets), refreshed in the background: health and facets never wait."""
        store = self.searcher.store
        self.count = self.store_pool.submit(store.count).result()
        facets = self.store_pool.submit(store.facets).result()
        if facets != self.facets:
            self.facets, self.version = facets, self.version + 1
        if self.example_id is None:
            self.example_id = next(iter(self.store_pool.submit(store.some_ids, 1).result()), None)

    def _refresh_loop(self) -> None:
        while not self._closed.wait(REFRESH_SECONDS):
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - a store hiccup must not stop the server; say so
                log.warning("could not refresh the store's count and facets: %s", exc)

    # -- requests -------------------------------------------------------------------------------------
    def submit(self, query: Query) -> concurrent.futures.Future:
        """Queue a query; the future gives its ``SearchResponse`` (or raises its error)."""
        if self._closed.is_set():
            raise RuntimeError("the query engine is closed")
        self.searcher.check(query)  # what the model cannot do is refused here, not inside a batch
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put(_Job(query, future))
        if self.metrics is not None:
            self.metrics.queue_depth.inc()
        return future

    def run(self, query: Query) -> SearchResponse:
        return self.submit(query).result()

    def on_model(self, function, *args):
        """Run ``function(*args)`` on the model thread and wait for it (from a store thread; never from the model
        thread itself). One thread runs torch: OpenMP gives each thread that runs torch a team of its own, and
        with more teams than cores it stops spinning between operations, which made every small one ~4x slower
        (measured: 18 -> 70 us per op, a caption 22 -> 31 ms)."""
        if threading.current_thread() is self._worker or not self._worker.is_alive():
            return function(*args)
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put(_Call(function, args, future))
        return future.result()

    def store_call(self, function, *args) -> concurrent.futures.Future:
        """Any other store access (items, images) through the same pool, so the store's limit holds."""
        return self.store_pool.submit(function, *args)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize() + len(self._held)

    def describe(self) -> dict:
        return {
            "pid": os.getpid(),  # which server process answered (serve --workers N)
            "max_batch": self.settings.max_batch,
            "max_image_batch": self.settings.max_image_batch,
            "max_wait_ms": self.settings.max_wait_ms,
            "store_threads": self.store_pool._max_workers,
            "queue_depth": self.queue_depth,
            "batches": self.batches,
            "queries": self.queries,
        }

    # -- the model worker -----------------------------------------------------------------------------
    def _next(self, timeout: float | None) -> _Job | object | None:
        if self._held:
            return self._held.popleft()
        try:
            return self._queue.get(timeout=timeout) if timeout is None or timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def _take_batch(self) -> list[_Job] | None:
        first = self._next(None)
        while isinstance(first, _Call):  # other model work first: a query in the store pool waits on it
            self._call(first)
            first = self._next(None)
        if first is _STOP:
            return None
        batch, images = [first], len(first.query.pixels())
        deadline = time.monotonic() + self.settings.max_wait_ms / 1000
        while len(batch) < self.settings.max_batch:
            job = self._next(deadline - time.monotonic())
            if job is None:
                break
            if job is _STOP:
                self._queue.put(_STOP)
                break
            if isinstance(job, _Call):
                self._call(job)
                continue
            pixels = len(job.query.pixels())
            if pixels and images + pixels > self.settings.max_image_batch:
                self._held.append(job)  # first in the next batch
                break
            batch.append(job)
            images += pixels
        return batch

    @staticmethod
    def _call(call: _Call) -> None:
        if not call.future.set_running_or_notify_cancel():
            return
        try:
            call.future.set_result(call.function(*call.args))
        except Exception as exc:  # noqa: BLE001 - delivered to the waiting query
            call.future.set_exception(exc)

    def _work(self) -> None:
        if self.searcher.encoder.device.type == "cpu":
            _yield_to_the_event_loop()
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if self.metrics is not None:
                self.metrics.queue_depth.dec(len(batch))
            live = [job for job in batch if job.future.set_running_or_notify_cancel()]
            if live:
                self._encode_and_dispatch(live)

    def _encode_and_dispatch(self, batch: list[_Job]) -> None:
        started = time.perf_counter()
        try:
            vectors = self.searcher.encode_queries([job.query for job in batch])
        except Exception as exc:  # noqa: BLE001 - the batch's callers get the error; the worker lives on
            log.exception("encoding a batch of %d queries failed", len(batch))
            for job in batch:
                job.future.set_exception(exc)
            return
        seconds = time.perf_counter() - started
        self.batches += 1
        self.queries += len(batch)
        if self.metrics is not None:
            kind = "image" if any(job.query.pixels() for job in batch) else "text"
            self.metrics.encode_seconds.labels(kind).observe(seconds)
            self.metrics.batch_size.labels(kind).observe(len(batch))
        for job, (texts, images) in zip(batch, vectors, strict=True):
            self.store_pool.submit(self._search, job, texts, images)

    def _search(self, job: _Job, texts, images) -> None:
        started = time.perf_counter()
        try:
            job.future.set_result(job.query.execute(self.searcher, texts, images))
        except Exception as exc:  # noqa: BLE001 - delivered to the caller, who turns it into a 4xx
            job.future.set_exception(exc)
        finally:
            if self.metrics is not None:
                self.metrics.search_seconds.observe(time.perf_counter() - started)


def in_fresh_thread(function, *args) -> concurrent.futures.Future:
    """Run ``function(*args)`` on a new thread that ends with it: for loading the model, whose first forward
    passes (the precision probe, the fast-path checks) would otherwise leave an OpenMP team behind in a
    long-lived thread and slow the model thread down (see ``QueryEngine.on_model``)."""
    future: concurrent.futures.Future = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(function(*args))
        except BaseException as exc:  # noqa: BLE001 - delivered to whoever waits on the future
            future.set_exception(exc)

    threading.Thread(target=run, name="model-loader", daemon=True).start()
    return future


def _yield_to_the_event_loop(nice: int = MODEL_NICE) -> None:
    """Run the model (this thread, and the OpenMP threads it starts, which inherit the value) at a lower
    priority than the event loop: when the model keeps every core busy, health checks, uploads and static
    files are still served at once, and the model loses nothing when the rest is idle (Linux per-thread nice;
    raising one's own nice needs no privilege)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError) as exc:  # not Linux: the model shares the cores evenly
        log.debug("could not lower the model worker's priority: %s", exc)


__all__ = ["EngineSettings", "QueryEngine", "in_fresh_thread"]
