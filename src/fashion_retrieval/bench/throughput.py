"""How fast a model embeds on this machine: the pipeline against its ceiling, on generated DeepFashion-sized
data. Used by ``fashion-retrieval bench`` and by benchmarks/embed_throughput.py.

What is measured, and why each figure means what its name says:

- **pipeline**: ``embed_catalog`` on a generated catalogue (JPEGs at DeepFashion's 750x1101, captions of its
  length), exactly as ``fashion-retrieval embed`` runs. Images/s and captions/s are the run summary's own
  figures (rows over the ``read`` + ``encode_images`` stages, rows over the ``encode_texts`` stage).
- **ceiling**: the encoder's bare forward on the *same* rows in the *same* batches the pipeline forms, ready
  on the device: images decoded beforehand by the pipeline's own per-image decode, in catalogue-order batches
  of the pipeline's batch size; captions pre-tokenized in the pipeline's length-sorted batches (per shard,
  sorted by token length, padded per batch). The pipeline does all of that plus decoding, tokenizing and
  writing, so the ceiling bounds it from above; it is the fastest of two passes, so that a busy moment of a
  shared machine does not push it below the pipeline (``upper_bound_held`` says whether it stayed above), and
  the vectors of both are compared to show the batches really are the same.
- **plain** (a peer, with a second copy of the model): the same batches through the model as transformers runs
  it (eager attention, every token in every layer, PyTorch's Linear kernels), as a plain script would.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fashion_retrieval.bench.data import deepfashion_caption, make_benchmark_catalog
from fashion_retrieval.config import EmbedConfig, ModelConfig, auto_batch_sizes, default_workers
from fashion_retrieval.model.features import image_features, text_features

# A ceiling may come out below its pipeline by timing noise on a busy machine; beyond this it is reported.
NOISE = 0.03


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@dataclass
class CaptionBatch:
    rows: np.ndarray  # catalogue rows of the batch, in batch order
    input_ids: torch.Tensor
    attention_mask: torch.Tensor


@dataclass
class Workload:
    """A generated catalogue and the pipeline's batches of it, ready for a bare forward.

    ``images`` rows are embedded through the pipeline for images/s; ``captions`` rows for captions/s (the same
    run when equal; otherwise a second run, whose images are embedded too: the pipeline embeds whole rows)."""

    folder: Path
    images: int
    captions: int
    batch_size: int
    text_batch_size: int
    workers: int
    shard_size: int
    catalog: Path = field(init=False)
    paths: list[str] = field(init=False)
    texts: list[str] = field(init=False)

    def __post_init__(self) -> None:
        rows = max(self.images, self.captions)
        self.catalog = make_benchmark_catalog(self.folder / "catalog", rows)
        self.paths = [str(self.folder / "catalog" / "selected_images" / f"{i}.jpg") for i in range(rows)]
        self.texts = [deepfashion_caption(i) for i in range(rows)]
        # decoded batches per preprocessing: models of other input sizes share one workload (family_throughput)
        self._pixels: dict[str, list[torch.Tensor]] = {}
        self._runs = 0

    @classmethod
    def create(
        cls,
        folder: Path,
        device_type: str,
        *,
        images: int,
        captions: int | None = None,
        batch_size: int | None = None,
        text_batch_size: int | None = None,
        workers: int | None = None,
    ) -> Workload:
        image_batch, text_batch = auto_batch_sizes(device_type)
        return cls(
            folder,
            images,
            images if captions is None else captions,
            batch_size or image_batch,
            text_batch_size or text_batch,
            default_workers() if workers is None else workers,
            EmbedConfig.__dataclass_fields__["shard_size"].default,
        )

    # -- the pipeline ---------------------------------------------------------------------------
    def _embed(self, encoder, rows: int) -> tuple[dict, np.ndarray, np.ndarray]:
        from fashion_retrieval.embeddings import load_embeddings
        from fashion_retrieval.pipeline.embed import embed_catalog

        self._runs += 1
        out = self.folder / f"out{self._runs}"
        quiet = logging.getLogger("fashion_retrieval.pipeline.embed")  # its per-run summary line is noise here
        level = quiet.level
        quiet.setLevel(max(level, logging.WARNING))
        config = EmbedConfig(
            catalog=str(self.catalog),
            model=ModelConfig(str(encoder.identity.base), device=str(encoder.device)),
            out=str(out),
            batch_size=self.batch_size,
            text_batch_size=self.text_batch_size,
            workers=self.workers,
            limit=rows,
            shard_size=self.shard_size,
        )
        try:
            summary = embed_catalog(config, encoder=encoder, progress=False)
            data = load_embeddings(out)
            if summary["embedded"] != rows:
                raise RuntimeError(f"the benchmark pipeline embedded {summary['embedded']} of {rows} rows")
            return summary, data.image_embeddings, data.text_embeddings
        finally:
            quiet.setLevel(level)
            shutil.rmtree(out, ignore_errors=True)

    def pipeline(self, encoder) -> dict:
        """``embed_catalog`` on the catalogue: the run summaries' images/s and captions/s (and the vectors)."""
        summary, image_vectors, text_vectors = self._embed(encoder, self.images)
        result = {
            "images": summary["images_per_second"],
            "image_vectors": image_vectors,
            "stage_seconds": summary["stage_seconds"],
        }
        if self.captions != self.images:
            summary, _, text_vectors = self._embed(encoder, self.captions)
            result["caption_stage_seconds"] = summary["stage_seconds"]
        return {**result, "captions": summary["captions_per_second"], "text_vectors": text_vectors}

    # -- the same rows in the same batches, ready on the device -----------------------------------
    def pixel_batches(self, preprocess) -> list[torch.Tensor]:
        """The pipeline's image batches (catalogue order, its batch size), decoded as its workers decode."""
        key = repr(preprocess)
        if key not in self._pixels:
            from fashion_retrieval.pipeline.decode import decode_item

            # the model-side normalisation is part of what the pipeline pays, not of the bare forward
            pixels = [preprocess.normalize(decode_item(p, preprocess, "fail")[0]) for p in self.paths[: self.images]]
            self._pixels[key] = [
                torch.from_numpy(np.stack(pixels[s : s + self.batch_size]))
                for s in range(0, len(pixels), self.batch_size)
            ]
        return self._pixels[key]

    def image_inputs(self, encoder) -> list[torch.Tensor]:
        return [b.to(encoder.device, dtype=encoder.dtype) for b in self.pixel_batches(encoder.preprocess)]

    def caption_inputs(self, encoder) -> list[CaptionBatch]:
        """The pipeline's caption batches: per shard, sorted by token length, each tokenized (padded) alone.

        Mirrors ``FashionEmbeddingModel.encode_batch_texts`` as ``add_text_embeddings`` calls it per shard;
        ``check_same_vectors`` confirms it against the pipeline's own vectors."""
        texts, batches = self.texts[: self.captions], []
        for first in range(0, len(texts), self.shard_size):
            shard = texts[first : first + self.shard_size]
            order = np.argsort(encoder.text_tokenizer.lengths(shard), kind="stable")
            for start in range(0, len(order), self.text_batch_size):
                index = order[start : start + self.text_batch_size]
                tokens = encoder.tokenize([shard[i] for i in index])
                batches.append(
                    CaptionBatch(
                        first + index,
                        tokens["input_ids"].to(encoder.device),
                        tokens["attention_mask"].to(encoder.device),
                    )
                )
        return batches


