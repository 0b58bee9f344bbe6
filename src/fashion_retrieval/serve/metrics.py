"""Observability: Prometheus metrics (prometheus-client) and one access-log line per request.

Request counts and latency per endpoint (the route template, not the raw path: ids would explode the label
set) and status; encode and search time; batch sizes; queue depths; searches dropped (shed, expired,
abandoned, late); catalogue writes. With ``serve --workers N`` each worker
writes its samples to ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` aggregates them (prometheus-client's
multiprocess mode), so a scrape sees the whole server whichever worker answers it.
"""

from __future__ import annotations

import logging
import os
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess

access_log = logging.getLogger("fashion_retrieval.access")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    """The server's metrics, in a registry of their own (so several apps in one process do not collide)."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        # In multiprocess mode samples go to files; the registry only serves the aggregating collector.
        self.registry = CollectorRegistry()
        registry = None if self.multiprocess else self.registry
        self.requests = Counter(
            "fashion_requests", "HTTP requests answered", ["method", "endpoint", "status"], registry=registry
        )
        self.latency = Histogram(
            "fashion_request_seconds",
            "HTTP request latency",
            ["method", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.encode_seconds = Histogram(
            "fashion_encode_seconds", "Model time per batch", ["kind"], buckets=LATENCY_BUCKETS, registry=registry
        )
        self.search_seconds = Histogram(
            "fashion_search_seconds", "Store search time per request", buckets=LATENCY_BUCKETS, registry=registry
        )
        self.batch_size = Histogram(
            "fashion_batch_size", "Queries encoded together", ["kind"], buckets=BATCH_BUCKETS, registry=registry
        )
        gauge_mode = {"multiprocess_mode": "livesum"} if self.multiprocess else {}
        self.queue_depth = Gauge(
            "fashion_queue_depth", "Queries waiting for the model", registry=registry, **gauge_mode
        )
        self.write_queue_depth = Gauge(
            "fashion_write_queue_depth", "Items waiting for the model", registry=registry, **gauge_mode
        )
        # shed: refused at once (queue full); expired: dropped unencoded past the deadline; abandoned: client left;
        # late: taken by the model, but its deadline passed before the answer (a 503 all the same)
        self.dropped = Counter(
            "fashion_dropped", "Searches answered 503 or 499, by reason", ["reason"], registry=registry
        )
        self.items_written = Counter("fashion_items_written", "Catalogue writes", ["op"], registry=registry)
        if self.multiprocess:
            prometheus_multiprocess.MultiProcessCollector(self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def route_template(scope: dict) -> str:
    """The matched route's path template (``/api/items/{item_id}``), or a fixed label for unmatched paths."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class AccessLogMiddleware:
    """Outermost ASGI layer: one log line and one metrics sample per HTTP request, whatever answered it."""

    def __init__(self, app, metrics: ServeMetrics | None) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        scope.setdefault("state", {})["arrived"] = time.monotonic()  # request deadlines count from here (service.py)
        status = 500  # what the client gets if the app fails before answering

        async def record_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            seconds = time.perf_counter() - started
            endpoint = route_template(scope)
            if self.metrics is not None:
                self.metrics.requests.labels(scope["method"], endpoint, str(status)).inc()
                self.metrics.latency.labels(scope["method"], endpoint).observe(seconds)
            access_log.info("%s %s %d %.1f ms", scope["method"], scope["path"], status, seconds * 1000)


__all__ = ["AccessLogMiddleware", "ServeMetrics"]
