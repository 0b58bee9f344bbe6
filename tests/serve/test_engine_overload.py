"""The query engine under overload, with the real tiny model and store: a bounded queue (refused at once, with a
retry time), deadlines (dropped unencoded), abandoned requests (never encoded), and item writes that yield to
searches but never starve. The model thread is held busy by a real call on it (``on_model``) while work queues."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import numpy as np
import pytest
import torch

from fashion_retrieval import Searcher, open_store
from fashion_retrieval.embeddings import load_embeddings
from fashion_retrieval.search.queries import ImageQuery, TextQuery
from fashion_retrieval.serve.engine import EngineSettings, QueryEngine
from fashion_retrieval.serve.metrics import ServeMetrics
from fashion_retrieval.serve.scheduler import Expired, Job, JobQueue, Overloaded
from fashion_retrieval.serve.waiting import outcome
from fashion_retrieval.store.items import NewItem


@pytest.fixture(scope="module")
def searcher(embeddings_dir, store_encoder):
    return Searcher(open_store(embeddings=str(embeddings_dir)), store_encoder)


@pytest.fixture(scope="module")
def pixels(searcher, embeddings_dir):
    return searcher.prepare_image(load_embeddings(embeddings_dir).metadata["path"][0])


class Busy:
    """Holds the model thread with a real call on it until released (as a long batch would)."""

    def __init__(self, engine: QueryEngine) -> None:
        self.release = threading.Event()
        started = threading.Event()

        def hold() -> None:
            started.set()
            self.release.wait(30)

        self.thread = threading.Thread(target=engine.on_model, args=(hold,))
        self.thread.start()
        assert started.wait(10)

    def __enter__(self) -> Busy:
        return self

    def __exit__(self, *_) -> None:
        self.release.set()
        self.thread.join(10)


def _engine(searcher, metrics=None, **settings) -> QueryEngine:
    return QueryEngine(searcher, EngineSettings(**settings), metrics).start()


def test_a_full_queue_refuses_at_once_with_a_retry_time(searcher, pixels):
    metrics = ServeMetrics()
    engine = _engine(searcher, metrics, max_queue=2.0)
    try:
        with Busy(engine):
            queued = [engine.submit(ImageQuery(pixels, top_k=2)) for _ in range(2)]
            with pytest.raises(Overloaded) as refused:
                engine.submit(ImageQuery(pixels, top_k=2))
            assert refused.value.retry_after >= 1
            with pytest.raises(Overloaded):  # a text query costs 1/16 of an image: the queue is past its bound
                engine.submit(TextQuery("a red dress", top_k=2))
            assert engine.describe()["queue_depth"] == 2
        assert all(len(future.result(30).results) == 2 for future in queued)  # what was admitted is answered
        assert engine.shed == 2 and metrics.registry.get_sample_value("fashion_dropped_total", {"reason": "shed"}) == 2
        texts = [engine.submit(TextQuery("a red dress", top_k=2)) for _ in range(20)]  # 20/16 of an image: admitted
        assert all(future.result(30).results for future in texts)
    finally:
        engine.close()


def test_a_query_past_its_deadline_or_abandoned_is_never_encoded(searcher, pixels):
    engine = _engine(searcher)
    try:
        with Busy(engine):
            late = engine.submit(ImageQuery(pixels, top_k=2), deadline=time.monotonic() + 0.05)
            left = engine.submit(ImageQuery(pixels, top_k=2))
            kept = engine.submit(TextQuery("a red dress", top_k=2), deadline=time.monotonic() + 30)
            assert engine.abandon(left) is True  # its client left while it waited
            time.sleep(0.1)
        with pytest.raises(Expired):
            late.result(30)
        assert len(kept.result(30).results) == 2
        with pytest.raises(concurrent.futures.CancelledError):
            left.result(1)
        described = engine.describe()
        assert described["expired"] == 1 and described["abandoned"] == 1
        assert described["queries"] == 1  # only the kept one reached the model
        assert engine.abandon(kept) is False  # done: nothing to drop
    finally:
        engine.close()


def test_writes_wait_for_searches_but_never_starve(searcher, pixels, monkeypatch):
    order: list[str] = []
    encode = searcher.encode_queries

    def recording(batch):
        order.append("".join("w" if isinstance(work, NewItem) else "s" for work in batch))
        return encode(batch)

    monkeypatch.setattr(searcher, "encode_queries", recording)
    engine = _engine(searcher, write_batch=2, write_wait=0.3)
    try:
        items = [NewItem(f"n{i}", f"a new item {i}", {}, image=pixels) for i in range(3)]
        with Busy(engine):  # (the model thread warmed up before it took this call)
            order.clear()
            writes = [engine.submit_write(item) for item in items]
            searches = [engine.submit(TextQuery(f"query {i}", top_k=1)) for i in range(3)]
        assert all(f.result(30) for f in searches) and all(len(f.result(30)[1]) == 1 for f in writes)
        assert order == ["sss", "ww", "w"]  # the searches that waited went first, then the items, two at a time
    finally:
        engine.close()


def test_an_item_that_waited_rides_with_the_searches(pixels):
    """The queue alone: with searches always waiting, the oldest item joins a search batch after write_wait."""
    queue = JobQueue(max_queue=100, max_writes=10, write_wait=0.2)
    queue.put_write(Job(NewItem("w", "x", {}, image=pixels), concurrent.futures.Future(), write=True))
    for i in range(6):
        queue.put_search(Job(TextQuery(f"q{i}", top_k=1), concurrent.futures.Future()))
    first = queue.take(max_batch=3, max_images=4, write_batch=4, max_wait=0)
    assert [job.write for job in first.jobs] == [False, False, False]  # searches first
    time.sleep(0.25)
    second = queue.take(max_batch=3, max_images=4, write_batch=4, max_wait=0)
    assert [job.write for job in second.jobs] == [True, False, False]  # the item's share: one, first
    third = queue.take(max_batch=3, max_images=4, write_batch=4, max_wait=0)
    assert [job.write for job in third.jobs] == [False] and queue.depth == (0, 0)


def test_the_write_queue_is_bounded(searcher, pixels):
    engine = _engine(searcher, max_write_queue=2)
    try:
        with Busy(engine):
            writes = [engine.submit_write(NewItem(f"q{i}", "x", {}, image=pixels)) for i in range(2)]
            with pytest.raises(Overloaded):
                engine.submit_write(NewItem("q3", "x", {}, image=pixels))
        assert all(future.result(30) for future in writes)
    finally:
        engine.close()


def test_a_search_that_arrives_during_an_item_forward_runs_at_its_next_pause_point(searcher, pixels, monkeypatch):
    """An item's image forward pauses between layers for the searches that arrived meanwhile: the search is encoded
    (and answered) inside the item's forward, not after it; the item's vectors are those of an unpaused forward."""
    encoder = searcher.encoder
    assert encoder.can_pause
    calls: list[str] = []
    encode = searcher.encode_queries

    def recording(batch):
        kind = "".join("w" if isinstance(work, NewItem) else "s" for work in batch)
        calls.append(f"{kind}(")
        try:
            return encode(batch)
        finally:
            calls.append(f"){kind}")

    engine = _engine(searcher)
    engine.run(TextQuery("a blue shirt", top_k=1))  # past the engine's warm-up
    searches: list[concurrent.futures.Future] = []
    first_linear = next(m for m in encoder.model.modules() if isinstance(m, torch.nn.Linear))

    def arrive(_module, _args):  # a shopper's query arrives while the item is being encoded
        if calls == ["w("] and not searches:
            searches.append(engine.submit(TextQuery("a red dress", top_k=2)))

    item = NewItem("paused", "a new item", {}, image=pixels)
    want = searcher.encode_queries([item])[0]
    handle = first_linear.register_forward_pre_hook(arrive)
    monkeypatch.setattr(searcher, "encode_queries", recording)
    try:
        texts, images = engine.submit_write(item).result(30)
        assert calls == ["w(", "s(", ")s", ")w"]  # the search ran inside the item's forward
        assert len(searches[0].result(30).results) == 2
        np.testing.assert_allclose(texts, want[0], atol=1e-6)
        np.testing.assert_allclose(images, want[1], atol=1e-6)
        assert engine.describe()["items_encoded"] == 1 and engine.describe()["queries"] == 2
    finally:
        handle.remove()
        engine.close()
    assert not any(m._forward_pre_hooks for m in encoder.model.modules())  # the pause points are gone


def test_with_pausable_writes_a_due_item_runs_on_its_own_and_searches_never_take_writes(pixels):
    queue = JobQueue(max_queue=100, max_writes=10, write_wait=0.2)
    for name in ("w1", "w2"):
        queue.put_write(Job(NewItem(name, "x", {}, image=pixels), concurrent.futures.Future(), write=True))
    for i in range(4):
        queue.put_search(Job(TextQuery(f"q{i}", top_k=1), concurrent.futures.Future()))
    first = queue.take(max_batch=2, max_images=4, write_batch=4, max_wait=0, pausable_writes=True)
    assert [job.write for job in first.jobs] == [False, False]  # not due yet: searches first
    time.sleep(0.25)
    second = queue.take(max_batch=2, max_images=4, write_batch=4, max_wait=0, pausable_writes=True)
    assert [job.work.id for job in second.jobs] == ["w1", "w2"]  # due: the writes, on their own (searches pause them)
    assert queue.urgent
    waiting = queue.take_waiting(max_batch=8, max_images=4)
    assert [job.write for job in waiting.jobs] == [False, False] and queue.take_waiting(8, 4) is None
    assert not queue.urgent and queue.depth == (0, 0)


def test_a_search_that_cannot_be_encoded_before_its_deadline_is_dropped_even_first_in_its_batch(pixels):
    """The rate estimate says an image takes 1 s: a query due in 0.5 s is dropped unencoded, even alone. Right after
    a take in which everything expired, the next first query runs (a stale, slow estimate must correct itself)."""
    queue = JobQueue(max_queue=100, max_writes=10, write_wait=1.0)
    queue.seconds_per_cost = 1.0
    due_soon = Job(ImageQuery(pixels, top_k=1), concurrent.futures.Future(), deadline=time.monotonic() + 0.5)
    queue.put_search(due_soon)
    first = queue.take(max_batch=4, max_images=4, write_batch=1, max_wait=0)
    assert first.jobs == [] and first.expired == [due_soon]
    again = Job(ImageQuery(pixels, top_k=1), concurrent.futures.Future(), deadline=time.monotonic() + 0.5)
    queue.put_search(again)
    second = queue.take(max_batch=4, max_images=4, write_batch=1, max_wait=0)
    assert second.jobs == [again] and second.expired == []
    in_time = Job(ImageQuery(pixels, top_k=1), concurrent.futures.Future(), deadline=time.monotonic() + 5)
    queue.put_search(in_time)
    assert queue.take(max_batch=4, max_images=4, write_batch=1, max_wait=0).jobs == [in_time]


def test_an_answer_that_would_come_after_the_deadline_is_a_503_at_the_deadline(searcher, monkeypatch):
    """The model has the query (it is being encoded) when the deadline passes: the shopper gets the 503 then, not a
    late answer; the work finishes and is dropped, counted as late."""
    engine = _engine(searcher)
    try:
        engine.run(TextQuery("a blue shirt", top_k=1))  # past the warm-up
        encode = searcher.encode_queries

        def slow(batch):
            time.sleep(0.8)
            return encode(batch)

        monkeypatch.setattr(searcher, "encode_queries", slow)
        started = time.monotonic()
        future = engine.submit(TextQuery("a red dress", top_k=2))  # no deadline in the queue: taken at once
        with pytest.raises(Expired):
            asyncio.run(outcome(engine, [future], None, deadline=started + 0.3))
        assert time.monotonic() - started < 0.7
        assert engine.describe()["late"] == 1 and engine.describe()["expired"] == 0
        assert len(future.result(30).results) == 2  # the model finished it all the same
    finally:
        engine.close()


def test_a_deadline_counts_from_the_requests_arrival_as_the_outermost_middleware_marks_it():
    """The upload and its decoding happen before the search is queued: its deadline starts when the request came in."""
    from starlette.requests import Request

    from fashion_retrieval.serve.metrics import AccessLogMiddleware
    from fashion_retrieval.serve.waiting import arrival

    seen: list[float] = []

    async def app(scope, receive, send):
        seen.append(arrival(Request(scope)))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message):
        await asyncio.sleep(0)

    before = time.monotonic()
    scope = {"type": "http", "method": "GET", "path": "/x", "headers": [], "query_string": b""}
    asyncio.run(AccessLogMiddleware(app, None)(scope, receive, send))
    assert before <= seen[0] <= time.monotonic()
    time.sleep(0.05)
    assert arrival(Request(scope)) == seen[0]  # the mark stays; it is not "now"
    assert arrival(None) >= seen[0] + 0.05  # a request that came another way: now
