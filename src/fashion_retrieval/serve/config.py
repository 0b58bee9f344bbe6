"""``ServeConfig``: everything ``fashion-retrieval serve`` is told, as one frozen value (JSON for worker processes)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

CONFIG_ENV = "FASHION_RETRIEVAL_SERVE_CONFIG"  # how `serve --workers N` hands the config to each worker


@dataclass(frozen=True)
class ServeConfig:
    db: str | None = None
    uri: str | None = None
    token: str | None = None
    collection: str = "fashion_items"
    embeddings: str | None = None
    use_faiss: bool = False
    ef: int | None = None
    nprobe: int | None = None
    images_dir: str | None = None
    base: str | None = None
    checkpoint: str | None = None
    lora_alpha: float | None = None
    device: str = "auto"
    dtype: str = "auto"
    backend: str | None = None  # torch (default) | openvino | onnxruntime | auto
    calibrate: int = 0  # int8: calibrated on this many of the store's items
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    api_key: str | None = None
    admin_key: str | None = None  # writes (items) need it; without one they are off (403)
    cors_origin: str | None = None
    # batching and the queue (None: the device's defaults, see serve/engine_settings.py)
    max_batch: int | None = None
    max_image_batch: int | None = None
    max_wait_ms: float | None = None
    max_queue: float | None = None
    write_batch: int | None = None
    # overload: a search not encoded within request_timeout is dropped (503); connections (serve/protocol.py)
    request_timeout: float = 10.0
    header_timeout: float = 10.0
    limit_concurrency: int | None = 1024
    # limits
    max_upload_bytes: int = 10 * 1024 * 1024
    max_json_bytes: int = 1024 * 1024
    body_timeout: float = 30.0
    keep_alive_seconds: int = 5
    # writes: a batch import's lines and bytes, and how many lines are written (and acknowledged) together
    max_batch_lines: int = 1000
    max_batch_bytes: int = 64 * 1024 * 1024
    write_chunk: int = 16
    # observability
    metrics: bool = True
    log_level: str = "info"

    def open_searcher(self):
        """The searcher this config names (store and query model)."""
        from fashion_retrieval.search.searcher import open_searcher

        return open_searcher(
            db=self.db,
            uri=self.uri,
            token=self.token,
            collection=self.collection,
            embeddings=self.embeddings,
            use_faiss=self.use_faiss,
            ef=self.ef,
            nprobe=self.nprobe,
            base=self.base,
            checkpoint=self.checkpoint,
            lora_alpha=self.lora_alpha,
            device=self.device,
            dtype=self.dtype,
            backend=self.backend,
            calibrate=self.calibrate,
        )

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("--workers must be at least 1")
        if self.workers > 1 and not self.uri and not self.embeddings:
            from fashion_retrieval.errors import StoreError

            raise StoreError(
                f"--workers {self.workers} with a Milvus Lite file: the file serves one process. Share it: run "
                f"`python -m fashion_retrieval.store.lite_server {self.db or 'fashion.db'} --port 19530` and "
                "serve with --uri http://127.0.0.1:19530 (or use a Milvus server)"
            )
        if min(self.max_upload_bytes, self.max_json_bytes, self.max_batch_bytes) < 1 or self.body_timeout <= 0:
            raise ValueError("body limits must be positive")
        if min(self.request_timeout, self.header_timeout) <= 0 or (self.limit_concurrency or 1) < 1:
            raise ValueError("--request-timeout and --header-timeout must be positive, --limit-concurrency at least 1")
        if min(self.max_batch_lines, self.write_chunk) < 1:
            raise ValueError("the batch line limit and the write chunk must be at least 1")
        if self.admin_key is not None and (not self.admin_key or self.admin_key == self.api_key):
            raise ValueError("--admin-key must be non-empty and differ from --api-key (the read key never writes)")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_environment(cls) -> ServeConfig:
        return cls(**json.loads(os.environ[CONFIG_ENV]))


__all__ = ["CONFIG_ENV", "ServeConfig"]
