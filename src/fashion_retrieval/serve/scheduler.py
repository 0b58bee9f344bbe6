"""The query engine's queue: searches before item writes, a bound on the work waiting, deadlines, abandoned requests.

Three kinds of work wait for the one model thread:

- calls: model work that a running query asks for from a store thread (a composed caption, a rerank): first,
  since that query holds a store thread while it waits;
- searches: in arrival order, in batches of up to ``max_batch`` queries, of which ``max_image_batch`` with an image;
- writes (items to encode): in a batch of their own when no search waits, or once the oldest has waited
  ``write_wait`` seconds (an import never starves). With a model that can pause (``pausable_writes``: the engine's
  torch models), the searches that arrive while a write batch is encoded are taken at the forward's next pause
  point (``take_waiting``) and run first: a shopper waits for one layer of an import, not for its images.
  Without (exported towers run in one call), a due write instead rides at the head of a search batch, and a search
  waits for at most the write batch being encoded when it arrives.

Admission: a search costs what it encodes, in image queries (an image 1, a text ``TEXT_COST``). Past ``max_queue``
of waiting cost, a new search is refused at once (``Overloaded``, with how long the queue takes to drain); a
search whose deadline would pass before its batch is encoded is dropped unencoded (``Expired``). A job whose
future was cancelled (its client left) is skipped and its cost released at once.
"""

from __future__ import annotations

import concurrent.futures
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

# A caption costs ~1/30 of an image in a BLIP-base forward here (60 captions/s against 1.83 images/s batched,
# benchmarks/results/serve_load.json); 1/16 leaves room for composed queries that encode a few texts.
TEXT_COST = 1 / 16


class Overloaded(Exception):
    """The queue is full: the request is refused before any work (HTTP 503 with Retry-After)."""

    def __init__(self, what: str, retry_after: int) -> None:
        super().__init__(f"the server is busy ({what} queue full): retry in {retry_after} s")
        self.retry_after = retry_after


