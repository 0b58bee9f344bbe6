"""Pipeline stages as functions over iterators of batches: read+decode (in worker processes) -> encode -> shard.

Each stage is timed by ``timed``; the runner in ``embed.py`` wires them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fashion_retrieval.data.images import ImagePreprocessor
from fashion_retrieval.errors import FashionRetrievalError, ImageError
from fashion_retrieval.pipeline.decode import decode_item, keep_freed_memory, run_at_idle_priority
from fashion_retrieval.pipeline.writer import STATUS_FAILED, Shard


@dataclass
class StageClock:
    """Seconds spent inside each stage (the time a consumer waits on it), plus worker CPU seconds."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


def timed(items: Iterable, clock: StageClock, stage: str) -> Iterator:
    iterator = iter(items)
    while True:
        start = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            clock.add(stage, time.perf_counter() - start)
            return
        clock.add(stage, time.perf_counter() - start)
        yield item


def counted(batches: Iterable[ImageBatch], bar) -> Iterator[ImageBatch]:
    """Advance a progress bar by each batch's size."""
    for batch in batches:
        bar.update(len(batch.indices))
        yield batch


class ImageItems(Dataset):
    """Decodes and preprocesses one catalogue image per index; never raises for a bad file."""

    def __init__(self, paths: list[str], indices: np.ndarray, preprocess: ImagePreprocessor, on_error: str):
        self.paths, self.indices, self.preprocess, self.on_error = paths, indices, preprocess, on_error

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[int, np.ndarray, int, str, float]:
        index = int(self.indices[position])
        start = time.perf_counter()
        pixels, status, reason = decode_item(self.paths[index], self.preprocess, self.on_error)
        return index, pixels, status, reason, time.perf_counter() - start


@dataclass
class ImageBatch:
    indices: np.ndarray
    pixels: torch.Tensor | None  # uint8 [N, H, W, 3]; None once encoded elsewhere (Ray actors send vectors only)
    status: np.ndarray
    reasons: list[str]
    decode_seconds: float
    vectors: np.ndarray | None = None
    texts: np.ndarray | None = None  # caption vectors, when encoded with the images (the Ray engine)
    text_indices: np.ndarray | None = None  # the rows of ``texts`` when not ``indices`` (same shard, row by row)


def _collate(rows: list) -> ImageBatch:
    indices, pixels, status, reasons, seconds = zip(*rows, strict=True)
    return ImageBatch(
        np.asarray(indices),
        torch.from_numpy(np.stack(pixels)),
        np.asarray(status, np.uint8),
        list(reasons),
        float(sum(seconds)),
    )


def _decode_worker(_: int) -> None:
    """A decoding worker: one thread (decoding is per image; the model owns the cores' threads)."""
    torch.set_num_threads(1)
    keep_freed_memory()


def _idle_decode_worker(worker_id: int) -> None:
    """A decoding worker that runs only on cycles the model leaves idle (when the model runs on the CPU).

    At normal priority, or even at nice 10, a worker pre-empts one of the model's threads and stalls
    all of them at the next sync point; SCHED_IDLE lets it fill the model's idle moments instead, and when
    a batch is not ready the model's wait frees the cores for it, so decoding can cost at most its own
    CPU time. Measured on 2 cores over 3 interleaved rounds (eager vision attention then): 0.94-0.96 of the
    bare forward at SCHED_IDLE, 0.90-0.95 at normal priority."""
    _decode_worker(worker_id)
    run_at_idle_priority()


def read_images(
    paths: list[str],
    indices: np.ndarray,
    preprocess: ImagePreprocessor,
    *,
    batch_size: int,
    workers: int,
    on_error: str,
    idle_priority: bool = False,
) -> Iterator[ImageBatch]:
    """Decoded, preprocessed batches in catalogue order, decoded in ``workers`` processes (at idle
    priority with ``idle_priority``: when the model shares the same CPU cores)."""
    loader = DataLoader(
        ImageItems(paths, indices, preprocess, on_error),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        worker_init_fn=(_idle_decode_worker if idle_priority else _decode_worker) if workers else None,
        prefetch_factor=4 if workers else None,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )
    yield from loader


def encode_images(batches: Iterable[ImageBatch], encoder, on_error: str) -> Iterator[ImageBatch]:
    """Embed the decodable images of each batch; failed rows stay zero."""
    for batch in batches:
        if on_error == "fail" and (batch.status == STATUS_FAILED).any():
            raise ImageError(batch.reasons[int(np.argmax(batch.status == STATUS_FAILED))])
        keep = batch.status != STATUS_FAILED
        vectors = np.zeros((len(batch.indices), encoder.embed_dim), np.float32)
        if keep.any():
            # the usual case, every image decoded, needs no copy of the batch
            pixels = batch.pixels if keep.all() else batch.pixels[torch.from_numpy(keep)]
            vectors[keep] = encoder.encode_uint8(pixels)
        batch.vectors = vectors
        yield batch


def assemble_shards(
    batches: Iterable[ImageBatch], shard_of: dict[int, np.ndarray], shard_size: int, dim: int
) -> Iterator[Shard]:
    """Collect batch rows into fixed shards (catalogue rows [k*size, (k+1)*size)); yield each when full.

    Exactly once: a row delivered twice (an engine that retried work) is kept once, and rows still missing
    when the batches run out are an error, never a silently short shard."""
    pending: dict[int, Shard] = {}
    filled: dict[int, np.ndarray] = {}  # rows seen, per shard
    count: dict[int, int] = {}
    for batch in batches:
        for row, index in enumerate(batch.indices):
            shard_id = int(index) // shard_size
            shard = pending.get(shard_id)
            if shard is None:
                if shard_id not in shard_of or shard_id in filled:
                    continue  # a shard already yielded (or not asked for): a repeat delivery
                items = shard_of[shard_id]
                text_dim = 0 if batch.texts is None else batch.texts.shape[1]
                shard = Shard(
                    shard_id,
                    items,
                    np.zeros((len(items), dim), np.float32),
                    np.zeros((len(items), text_dim), np.float32 if text_dim else np.float64),
                    np.zeros(len(items), np.uint8),
                    [""] * len(items),
                )
                pending[shard_id], filled[shard_id], count[shard_id] = shard, np.zeros(len(items), bool), 0
            position = int(index) - int(shard.item_indices[0])
            if filled[shard_id][position]:
                continue
            shard.image[position] = batch.vectors[row]
            if batch.texts is not None:
                text_row = index if batch.text_indices is None else batch.text_indices[row]
                shard.text[int(text_row) - int(shard.item_indices[0])] = batch.texts[row]
            shard.status[position] = batch.status[row]
            shard.reasons[position] = batch.reasons[row]
            filled[shard_id][position] = True
            count[shard_id] += 1
            if count[shard_id] == len(shard.item_indices):
                yield pending.pop(shard_id)
    if pending:
        missing = {k: int((~filled[k]).sum()) for k in sorted(pending)}
        raise FashionRetrievalError(f"the engine delivered no vectors for some rows (shard: rows missing) {missing}")


def add_text_embeddings(shards: Iterable[Shard], captions: list[str], encoder, batch_size: int) -> Iterator[Shard]:
    """Embed each shard's captions (length-sorted batches inside the encoder), aligned with its images."""
    for shard in shards:
        if captions:
            shard.text = encoder.encode_batch_texts([captions[i] for i in shard.item_indices], batch_size=batch_size)
        yield shard
