"""Which batch sizes are fastest for a BLIP-base-sized model on this machine (they pick the CPU defaults).

python -m benchmarks.batch_sweep
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import build_base_sized_blip, write_result
from fashion_retrieval.model.encoder import FashionEmbeddingModel
from fashion_retrieval.pipeline.throughput import deepfashion_caption


def main() -> None:
    base = build_base_sized_blip(Path(tempfile.mkdtemp(prefix="bench-sweep-")) / "base")
    encoder = FashionEmbeddingModel(None, base)
    pixels = torch.randn(8, 3, 384, 384, dtype=encoder.loaded.dtype, device=encoder.device)
    images = {}
    encoder.encode_pixels(pixels[:1])  # warm-up, and the fast path's check
    for size in (1, 2, 4, 8):
        start = time.perf_counter()
        for s in range(0, 8, size):
            encoder.encode_pixels(pixels[s : s + size])
        images[size] = round(8 / (time.perf_counter() - start), 3)
    captions = [deepfashion_caption(i) for i in range(256)]
    encoder.encode_batch_texts(captions[:16])
    texts = {}
    for size in (8, 16, 32, 64, 128):
        start = time.perf_counter()
        encoder.encode_batch_texts(captions, batch_size=size)
        texts[size] = round(256 / (time.perf_counter() - start), 2)
    write_result(
        "batch_sweep_cpu" if encoder.device.type == "cpu" else "batch_sweep_gpu",
        {
            "command": "python -m benchmarks.batch_sweep",
            "device": str(encoder.device),
            "images_per_second_by_batch": images,
            "captions_per_second_by_batch": texts,
        },
    )


if __name__ == "__main__":
    main()
