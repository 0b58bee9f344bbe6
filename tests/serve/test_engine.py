"""The query engine: batched results equal one-at-a-time results; batches form under load; errors stay per query."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fashion_retrieval import Searcher, open_store
from fashion_retrieval.embeddings import load_embeddings
from fashion_retrieval.errors import QueryError
from fashion_retrieval.search.queries import HybridQuery, ImageQuery, TextQuery
from fashion_retrieval.serve.engine import EngineSettings, QueryEngine
from fashion_retrieval.serve.metrics import ServeMetrics

TEXTS = [
    "a red dress",
    "The man wears a blue denim jacket and black trousers.",
    "striped shirt",
    "a yellow hoodie for women with long sleeves and a hood",
    "black trousers",
    "a red dress",  # the same text twice in one batch
]


@pytest.fixture(scope="module")
def searcher(embeddings_dir, store_encoder):
    return Searcher(open_store(embeddings=str(embeddings_dir)), store_encoder)


def _queries(searcher, embeddings_dir):
    paths = load_embeddings(embeddings_dir).metadata["path"].tolist()
    queries = [TextQuery(t, top_k=5, filters={"gender": ["WOMEN"]} if i % 2 else None) for i, t in enumerate(TEXTS)]
    queries += [ImageQuery(searcher.prepare_image(p), top_k=4) for p in paths[:6]]
    queries += [HybridQuery(TEXTS[i], searcher.prepare_image(paths[i]), alpha=0.3, top_k=3) for i in range(3)]
    queries.append(ImageQuery(searcher.prepare_image(paths[7]), top_k=3, against="text"))
    return queries


def _same(a, b) -> None:
    assert [h.id for h in a.results] == [h.id for h in b.results]
    np.testing.assert_allclose([h.score for h in a.results], [h.score for h in b.results], atol=1e-5)


def test_concurrent_batched_results_equal_sequential(searcher, embeddings_dir):
    queries = _queries(searcher, embeddings_dir)
    sequential = [searcher.run(q) for q in queries]
    metrics = ServeMetrics()
    engine = QueryEngine(searcher, EngineSettings(max_batch=8, max_image_batch=3, max_wait_ms=20), metrics).start()
    try:
        barrier = threading.Barrier(len(queries))
        results: list = [None] * len(queries)

        def client(i: int) -> None:
            barrier.wait()
            results[i] = engine.run(queries[i])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(queries))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        for got, want in zip(results, sequential, strict=True):
            _same(got, want)
        # requests that arrived together were encoded together, within the caps
        assert engine.queries == len(queries) and engine.batches < len(queries)
        sizes = metrics.registry.get_sample_value("fashion_batch_size_sum", {"kind": "text"}) or 0
        sizes += metrics.registry.get_sample_value("fashion_batch_size_sum", {"kind": "image"}) or 0
        assert sizes == len(queries)
        assert metrics.registry.get_sample_value("fashion_queue_depth") == 0
    finally:
        engine.close()


def test_image_cap_and_errors_stay_with_their_query(searcher, embeddings_dir):
    paths = load_embeddings(embeddings_dir).metadata["path"].tolist()
    engine = QueryEngine(searcher, EngineSettings(max_batch=16, max_image_batch=2, max_wait_ms=50)).start()
    try:
        bad = TextQuery("a dress", top_k=3, filters={"no_such_field": ["x"]})
        futures = [engine.submit(ImageQuery(searcher.prepare_image(p), top_k=2)) for p in paths[:5]]
        futures.append(engine.submit(bad))
        futures.append(engine.submit(TextQuery("a dress", top_k=3)))
        assert all(len(f.result(timeout=60).results) == 2 for f in futures[:5])
        with pytest.raises(QueryError, match="unknown filter field 'no_such_field'"):
            futures[5].result(timeout=60)
        assert len(futures[6].result(timeout=60).results) == 3  # the batch mate of the bad query is fine
        assert engine.batches >= 3  # five images, at most two per batch
    finally:
        engine.close()


def test_defaults_per_device_and_bad_settings():
    cpu, cuda = EngineSettings.for_device("cpu"), EngineSettings.for_device("cuda")
    assert cpu.max_wait_ms == 0 and cuda.max_wait_ms > 0 and cuda.max_batch > cpu.max_batch
    assert EngineSettings.for_device("cpu", max_batch=3).max_batch == 3
    with pytest.raises(ValueError, match="at least 1"):
        EngineSettings.for_device("cpu", max_batch=0)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TextQuery("   "), "empty"),
        (lambda: TextQuery("x", top_k=True), "whole number"),
        (lambda: TextQuery("x", top_k=0), "between 1"),
        (lambda: TextQuery("x", rerank=-1), "rerank"),
        (lambda: TextQuery("x", against="both"), "against"),
        (lambda: HybridQuery("x", None, alpha=2.0), "alpha"),
        (lambda: HybridQuery("x", None, fusion="max"), "fusion"),
    ],
)
def test_queries_check_their_inputs_before_any_work(make, message):
    with pytest.raises(QueryError, match=message):
        make()


def test_every_model_call_runs_on_the_model_thread(searcher, monkeypatch):
    """Composed captions and reranks asked for from the store pool still run on the one model thread (torch
    in several threads makes every small operation slower: see QueryEngine.on_model)."""
    from fashion_retrieval.search.compose.request import ComposeQuery

    threads: list[str] = []
    original = searcher.encoder.encode_batch_texts

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(searcher.encoder, "encode_batch_texts", recording)
    engine = QueryEngine(searcher, EngineSettings()).start()
    try:
        item = searcher.store.some_ids(1)[0]
        response = engine.run(ComposeQuery("in blue", item, None, (), top_k=3))
        reranked = engine.run(TextQuery("a red dress", top_k=3, rerank=5))
    finally:
        engine.close()
    assert response.extra["composed_caption"] and reranked.extra["reranked"] == 5
    assert len(threads) >= 2 and set(threads) == {"model-worker"}, threads
