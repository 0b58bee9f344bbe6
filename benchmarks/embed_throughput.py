"""Embedding throughput: the pipeline vs an original-style loop vs the bare model forward (the ceiling).

A BLIP-base-sized model with random weights (same compute as the real one), N generated JPEGs at
DeepFashion's size (750x1101) and captions of DeepFashion's length. Results: benchmarks/results/*.json.

Two ceilings are measured: the bare forward of the encoder the pipeline runs (fused vision attention, only
the CLS row in the last layers, and on CPU Linear layers through prepacked oneDNN kernels: the ceiling that
measures what the pipeline itself costs), and the bare forward of the model as transformers runs it (what
the loop and a plain script pay). Every measurement
is repeated for ``--rounds`` rounds, interleaved (the pipeline and its ceiling back to back, in alternating
order), so drift of a shared machine hits both alike; ratios are the median of the per-round ratios.

    python -m benchmarks.embed_throughput                     # CPU: 48 images, 256 captions, 5 rounds
    python -m benchmarks.embed_throughput --device cuda --images 4096 --captions 8192 --batch-size 128 \
        --text-batch-size 256 --rounds 1 --name embed_gpu
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from benchmarks.common import build_base_sized_blip, write_result
from fashion_retrieval.bench.data import deepfashion_caption, make_benchmark_catalog
from fashion_retrieval.bench.throughput import (
    forward_captions_per_second,
    forward_images_per_second,
    ready_inputs,
    sync,
)
from fashion_retrieval.config import EmbedConfig, ModelConfig, default_workers
from fashion_retrieval.model.encoder import FashionEmbeddingModel
from fashion_retrieval.model.features import image_features, text_features
from fashion_retrieval.pipeline.embed import embed_catalog


def loop_images_per_second(encoder: FashionEmbeddingModel, paths: list[str]) -> float:
    """(b) the original-style loop: one image at a time, open, processor, forward."""
    start = time.perf_counter()
    with torch.inference_mode():
        for path in paths:
            inputs = encoder.processor(images=Image.open(path).convert("RGB"), return_tensors="pt")
            image_features(encoder.model, inputs["pixel_values"].to(encoder.device, dtype=encoder.dtype))
    sync(encoder.device)
    return len(paths) / (time.perf_counter() - start)


def loop_captions_per_second(encoder: FashionEmbeddingModel, captions: list[str]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for caption in captions:
            t = encoder.processor(text=caption, return_tensors="pt", truncation=True)
            text_features(encoder.model, t["input_ids"].to(encoder.device), t["attention_mask"].to(encoder.device))
    sync(encoder.device)
    return len(captions) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--captions", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--text-batch-size", type=int, default=16)
    parser.add_argument("--loop-items", type=int, default=None, help="images for the one-at-a-time loop")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--name", default="embed_throughput_cpu")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    base = build_base_sized_blip(work / "base")
    fast = FashionEmbeddingModel(None, base, device=args.device)
    plain = FashionEmbeddingModel(None, base, device=args.device, fast_cpu=False)
    n = max(args.images, args.captions)
    catalog = make_benchmark_catalog(work / "cat", n)
    paths = [str(work / "cat" / "selected_images" / f"{i}.jpg") for i in range(n)]
    captions = [deepfashion_caption(i) for i in range(n)]
    loop_paths, loop_caps = paths[: args.loop_items or min(args.images, 16)], captions[: min(args.captions, 64)]
    image_batches = max(1, args.images // args.batch_size)
    text_batches = max(1, args.captions // args.text_batch_size)

    for encoder in (fast, plain):  # warm-up (allocations, kernels, weight packing checks)
        encoder.encode_batch_images(paths[:2], batch_size=min(2, args.batch_size))
        encoder.encode_batch_texts(captions[:4])
    fast_inputs = ready_inputs(fast, paths, captions, args.batch_size, args.text_batch_size)
    plain_inputs = ready_inputs(plain, paths, captions, args.batch_size, args.text_batch_size)

    def pipeline(round_: int) -> dict[str, float]:
        """(a) the pipeline over the catalogue's images (fresh output folder), then its caption encoding."""
        config = EmbedConfig(
            catalog=str(catalog),
            model=ModelConfig(str(base), device=str(fast.device)),
            out=str(work / f"out{round_}"),
            batch_size=args.batch_size,
            text_batch_size=args.text_batch_size,
            workers=args.workers,
            limit=args.images,
            shard_size=max(args.images, 1),
        )
        summary = embed_catalog(config, encoder=fast, progress=False)
        start = time.perf_counter()
        fast.encode_batch_texts(captions[: args.captions], batch_size=args.text_batch_size)
        return {
            "images": summary["images_per_second"],
            "captions": args.captions / (time.perf_counter() - start),
            "stage_seconds": summary["stage_seconds"],
        }

    rounds = []
    for round_ in range(args.rounds):
        pixels, ids, mask = fast_inputs
        row = {}
        # pipeline and its ceiling back to back, in alternating order (drift of a shared machine cancels)
        if round_ % 2:
            piped = pipeline(round_)
        row["ceiling_images"] = forward_images_per_second(fast, pixels, image_batches)
        if not round_ % 2:
            piped = pipeline(round_)
        row |= {"pipeline_images": piped["images"], "pipeline_captions": piped["captions"]}
        row["stage_seconds"] = piped["stage_seconds"]
        row["ceiling_captions"] = forward_captions_per_second(fast, ids, mask, text_batches)
        pixels, ids, mask = plain_inputs
        row["plain_ceiling_images"] = forward_images_per_second(plain, pixels, max(1, image_batches // 2), plain=True)
        row["plain_ceiling_captions"] = forward_captions_per_second(plain, ids, mask, text_batches, plain=True)
        row["loop_images"] = loop_images_per_second(plain, loop_paths)
        row["loop_captions"] = loop_captions_per_second(plain, loop_caps)
        rounds.append({k: v if isinstance(v, dict) else round(v, 3) for k, v in row.items()})
        print(rounds[-1], flush=True)

    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in rounds), 3)

    def ratio(a: str, b: str) -> float:
        return round(statistics.median(r[a] / r[b] for r in rounds), 3)

    write_result(
        args.name,
        {
            "command": "python -m benchmarks.embed_throughput "
            + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "name" and v is not None)
            + f" --name {args.name}",
            "model": "BLIP-base-sized BlipForImageTextRetrieval, random weights, 384 px",
            "device": str(fast.device),
            "dtype": str(fast.dtype),
            "packed_linear_layers": fast.packed_layers,
            "images": args.images,
            "captions": args.captions,
            "batch_size": args.batch_size,
            "text_batch_size": args.text_batch_size,
            "workers": args.workers,
            "images_per_second": {
                "pipeline": median("pipeline_images"),
                "ceiling": median("ceiling_images"),
                "plain_ceiling": median("plain_ceiling_images"),
                "loop": median("loop_images"),
            },
            "captions_per_second": {
                "pipeline": median("pipeline_captions"),
                "ceiling": median("ceiling_captions"),
                "plain_ceiling": median("plain_ceiling_captions"),
                "loop": median("loop_captions"),
            },
            "ratios": {
                "pipeline_vs_ceiling_images": ratio("pipeline_images", "ceiling_images"),
                "pipeline_vs_plain_ceiling_images": ratio("pipeline_images", "plain_ceiling_images"),
                "pipeline_vs_loop_images": ratio("pipeline_images", "loop_images"),
                "pipeline_vs_loop_captions": ratio("pipeline_captions", "loop_captions"),
                "pipeline_vs_plain_ceiling_captions": ratio("pipeline_captions", "plain_ceiling_captions"),
            },
            "rounds": rounds,
            "note": "medians over interleaved rounds. ceiling: the bare forward of the encoder the pipeline "
            "runs (fused vision attention, CLS-only last layers, prepacked oneDNN Linear layers on CPU) on one "
            "fixed batch; plain_ceiling: the bare forward of the model as transformers runs it; loop: one "
            "item at a time through the processor and the plain model, as the original toolkit did. The "
            "caption pipeline also sorts captions by length.",
        },
    )


if __name__ == "__main__":
    main()
