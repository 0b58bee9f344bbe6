"""The query engine's settings and their measured defaults per device (``serve --max-batch`` and friends)."""

from __future__ import annotations

from dataclasses import dataclass

# Measured on 2 CPU cores with a BLIP-base-sized model (benchmarks/serve_load.py): waiting for company costs
# a lone request its full wait and buys nothing the queue does not already give under load, so 0 on CPU. On
# a GPU a forward of 64 costs about what a forward of 1 does: waiting a few ms to fill a batch pays.
# max_queue, in image queries (a text query costs 1/16): the most work that can wait and still be encoded within
# the default --request-timeout (10 s) here. Measured: BLIP-base-sized fp32 encodes 1.83 images/s in batches of 4
# on these 2 cores (benchmarks/results/serve_load.json, bare_batched_image_per_second). The last query admitted to
# a queue of 12 waits for the batch being encoded (<= 4 images) and the 12 queued: 16 / 1.83 = 8.7 s, within 10 s
# with room for the uploads' decoding on the same cores (13: 9.3 s, 15: 10.4 s). benchmarks/ingest.py's overload
# phase checks it: the accepted requests' p99 against the deadline. CUDA's values are not measured here.
# write_batch: items encoded together when no search waits. 1 on CPU: with a torch model a search that arrives during
# an import runs at the item forward's next pause point either way, but with exported towers (no pause points) it
# waits for the whole write batch being encoded: one image forward (0.55 s here) where a batch of 4 takes 2.2 s.
DEFAULTS = {
    "cpu": {"max_batch": 32, "max_image_batch": 4, "max_wait_ms": 0.0, "max_queue": 12.0, "write_batch": 1},
    "cuda": {"max_batch": 128, "max_image_batch": 64, "max_wait_ms": 5.0, "max_queue": 512.0, "write_batch": 16},
}


@dataclass(frozen=True)
class EngineSettings:
    max_batch: int = 32
    max_image_batch: int = 4
    max_wait_ms: float = 0.0
    max_queue: float = 12.0  # waiting work (in image queries) past which a search is refused
    write_batch: int = 1  # items encoded together when no search waits
    max_write_queue: int = 256  # items waiting to be encoded past which a write is refused
    write_wait: float = 1.0  # seconds the oldest item waits before it rides along with searches

    @classmethod
    def for_device(cls, device_type: str, **overrides: float | None) -> EngineSettings:
        values = dict(DEFAULTS.get(device_type, DEFAULTS["cpu"]))
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        if settings.max_batch < 1 or settings.max_image_batch < 1 or settings.max_wait_ms < 0:
            raise ValueError("--max-batch and the image batch must be at least 1, --max-wait-ms at least 0")
        if settings.max_queue <= 0 or settings.write_batch < 1 or settings.max_write_queue < 1:
            raise ValueError("--max-queue must be positive, the write batch and write queue at least 1")
        return settings


__all__ = ["DEFAULTS", "EngineSettings"]
