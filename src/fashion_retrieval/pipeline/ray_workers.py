"""What runs in Ray's worker processes for the Ray engine: decoding tasks and encoder actors.

Importing this module costs no torch (decoding workers never load it); an actor imports the model when built.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from fashion_retrieval.config import ModelConfig
from fashion_retrieval.data.images import ImagePreprocessor
from fashion_retrieval.pipeline.decode import decode_item, keep_freed_memory, run_at_idle_priority


@functools.cache
def _decoder(idle: bool) -> ThreadPoolExecutor:
    """The decoding thread of this worker process (made once per process).

    Idle priority is set on that thread only: Ray may later reuse the process for other work (an encoder
    actor even), whose threads must keep normal priority, and a process cannot raise its own back."""
    keep_freed_memory()
    return ThreadPoolExecutor(1, thread_name_prefix="decode", initializer=run_at_idle_priority if idle else None)


def decode_rows(
    batch: dict[str, np.ndarray], *, preprocess: ImagePreprocessor, on_error: str, idle: bool
) -> dict[str, np.ndarray]:
    """A Ray task: decode and preprocess a batch of catalogue rows (a bad image is a status, as in-process)."""
    return _decoder(idle).submit(_decode_rows, batch, preprocess, on_error).result()


def _decode_rows(batch: dict[str, np.ndarray], preprocess: ImagePreprocessor, on_error: str) -> dict[str, np.ndarray]:
    n = len(batch["index"])
    pixels = np.empty((n, preprocess.height, preprocess.width, 3), np.uint8)
    status = np.empty(n, np.uint8)
    reasons = []
    start = time.perf_counter()
    for row, path in enumerate(batch["path"]):
        pixels[row], status[row], reason = decode_item(str(path), preprocess, on_error)
        reasons.append(reason)
    out = {
        "index": batch["index"],
        "pixels": pixels,
        "status": status,
        "reason": np.asarray(reasons, dtype=object),
        "decode_seconds": np.full(n, (time.perf_counter() - start) / max(1, n)),
    }
    if "caption" in batch:
        out["caption"], out["caption_index"] = batch["caption"], batch["caption_index"]
    return out


class EncodeActor:
    """A Ray actor: loads the model once, then embeds batches of decoded rows (images, and their captions)."""

    def __init__(
        self, model: ModelConfig, threads: int, batch_size: int, text_batch_size: int, calibration=None
    ) -> None:
        init_at = time.time()
        import torch

        from fashion_retrieval.model.encoder import load_encoder

        torch.set_num_threads(threads)
        self.batch_size, self.text_batch_size = batch_size, text_batch_size
        self.encoder = load_encoder(model, calibration)
        device = str(self.encoder.device)
        if self.encoder.device.type == "cuda":
            device = f"{device} {torch.cuda.get_device_name(self.encoder.device)}"
        self.info = json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "device": device,
                "threads": torch.get_num_threads(),
                "precision": self.encoder.precision.to_dict(),
                "load_seconds": round(time.time() - init_at, 3),
                "ready_at": time.time(),
            }
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from fashion_retrieval.pipeline.stages import ImageBatch, encode_images

        n, size = len(batch["index"]), self.batch_size
        reasons = [str(r) for r in batch["reason"]]
        with warnings.catch_warnings():  # a read-only view of the object store, never written to
            warnings.simplefilter("ignore", UserWarning)
            pixels = torch.from_numpy(batch["pixels"])
        start = time.perf_counter()
        parts = [
            ImageBatch(batch["index"][s : s + size], pixels[s : s + size], batch["status"][s : s + size], [], 0.0)
            for s in range(0, n, size)
        ]
        # failed rows stay zero; --on-error fail is enforced on the driver, in catalogue order
        image = np.concatenate([part.vectors for part in encode_images(parts, self.encoder, "skip")])
        image_seconds = time.perf_counter() - start
        out = {
            "index": batch["index"],
            "image": image,
            "status": batch["status"],
            "reason": np.asarray(reasons, dtype=object),
            "decode_seconds": batch["decode_seconds"],
            "image_seconds": np.full(n, image_seconds / n),
            "actor": np.full(n, self.info, dtype=object),
        }
        if "caption" in batch:
            start = time.perf_counter()
            captions = [str(c) for c in batch["caption"]]
            out["text"] = self.encoder.encode_batch_texts(captions, batch_size=self.text_batch_size)
            out["caption_index"] = batch["caption_index"]  # the rows of these captions (same shard as the images)
            out["text_seconds"] = np.full(n, (time.perf_counter() - start) / n)
        return out
