"""The query engine between the HTTP API and the searcher: a bounded queue, one model worker, dynamic batching.

Requests are queued (``serve/scheduler.py``: searches first, item writes when no search waits, a bound on the
waiting work, deadlines). An item's forward pauses between the model's layers for the searches that arrive while it
runs (``FashionEmbeddingModel.pausable``): a shopper waits for one layer of an import, not for a whole image.
One worker thread owns the model: it takes what is waiting (up to ``max_batch``
queries, of which at most ``max_image_batch`` carry an image, waiting at most ``max_wait_ms`` for more),
encodes the texts of all of them in one length-sorted batch and the images in one batch, and hands each query
to the search pool, which runs its store search while the worker encodes the next batch; an item's vectors go
back to whoever asked (the write path stores them). The search pool has as many threads as the store says it
can serve at once (a Milvus Lite file: 1; a Milvus server: several). Nothing here runs on the event loop:
callers await the returned futures.

Under no load a request is encoded at once (no waiting for company); under load, requests that arrive while
the model is busy form the next batch: the batch size follows the load, as in TEI or Triton's dynamic batcher.
Past ``max_queue`` a search is refused at once (503 + Retry-After upstream), one that cannot be encoded before
its deadline is dropped unencoded, and one whose client left is skipped: the engine counts each.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import threading
import time

import numpy as np

from fashion_retrieval.search.queries import Query, SearchResponse
from fashion_retrieval.serve.engine_settings import EngineSettings
from fashion_retrieval.serve.scheduler import Batch, Call, Expired, Job, JobQueue, Overloaded, cost_of
from fashion_retrieval.store.items import NewItem

log = logging.getLogger(__name__)

REFRESH_SECONDS = 10.0
RESCAN_SECONDS = 300.0  # the facets are scanned again at least this often (values that deletes left unused)
MODEL_NICE = 5  # CFS weight 1024 vs 335: the event loop wins the cores when it has work
# Weight of the newest batch in the moving average of encode seconds per unit of cost: high, so that the estimate
# recovers within a few batches after a spell of contention (a stale, slow estimate expires queries needlessly).
RATE_SMOOTHING = 0.5


class QueryEngine:
    """Owns the searcher's model and store access for a server; thread-safe ``submit``."""

    def __init__(self, searcher, settings: EngineSettings, metrics=None) -> None:
        self.searcher, self.settings, self.metrics = searcher, settings, metrics
        self._queue = JobQueue(settings.max_queue, settings.max_write_queue, settings.write_wait)
        self.store_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, int(getattr(searcher.store, "max_concurrency", 1))), thread_name_prefix="store"
        )
        self.batches = self.queries = self.items = 0
        self._paused_seconds = 0.0  # time spent on searches run at the pause points of write batches
        self.shed = self.expired = self.abandoned = self.late = 0
        self._closed = threading.Event()
        self._worker = threading.Thread(target=self._work, name="model-worker", daemon=True)
        self._refresher = threading.Thread(target=self._refresh_loop, name="store-refresh", daemon=True)
        self.count: int | None = None
        self.facets: dict[str, list[str]] = {}
        self.attributes: list[str] = []
        self.example_id: str | None = None
        self.version = 0  # bumped when the cached facets change (the OpenAPI document lists them)
        self._scanned: tuple[int | None, float] = (None, 0.0)  # the count the facets were scanned at, and when

    # -- life cycle -----------------------------------------------------------------------------------
    def start(self) -> QueryEngine:
        """Read the store's size, fields and facets once (so the API answers from memory), then serve."""
        self.attributes = list(self.searcher.store.attributes())
        self.refresh()
        self.searcher.on_model = self.on_model
        self._worker.start()
        self._refresher.start()
        log.info(
            "query engine: batches of up to %d queries (%d with images), waiting up to %g ms; %d store thread(s); "
            "searches refused past %g queued image queries; items encoded %d at a time when no search waits",
            self.settings.max_batch,
            self.settings.max_image_batch,
            self.settings.max_wait_ms,
            self.store_pool._max_workers,
            self.settings.max_queue,
            self.settings.write_batch,
        )
        return self

    def close(self) -> None:
        self.searcher.on_model = lambda function, *args: function(*args)
        self._closed.set()
        for left in self._queue.close():
            if left.future.set_running_or_notify_cancel():
                left.future.set_exception(RuntimeError("the query engine is closed"))
        if self._worker.is_alive():
            self._worker.join(timeout=30)
        self.store_pool.shutdown(wait=True, cancel_futures=True)

    def refresh(self) -> None:
        """Cached store facts (count, facets), refreshed in the background: health and facets never wait. The
        facets are scanned again when the count moved other than by this process's writes (another worker, the
        CLI), and every RESCAN_SECONDS."""
        store = self.searcher.store
        count = self.store_pool.submit(store.count).result()
        scanned_count, scanned_at = self._scanned
        fresh = count != scanned_count or time.monotonic() - scanned_at > RESCAN_SECONDS
        facets = self.store_pool.submit(lambda: store.facets(fresh=fresh)).result()
        if fresh:
            self._scanned = (count, time.monotonic())
        self.count = count
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

    def note_writes(self, attributes: list[dict[str, str]], added: int = 0, example: str | None = None) -> None:
        """What this process just wrote, into the cached facts at once: new values of faceted fields (and so the
        OpenAPI document), the count; the store's own facet cache merged them too, so no rescan is due."""
        self.add_facet_values({name: [row[name] for row in attributes if name in row] for name in self.facets})
        self.count = (self.count or 0) + added
        scanned_count, scanned_at = self._scanned
        if scanned_count is not None:
            self._scanned = (scanned_count + added, scanned_at)
        self.example_id = self.example_id or example

    def add_facet_values(self, values: dict[str, list[str]]) -> None:
        """Values found in the store (written here, or by another process) that the cached facets lack."""
        facets = {name: list(known) for name, known in self.facets.items()}
        changed = False
        for name, new in values.items():
            added = set(new) - set(facets.get(name, ()))
            if name in facets and added:
                facets[name] = sorted({*facets[name], *added})
                changed = True
        if changed:
            self.facets, self.version = facets, self.version + 1

    # -- requests -------------------------------------------------------------------------------------
    def submit(self, query: Query, deadline: float | None = None) -> concurrent.futures.Future:
        """Queue a query; the future gives its ``SearchResponse`` (or raises its error). ``deadline``
        (time.monotonic()): dropped unencoded if the model cannot reach it by then. Raises ``Overloaded``."""
        self.searcher.check(query)  # what the model cannot do is refused here, not inside a batch
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            self._queue.put_search(Job(query, future, deadline=deadline))
        except Overloaded:
            self._count("shed")
            raise
        self._show_depth()
        return future

    def check_room(self, images: int = 1) -> None:
        """Refuse (``Overloaded``, counted as shed) a search with ``images`` images that the queue has no room for
        now, before its upload is decoded; ``submit`` checks again."""
        try:
            self._queue.check_room(float(images))
        except Overloaded:
            self._count("shed")
            raise

    def submit_write(self, item) -> concurrent.futures.Future:
        """Queue an item (``store.items.NewItem``) to encode at write priority; the future gives its
        (text vectors, image vectors). Raises ``Overloaded`` past the write queue's bound."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put_write(Job(item, future, write=True))
        return future

    def abandon(self, future: concurrent.futures.Future, reason: str = "abandoned") -> bool:
        """Drop queued work unencoded (its client left: ``abandoned``; its deadline passed: ``expired``).
        False when the model has it already: it finishes."""
        if future.cancel():
            self._count(reason)
            return True
        return False

    def count_late(self) -> None:
        """A search the model had already taken whose deadline passed before its answer: answered 503, counted."""
        self._count("late")

    def _count(self, reason: str) -> None:
        setattr(self, reason, getattr(self, reason) + 1)
        if self.metrics is not None:
            self.metrics.dropped.labels(reason).inc()

    def retry_after(self) -> int:
        return self._queue.retry_after()

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
        self._queue.put_call(Call(function, args, future))
        return future.result()

    def store_call(self, function, *args) -> concurrent.futures.Future:
        """Any other store access (items, images, writes) through the same pool, so the store's limit holds."""
        return self.store_pool.submit(function, *args)

    @property
    def queue_depth(self) -> int:
        return self._queue.depth[0]

    def _show_depth(self) -> None:
        if self.metrics is not None:
            searches, writes = self._queue.depth
            self.metrics.queue_depth.set(searches)
            self.metrics.write_queue_depth.set(writes)

    def describe(self) -> dict:
        searches, writes = self._queue.depth
        return {
            "pid": os.getpid(),  # which server process answered (serve --workers N)
            "max_batch": self.settings.max_batch,
            "max_image_batch": self.settings.max_image_batch,
            "max_wait_ms": self.settings.max_wait_ms,
            "max_queue": self.settings.max_queue,
            "store_threads": self.store_pool._max_workers,
            "queue_depth": searches,
            "write_queue_depth": writes,
            "batches": self.batches,
            "queries": self.queries,
            "items_encoded": self.items,
            "shed": self.shed,
            "expired": self.expired,
            "abandoned": self.abandoned,
            "late": self.late,
        }

    # -- the model worker -----------------------------------------------------------------------------
    @staticmethod
    def _call(call: Call) -> None:
        if not call.future.set_running_or_notify_cancel():
            return
        try:
            call.future.set_result(call.function(*call.args))
        except Exception as exc:  # noqa: BLE001 - delivered to the waiting query
            call.future.set_exception(exc)

    def _warm_up(self) -> None:
        """An image and a caption through the model before the first request, twice: the first forward pays one-off
        costs (oneDNN primitives, lazy initialisation) that a shopper should not, and the second one's time seeds the
        rate that deadlines and Retry-After are judged by (until then a batch is not known to be late)."""
        width, height = self.searcher.input_size
        probe = NewItem("warm-up", "a warm-up caption", {}, image=np.zeros((3, height, width), np.float32))
        try:
            self.searcher.encode_queries([probe])
            started = time.perf_counter()
            self.searcher.encode_queries([probe])
            self._learn_rate(time.perf_counter() - started, cost_of(probe))
        except Exception as exc:  # noqa: BLE001 - a model that cannot warm up fails on the first request, with its error
            log.warning("the model's warm-up failed: %s", exc)

    def _work(self) -> None:
        if self.searcher.encoder.device.type == "cpu":
            _yield_to_the_event_loop()
        self._warm_up()
        settings = self.settings
        pausable = self.searcher.encoder.can_pause
        if pausable:
            log.info("item writes pause between the model's layers for the searches that arrive meanwhile")
        while True:
            taken = self._queue.take(
                settings.max_batch,
                settings.max_image_batch,
                settings.write_batch,
                settings.max_wait_ms / 1000,
                pausable_writes=pausable,
            )
            if taken is None:
                return
            self._run(taken)

    def _run(self, taken: Call | Batch) -> None:
        if isinstance(taken, Call):
            self._call(taken)
            return
        self._show_depth()
        self._drop_expired(taken)
        live = [job for job in taken.jobs if job.future.set_running_or_notify_cancel()]
        if live:
            self._encode_and_dispatch(live)

    def _serve_waiting(self) -> None:
        """At a pause point of a write batch's forward (same thread): the calls and searches that arrived meanwhile
        run now, so a shopper waits for one layer of an import, not for its images."""
        if not self._queue.urgent:
            return
        started = time.perf_counter()
        settings = self.settings
        while (taken := self._queue.take_waiting(settings.max_batch, settings.max_image_batch)) is not None:
            self._run(taken)
        self._paused_seconds += time.perf_counter() - started

    def _drop_expired(self, batch: Batch) -> None:
        for job in batch.expired:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(Expired(self._queue.retry_after()))
                self._count("expired")

    def _encode_and_dispatch(self, batch: list[Job]) -> None:
        started, paused = time.perf_counter(), self._paused_seconds
        writes_only = all(job.write for job in batch)
        try:
            with self.searcher.encoder.pausable(self._serve_waiting) if writes_only else contextlib.nullcontext():
                vectors = self.searcher.encode_queries([job.work for job in batch])
        except Exception as exc:  # noqa: BLE001 - the batch's callers get the error; the worker lives on
            log.exception("encoding a batch of %d queries failed", len(batch))
            for job in batch:
                job.future.set_exception(exc)
            return
        seconds = time.perf_counter() - started - (self._paused_seconds - paused)  # the searches run inside: theirs
        self._learn_rate(seconds, sum(cost_of(job.work) for job in batch))
        searches = [job for job in batch if not job.write]
        self.batches += 1
        self.queries += len(searches)
        self.items += len(batch) - len(searches)
        if self.metrics is not None:
            kind = "write" if not searches else "image" if any(job.work.pixels() for job in searches) else "text"
            self.metrics.encode_seconds.labels(kind).observe(seconds)
            self.metrics.batch_size.labels(kind).observe(len(batch))
        for job, (texts, images) in zip(batch, vectors, strict=True):
            if job.write:
                job.future.set_result((texts, images))
            else:
                self.store_pool.submit(self._search, job, texts, images)

    def _learn_rate(self, seconds: float, cost: float) -> None:
        if cost <= 0:
            return
        rate, queue = seconds / cost, self._queue
        previous = queue.seconds_per_cost or rate
        queue.seconds_per_cost = (1 - RATE_SMOOTHING) * previous + RATE_SMOOTHING * rate

    def _search(self, job: Job, texts, images) -> None:
        started = time.perf_counter()
        try:
            job.future.set_result(job.work.execute(self.searcher, texts, images))
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


__all__ = ["EngineSettings", "Expired", "Overloaded", "QueryEngine", "in_fresh_thread"]
