"""One frozen config dataclass per command; saved as JSON into the command's outputs."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

# Measured on a 2-core CPU with a BLIP-base-sized model, as the encoder runs it (fused vision attention,
# oneDNN-packed Linear layers): python -m benchmarks.batch_sweep (benchmarks/results/batch_sweep_cpu.json and
# batch_sweep_cpu_bf16.json, medians of 3 rounds) gives 1.77 / 1.86 / 1.87 / 1.86 img/s in fp32 and 3.02 /
# 3.07 / 2.99 / 3.15 in bf16 at batch 1 / 2 / 4 / 8 (flat beyond 2: 4 keeps memory low); captions peak at
# 16-64 (fp32 22.7/s, bf16 42.5/s) and drop at 128. GPUs want large batches.
AUTO_BATCH = {"cpu": (4, 16), "mps": (16, 64), "cuda": (128, 256)}


def auto_batch_sizes(device_type: str) -> tuple[int, int]:
    """(image batch, caption batch) for a device type."""
    return AUTO_BATCH.get(device_type, AUTO_BATCH["cpu"])


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


DEFAULT_CALIBRATION = 300  # catalogue items an int8 export is calibrated on when --dtype int8 names no --calibrate


@dataclass(frozen=True)
class ModelConfig:
    base: str
    checkpoint: str | None = None
    lora_alpha: float = 32.0
    device: str = "auto"
    dtype: str = "auto"
    # torch | openvino | onnxruntime | auto (model/backends): where the towers run
    backend: str = "torch"
    # catalogue items to calibrate an int8 export on (0: no int8 unless --dtype int8, which takes 300)
    calibrate: int = 0

    def __post_init__(self) -> None:
        if self.backend not in ("torch", "openvino", "onnxruntime", "auto"):
            raise ValueError(f"--backend {self.backend!r}: use torch, openvino, onnxruntime or auto")
        if self.calibrate < 0:
            raise ValueError("--calibrate must be 0 (no int8) or a number of catalogue items")

    @property
    def calibration_items(self) -> int:
        """How many catalogue items an int8 calibration needs (0: int8 is not wanted)."""
        if self.backend == "torch":
            return 0
        return self.calibrate or (DEFAULT_CALIBRATION if self.dtype == "int8" else 0)


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
    # Measured on the demo (64 px model, 128 px JPEGs): image vectors at cosine 0.992 mean (0.81 min) to the
    # exact preprocessing, held-out Recall@10 unchanged, attribute precision@10 0.945 -> 0.940, decoding
    # 0.49 -> 0.26 ms per image. Not negligible for every image, hence opt-in (it changes the run key).
    jpeg_draft: bool = False
    # engine: "local" (this process: decoding workers + one encoder) or "ray" (Ray Data, pipeline/ray_engine.py)
    engine: str = "local"
    ray_address: str | None = None  # None: start a local Ray instance; "auto" or "ray://host:10001": join one
    actors: int | None = None  # encoder actors (None: one per GPU, else one)
    gpus_per_actor: float = 0.0
    cpus_per_actor: float | None = None  # None: what the machine allows beside the decoding tasks

    def __post_init__(self) -> None:
        if self.engine not in ("local", "ray"):
            raise ValueError(f"--engine {self.engine!r}: use local or ray")
        if self.actors is not None and self.actors < 1:
            raise ValueError("--actors must be at least 1")
        if self.gpus_per_actor < 0 or (self.cpus_per_actor is not None and self.cpus_per_actor <= 0):
            raise ValueError("--gpus-per-actor must be >= 0 and --cpus-per-actor > 0")
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