@torch.inference_mode()
def timed_rate(device: torch.device, run: Callable, batches: Sequence, rows: int) -> tuple[float, list]:
    """``run`` over every batch once: rows per second, and the outputs in batch order."""
    sync(device)
    start = time.perf_counter()
    outputs = [run(b) for b in batches]
    sync(device)
    return rows / (time.perf_counter() - start), outputs


def best_rate(device: torch.device, run: Callable, batches: Sequence, rows: int, passes: int) -> tuple[float, list]:
    """The fastest of ``passes`` passes: a bound should not fall below what it bounds because a shared machine
    was busy during its one pass."""
    rates, out = [], []
    for _ in range(max(1, passes)):
        rate, out = timed_rate(device, run, batches, rows)
        rates.append(rate)
    return max(rates), out


def ceiling_images(encoder, pixels: list[torch.Tensor], passes: int = 2) -> tuple[float, np.ndarray]:
    """The encoder's own bare forward (the pipeline's ``encode_pixels``) on ready batches: images/s (the best of
    ``passes``), vectors."""
    rate, out = best_rate(encoder.device, encoder.encode_pixels, pixels, sum(len(b) for b in pixels), passes)
    return rate, np.concatenate(out)


def ceiling_captions(encoder, batches: list[CaptionBatch], passes: int = 2) -> tuple[float, np.ndarray]:
    """The encoder's own bare forward (``encode_tokens``) on pre-tokenized batches: captions/s (the best of
    ``passes``), vectors in catalogue order."""
    rows = sum(len(b.rows) for b in batches)

    def run(batch: CaptionBatch) -> np.ndarray:
        return encoder.encode_tokens(batch.input_ids, batch.attention_mask)

    rate, out = best_rate(encoder.device, run, batches, rows, passes)
    vectors = np.zeros((rows, out[0].shape[1]), np.float32)
    for batch, v in zip(batches, out, strict=True):
        vectors[batch.rows] = v
    return rate, vectors


def plain_images(model, pixels: list[torch.Tensor]) -> tuple[float, np.ndarray]:
    """The model as transformers runs it, on the same batches (a peer, not a bound)."""
    device = next(model.parameters()).device
    rate, out = timed_rate(device, lambda x: image_features(model, x), pixels, sum(len(b) for b in pixels))
    return rate, torch.cat(out).cpu().numpy()


