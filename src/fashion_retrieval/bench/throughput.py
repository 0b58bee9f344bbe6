"""How fast a model embeds on this machine: the pipeline against the bare forward, on generated
DeepFashion-sized data. Used by ``fashion-retrieval bench`` and by benchmarks/embed_throughput.py."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fashion_retrieval.bench.data import deepfashion_caption, make_benchmark_catalog
from fashion_retrieval.config import EmbedConfig, ModelConfig, auto_batch_sizes, default_workers
from fashion_retrieval.model.features import image_features, text_features


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def _items_per_second(encoder, run, inputs: tuple[torch.Tensor, ...], batches: int) -> float:
    """``run(*inputs)`` repeated ``batches`` times: items (rows of the first input) per second."""
    sync(encoder.device)
    start = time.perf_counter()
    for _ in range(batches):
        run(*inputs)
    sync(encoder.device)
    return batches * len(inputs[0]) / (time.perf_counter() - start)


def forward_images_per_second(encoder, pixels: torch.Tensor, batches: int, *, plain: bool = False) -> float:
    """The bare forward on ready tensors: the encoder's own (the pipeline's ceiling at this batch size), or
    with ``plain`` the model's vision tower as transformers runs it."""
    run = (lambda x: image_features(encoder.model, x)) if plain else encoder.encode_pixels
    return _items_per_second(encoder, run, (pixels,), batches)


def forward_captions_per_second(
    encoder, input_ids: torch.Tensor, attention_mask: torch.Tensor, batches: int, *, plain: bool = False
) -> float:
    """The text encoder on one fixed batch, repeated: the encoder's own path, or with ``plain`` transformers'."""
    run = (lambda i, m: text_features(encoder.model, i, m)) if plain else encoder.encode_tokens
    return _items_per_second(encoder, run, (input_ids, attention_mask), batches)


def ready_inputs(encoder, paths: list[str], captions: list[str], batch_size: int, text_batch_size: int):
    """One preprocessed image batch and one tokenized caption batch on the encoder's device."""
    pixels = np.stack([encoder.preprocess(Image.open(p).convert("RGB")) for p in paths[:batch_size]])
    tokens = encoder.tokenize(captions[:text_batch_size])
    return (
        torch.from_numpy(pixels).to(encoder.device, dtype=encoder.dtype),
        tokens["input_ids"].to(encoder.device),
        tokens["attention_mask"].to(encoder.device),
    )


def measure_throughput(
    encoder,
    *,
    images: int = 8,
    captions: int = 64,
    batch_size: int | None = None,
    text_batch_size: int | None = None,
    workers: int | None = None,
) -> dict:
    """Pipeline vs bare forward for ``encoder`` on generated data (a quick look; benchmarks/ has the full run)."""
    from fashion_retrieval.pipeline.embed import embed_catalog

    image_batch, text_batch = auto_batch_sizes(encoder.device.type)
    batch_size, text_batch_size = batch_size or image_batch, text_batch_size or text_batch
    work = Path(tempfile.mkdtemp(prefix="fashion-bench-"))
    n = max(images, captions)
    catalog = make_benchmark_catalog(work / "catalog", n)
    paths = [str(work / "catalog" / "selected_images" / f"{i}.jpg") for i in range(n)]
    texts = [deepfashion_caption(i) for i in range(n)]
    encoder.encode_batch_images(paths[:1], batch_size=1)  # warm-up
    encoder.encode_batch_texts(texts[:4])
    pixels, ids, mask = ready_inputs(encoder, paths, texts, batch_size, text_batch_size)
    ceiling_images = forward_images_per_second(encoder, pixels, max(1, images // batch_size))
    ceiling_captions = forward_captions_per_second(encoder, ids, mask, max(1, captions // text_batch_size))
    config = EmbedConfig(
        catalog=str(catalog),
        model=ModelConfig(encoder.identity.base),
        out=str(work / "out"),
        batch_size=batch_size,
        text_batch_size=text_batch_size,
        workers=default_workers() if workers is None else workers,
        limit=images,
        shard_size=images,
    )
    summary = embed_catalog(config, encoder=encoder, progress=False)
    start = time.perf_counter()
    encoder.encode_batch_texts(texts[:captions], batch_size=text_batch_size)
    pipeline_captions = captions / (time.perf_counter() - start)
    return {
        "device": str(encoder.device),
        "dtype": str(encoder.dtype),
        "images": images,
        "captions": captions,
        "batch_size": batch_size,
        "text_batch_size": text_batch_size,
        "images_per_second": {"pipeline": summary["images_per_second"], "forward": round(ceiling_images, 3)},
        "captions_per_second": {"pipeline": round(pipeline_captions, 3), "forward": round(ceiling_captions, 3)},
        "pipeline_vs_forward_images": round(summary["images_per_second"] / ceiling_images, 3),
        "stage_seconds": summary["stage_seconds"],
    }