class Expired(Exception):
    """The request's deadline passed (or would pass) before the model reached it: dropped, never encoded."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("the server is busy: the request waited past its deadline and was dropped unencoded")
        self.retry_after = retry_after


def cost_of(work) -> float:
    return len(work.pixels()) + TEXT_COST * len(work.texts())


@dataclass(eq=False)
class Job:
    work: object  # a Query or a NewItem: ``texts()`` and ``pixels()`` say what to encode
    future: concurrent.futures.Future
    write: bool = False
    deadline: float | None = None  # time.monotonic() by which it must be encoded
    cost: float = 0.0
    queued: float = field(default_factory=time.monotonic)
    counted: bool = True  # its cost is in the queue's waiting cost


@dataclass(eq=False)
class Call:
    """Other model work (a composed caption, a rerank) asked for by a query while it runs in the store pool."""

    function: object
    args: tuple
    future: concurrent.futures.Future


@dataclass
class Batch:
    jobs: list[Job]
    expired: list[Job]


class JobQueue:
    """Thread-safe; ``take`` is called by the model thread only."""

    def __init__(self, max_queue: float, max_writes: int, write_wait: float) -> None:
        self.max_queue, self.max_writes, self.write_wait = max_queue, max_writes, write_wait
        self._cond = threading.Condition()
        self._searches: deque[Job] = deque()
        self._writes: deque[Job] = deque()
        self._calls: deque[Call] = deque()
        self.waiting_cost = 0.0
        self.seconds_per_cost = 0.0  # encode seconds per unit of cost (moving average, set by the engine)
        self._all_expired = False  # the last batch formed had only expired searches
        self.closed = False

    # -- producers ------------------------------------------------------------------------------------
    def check_room(self, cost: float) -> None:
        """Raise ``Overloaded`` if a search of ``cost`` would be refused now: a route asks before it decodes an
        upload, so a request that will be refused costs the server next to nothing."""
        if self._searches and self.waiting_cost + cost > self.max_queue:
            raise Overloaded("search", self.retry_after())

    def put_search(self, job: Job) -> None:
        job.cost = cost_of(job.work)
        with self._cond:
            self._check_open()
            self.check_room(job.cost)
            self._searches.append(job)
            self.waiting_cost += job.cost
            self._cond.notify()
        job.future.add_done_callback(lambda _: self._release(job))

    def put_write(self, job: Job) -> None:
        with self._cond:
            self._check_open()
            if len(self._writes) >= self.max_writes:
                raise Overloaded("write", max(1, math.ceil(len(self._writes) * self.seconds_per_cost)))
            self._writes.append(job)
            self._cond.notify()

    def put_call(self, call: Call) -> None:
        with self._cond:
            self._check_open()
            self._calls.append(call)
            self._cond.notify()

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("the query engine is closed")

    def _release(self, job: Job) -> None:
        """A search's future is done (cancelled by a client that left, or answered): its cost leaves the queue."""
        with self._cond:
            self._uncount(job)

    def _uncount(self, job: Job) -> None:
        if job.counted:
            job.counted = False
            self.waiting_cost = max(0.0, self.waiting_cost - job.cost)

    def retry_after(self) -> int:
        """Seconds until the work waiting now is encoded, at the measured rate (at least 1)."""
        return max(1, math.ceil(self.waiting_cost * self.seconds_per_cost))

    @property
    def depth(self) -> tuple[int, int]:
        return len(self._searches), len(self._writes)

    def close(self) -> list[Job | Call]:
        """Stop: what still waits is returned (for the engine to fail)."""
        with self._cond:
            self.closed = True
            left = [*self._calls, *self._searches, *self._writes]
            self._calls.clear(), self._searches.clear(), self._writes.clear()
            self._cond.notify_all()
        return left

    # -- the model thread -----------------------------------------------------------------------------
    def take(
        self, max_batch: int, max_images: int, write_batch: int, max_wait: float, pausable_writes: bool = False
    ) -> Call | Batch | None:
        """The next call, or the next batch (possibly empty when everything taken had expired or was cancelled);
        None once closed. Waits for work; with ``max_wait`` waits that long for more searches to batch."""
        with self._cond:
            while not (self.closed or self._calls or self._searches or self._writes):
                self._cond.wait()
            if self.closed:
                return None
            if self._calls:
                return self._calls.popleft()
            if pausable_writes and self._writes and (not self._searches or self._write_due()):
                return Batch([self._writes.popleft() for _ in range(min(write_batch, len(self._writes)))], [])
            if max_wait > 0 and self._searches:
                self._cond.wait_for(
                    lambda: self.closed or self._calls or len(self._searches) >= max_batch, timeout=max_wait
                )
            return self._form_batch(max_batch, max_images, write_batch, ride_along=not pausable_writes)

    @property
    def urgent(self) -> bool:
        """Whether a call or a search waits (read without the lock: a hint, checked at every pause point)."""
        return bool(self._calls or self._searches)

    def take_waiting(self, max_batch: int, max_images: int) -> Call | Batch | None:
        """At a pause point of a write batch: the next call, or a batch of the searches waiting (never writes);
        None when neither waits. Never waits itself."""
        with self._cond:
            if self.closed or not (self._calls or self._searches):
                return None
            if self._calls:
                return self._calls.popleft()
            return self._form_batch(max_batch, max_images, write_batch=0, ride_along=False)

    def _write_due(self) -> bool:
        return bool(self._writes) and time.monotonic() - self._writes[0].queued >= self.write_wait

    def _expected(self, batch: Batch, cost: float) -> float:
        """Seconds the batch will take with this job in it. Right after a take in which every search expired, the
        first job of a batch is dropped only once its deadline has passed: a rate estimate that is too slow (after
        a spell of contention) must not drop every query, or no batch would run to correct it."""
        return 0.0 if self._all_expired and not batch.jobs else self.seconds_per_cost * cost

    def _form_batch(self, max_batch: int, max_images: int, write_batch: int, ride_along: bool) -> Batch:
        now = time.monotonic()
        batch, expired = Batch([], []), []
        if ride_along and self._searches and self._write_due():
            batch.jobs.append(self._writes.popleft())  # the import's share: one item, first
        images = sum(len(job.work.pixels()) for job in batch.jobs)
        cost = float(images)
        while self._searches and len(batch.jobs) < max_batch:
            job = self._searches[0]
            pixels = len(job.work.pixels())
            if pixels and images and images + pixels > max_images:
                break  # first in the next batch
            self._uncount(self._searches.popleft())
            if job.future.cancelled():
                continue
            if job.deadline is not None and now + self._expected(batch, cost + job.cost) > job.deadline:
                expired.append(job)
                continue
            batch.jobs.append(job)
            images, cost = images + pixels, cost + job.cost
        if not any(not job.write for job in batch.jobs):  # no search in it: a batch of writes
            while self._writes and len(batch.jobs) < write_batch:
                batch.jobs.append(self._writes.popleft())
        batch.expired = expired
        self._all_expired = bool(expired) and not batch.jobs
        return batch


__all__ = ["TEXT_COST", "Batch", "Call", "Expired", "Job", "JobQueue", "Overloaded", "cost_of"]