def plain_captions(model, batches: list[CaptionBatch]) -> tuple[float, np.ndarray]:
    device = next(model.parameters()).device
    rows = sum(len(b.rows) for b in batches)
    rate, out = timed_rate(device, lambda b: text_features(model, b.input_ids, b.attention_mask), batches, rows)
    vectors = np.zeros((rows, out[0].shape[1]), np.float32)
    for batch, v in zip(batches, out, strict=True):
        vectors[batch.rows] = v.cpu().numpy()
    return rate, vectors


def max_difference(a: np.ndarray, b: np.ndarray) -> float:
    return round(float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).max()), 7)


def upper_bound(pipeline: float | None, ceiling: float) -> bool:
    """Whether the ceiling bounded the pipeline (within timing noise)."""
    return pipeline is None or pipeline <= ceiling * (1 + NOISE)


def warm_up(encoder, workload: Workload) -> None:
    """First calls allocate, pick kernels and check the encoder's fast paths: keep them out of every figure."""
    pixels = workload.image_inputs(encoder)
    encoder.encode_pixels(pixels[0])
    batch = workload.caption_inputs(encoder)[0]
    encoder.encode_tokens(batch.input_ids, batch.attention_mask)


def plain_twin(encoder, checkpoint: str | None, base: str, lora_alpha: float = 32.0):
    """A second copy of the model, in the encoder's dtype, as transformers runs it (no fast paths, no packed
    Linear layers)."""
    from fashion_retrieval.model.encoder import FashionEmbeddingModel

    return FashionEmbeddingModel(
        checkpoint, base, str(encoder.device), lora_alpha=lora_alpha, dtype=encoder.precision.name, fast_cpu=False
    )


def measure_throughput(
    encoder,
    *,
    images: int = 8,
    captions: int | None = None,
    batch_size: int | None = None,
    text_batch_size: int | None = None,
    workers: int | None = None,
    plain=None,
) -> dict:
    """One round of pipeline vs ceiling (and, given ``plain``, the model as transformers runs it) on generated
    data, in a temporary folder removed afterwards, errors included. benchmarks/embed_throughput.py has the full
    run (interleaved rounds, dtypes, more peers)."""
    with tempfile.TemporaryDirectory(prefix="fashion-bench-") as folder:
        workload = Workload.create(
            Path(folder),
            encoder.device.type,
            images=images,
            captions=captions,
            batch_size=batch_size,
            text_batch_size=text_batch_size,
            workers=workers,
        )
        warm_up(encoder, workload)
        pixels, texts = workload.image_inputs(encoder), workload.caption_inputs(encoder)
        piped = workload.pipeline(encoder)
        result = _against_ceiling(encoder, workload, piped, pixels, texts)
        if plain is not None:
            _add_plain(result, plain, workload, piped)
        return result


def _against_ceiling(
    encoder, workload: Workload, piped: dict, pixels: list[torch.Tensor], texts: list[CaptionBatch]
) -> dict:
    """The run's settings, and the pipeline's rates against the ceiling measured now on the same batches."""
    image_rate, image_vectors = ceiling_images(encoder, pixels)
    caption_rate, caption_vectors = ceiling_captions(encoder, texts)
    return {
        "device": str(encoder.device),
        "dtype": encoder.precision.name,
        "precision": encoder.precision.to_dict(),
        "fast_paths": encoder.fast_paths(),
        "images": workload.images,
        "captions": workload.captions,
        "batch_size": workload.batch_size,
        "text_batch_size": workload.text_batch_size,
        "workers": workload.workers,
        "images_per_second": {"pipeline": piped["images"], "ceiling": round(image_rate, 3)},
        "captions_per_second": {"pipeline": piped["captions"], "ceiling": round(caption_rate, 3)},
        "pipeline_vs_ceiling": {
            "images": round(piped["images"] / image_rate, 3),
            "captions": round(piped["captions"] / caption_rate, 3),
        },
        "upper_bound_held": {
            "images": upper_bound(piped["images"], image_rate),
            "captions": upper_bound(piped["captions"], caption_rate),
        },
        # the ceiling ran the pipeline's own rows and batches: its vectors are the pipeline's
        "ceiling_vs_pipeline_max_difference": {
            "images": max_difference(image_vectors, piped["image_vectors"]),
            "captions": max_difference(caption_vectors, piped["text_vectors"]),
        },
        "stage_seconds": piped["stage_seconds"],
    }


def _add_plain(result: dict, plain, workload: Workload, piped: dict) -> None:
    """The peer's rates (the model as transformers runs it) into ``result``, beside the pipeline's."""
    warm_up(plain, workload)
    plain_image, _ = plain_images(plain.model, workload.image_inputs(plain))
    plain_caption, _ = plain_captions(plain.model, workload.caption_inputs(plain))
    result["images_per_second"]["plain"] = round(plain_image, 3)
    result["captions_per_second"]["plain"] = round(plain_caption, 3)
    result["pipeline_vs_plain"] = {
        "images": round(piped["images"] / plain_image, 3),
        "captions": round(piped["captions"] / plain_caption, 3),
    }
