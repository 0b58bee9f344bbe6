"""Which batch sizes are fastest for a BLIP-base-sized model on this machine (they pick the CPU defaults).

python -m benchmarks.batch_sweep
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import build_base_sized_blip, write_result
from fashion_retrieval.bench.data import deepfashion_caption
from fashion_retrieval.model.encoder import FashionEmbeddingModel


def images_per_second(encoder, pixels: torch.Tensor, size: int) -> float:
    start = time.perf_counter()
    for s in range(0, len(pixels), size):
        encoder.encode_pixels(pixels[s : s + size])
    return len(pixels) / (time.perf_counter() - start)


def captions_per_second(encoder, captions: list[str], size: int) -> float:
    start = time.perf_counter()
    encoder.encode_batch_texts(captions, batch_size=size)
    return len(captions) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repeats; the median is reported")
    args = parser.parse_args()
    base = build_base_sized_blip(Path(tempfile.mkdtemp(prefix="bench-sweep-")) / "base")
    encoder = FashionEmbeddingModel(None, base)
    pixels = torch.randn(8, 3, 384, 384, dtype=encoder.loaded.dtype, device=encoder.device)
    captions = [deepfashion_caption(i) for i in range(256)]
    encoder.encode_pixels(pixels[:1])  # warm-up, and the fast paths' checks
    encoder.encode_batch_texts(captions[:16])
    image_runs: dict[int, list[float]] = {size: [] for size in (1, 2, 4, 8)}
    text_runs: dict[int, list[float]] = {size: [] for size in (8, 16, 32, 64, 128)}
    # Every size once per round, so drift of a shared machine spreads over all of them.
    for _ in range(args.rounds):
        for size, runs in image_runs.items():
            runs.append(images_per_second(encoder, pixels, size))
        for size, runs in text_runs.items():
            runs.append(captions_per_second(encoder, captions, size))
    images = {size: round(statistics.median(runs), 3) for size, runs in image_runs.items()}
    texts = {size: round(statistics.median(runs), 2) for size, runs in text_runs.items()}
    write_result(
        "batch_sweep_cpu" if encoder.device.type == "cpu" else "batch_sweep_gpu",
        {
            "command": f"python -m benchmarks.batch_sweep --rounds {args.rounds}",
            "note": f"medians of {args.rounds} interleaved rounds; the encoder's own path (as the pipeline runs it)",
            "device": str(encoder.device),
            "images_per_second_by_batch": images,
            "captions_per_second_by_batch": texts,
        },
    )


if __name__ == "__main__":
    main()
