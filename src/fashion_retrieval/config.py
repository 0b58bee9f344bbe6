"""One frozen config dataclass per command; saved as JSON into the command's outputs."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

# Measured on a 2-core CPU with a BLIP-base-sized model and oneDNN-packed Linear layers
# (python -m benchmarks.batch_sweep, benchmarks/results/batch_sweep_cpu.json): images 2.03 / 2.12 / 2.07 /
# 1.90 img/s at batch 1 / 2 / 4 / 8, and in the pipeline batch 1 and 2 tie (2.13 vs 2.09 img/s) while batch 2
# hides decoding better (0.98 vs 0.95 of the bare forward: benchmarks/results/embed_throughput_cpu*.json);
# captions peak at 16-32 (45-46/s, 38 at 128). GPUs want large batches.
AUTO_BATCH = {"cpu": (2, 16), "mps": (16, 64), "cuda": (128, 256)}


def auto_batch_sizes(device_type: str) -> tuple[int, int]:
    """(image batch, caption batch) for a device type."""
    return AUTO_BATCH.get(device_type, AUTO_BATCH["cpu"])


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class ModelConfig:
    base: str
    checkpoint: str | None = None
    lora_alpha: float = 32.0
    device: str = "auto"
    dtype: str = "auto"


@dataclass(frozen=True)
class EmbedConfig:
    catalog: str
    model: ModelConfig
    out: str = "embeddings_output"
    images_dir: str | None = None
    id_col: str = "image_id"
    image_col: str = "path"
    text_col: str | None = "caption"
    batch_size: int | None = None  # None: per device (see auto_batch_sizes)
    text_batch_size: int | None = None
    workers: int = field(default_factory=default_workers)
    on_error: str = "skip"
    limit: int | None = None
    overwrite: bool = False
    shard_size: int = 1024

    def __post_init__(self) -> None:
        if self.on_error not in ("skip", "placeholder", "fail"):
            raise ValueError(f"--on-error {self.on_error!r}: use skip, placeholder or fail")
        if min(self.batch_size or 1, self.text_batch_size or 1, self.shard_size) < 1:
            raise ValueError("--batch-size and shard size must be at least 1")
        if self.workers < 0:
            raise ValueError("--workers must be 0 (decode in the main process) or more")
        if self.limit is not None and self.limit < 1:
            raise ValueError("--limit must be at least 1")

    def to_dict(self) -> dict:
        return asdict(self)
