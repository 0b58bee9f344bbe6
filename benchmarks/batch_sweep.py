"""Which batch sizes are fastest for a BLIP-base-sized model on this machine (they pick the CPU defaults).

The encoder's own path, as the pipeline runs it: images as ready tensors through ``encode_pixels``, captions
through ``encode_batch_texts`` (tokenized, length-sorted batches). Every size once per round, interleaved, the
median of ``--rounds`` reported, with the dtype actually used and why. The model lives in a temporary folder
removed at the end unless ``--cache DIR`` keeps it for the next run.

    python -m benchmarks.batch_sweep --dtype fp32 --cache ~/.cache/fashion-bench
    python -m benchmarks.batch_sweep --dtype bf16 --cache ~/.cache/fashion-bench --name batch_sweep_cpu_bf16
    python -m benchmarks.batch_sweep --tiny --rounds 1 --name batch_sweep_tiny      # harness check
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time

import torch

from benchmarks.common import benchmark_model, write_result
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
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto, fp32 or bf16 (fp16 on GPUs)")
    parser.add_argument("--tiny", action="store_true", help="a tiny random BLIP (checks the harness, not speed)")
    parser.add_argument("--cache", default=None, help="keep the BLIP-base-sized model in this folder and reuse it")
    parser.add_argument("--name", default=None, help="result file (default: batch_sweep_<device>)")
    args = parser.parse_args()
    with benchmark_model(args.cache, tiny=args.tiny) as (base, described):
        encoder = FashionEmbeddingModel(None, base, device=args.device, dtype=args.dtype)
        size = encoder.preprocess.height
        pixels = torch.randn(8, 3, size, size, dtype=encoder.dtype, device=encoder.device)
        captions = [deepfashion_caption(i) for i in range(256)]
        encoder.encode_pixels(pixels[:1])  # warm-up, and the fast paths' checks
        encoder.encode_batch_texts(captions[:16])
        image_runs: dict[int, list[float]] = {size: [] for size in (1, 2, 4, 8)}
        text_runs: dict[int, list[float]] = {size: [] for size in (8, 16, 32, 64, 128)}
        # Every size once per round, so drift of a shared machine spreads over all of them.
        for _ in range(args.rounds):
            for batch, runs in image_runs.items():
                runs.append(images_per_second(encoder, pixels, batch))
            for batch, runs in text_runs.items():
                runs.append(captions_per_second(encoder, captions, batch))
        images = {batch: round(statistics.median(runs), 3) for batch, runs in image_runs.items()}
        texts = {batch: round(statistics.median(runs), 2) for batch, runs in text_runs.items()}
        write_result(
            args.name or f"batch_sweep_{encoder.device.type}" + ("_tiny" if args.tiny else ""),
            {
                "command": "python -m benchmarks.batch_sweep " + shlex.join(sys.argv[1:]),
                "model": described,
                "note": f"medians of {args.rounds} interleaved rounds; the encoder's own path (as the pipeline "
                "runs it)",
                "device": str(encoder.device),
                "precision": encoder.precision.to_dict(),
                "fast_paths": encoder.fast_paths(),
                "images_per_second_by_batch": images,
                "captions_per_second_by_batch": texts,
            },
        )


if __name__ == "__main__":
    main()
