"""Decode one catalogue image, never raising: the per-image step every engine runs, so failures match.

Torch-free on purpose: Ray's decoding tasks import this module (through ``ray_engine``) and should not pay
for torch; the in-process engine's DataLoader workers call the same function.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

import numpy as np

from fashion_retrieval.data.images import ImagePreprocessor, open_image, placeholder_image
from fashion_retrieval.errors import ImageError
from fashion_retrieval.pipeline.writer import STATUS_FAILED, STATUS_OK, STATUS_PLACEHOLDER

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def decode_item(path: str, preprocess: ImagePreprocessor, on_error: str) -> tuple[np.ndarray, int, str]:
    """(pixels uint8 [H, W, 3], STATUS_*, reason) for one image; a bad file is a status, not an exception.

    The pixels are resized but not normalised: the encoder normalises whole batches (``encode_uint8``), which
    is cheaper there and ships a quarter of the bytes from the decoding workers.
    ``on_error="placeholder"`` gives a bad file the original toolkit's black image (flagged); otherwise its
    pixels are zeros and its status FAILED (the encoder skips it, the runner lists it in failures.jsonl)."""
    try:
        return preprocess.resize(open_image(path, reduce_to=preprocess.reduce_to)), STATUS_OK, ""
    except ImageError as exc:
        reason = str(exc)
    if on_error == "placeholder":
        return preprocess.resize(placeholder_image()), STATUS_PLACEHOLDER, reason
    return np.zeros((preprocess.height, preprocess.width, 3), np.uint8), STATUS_FAILED, reason


def keep_freed_memory() -> None:
    """Let glibc keep freed large blocks instead of unmapping them.

    A worker allocates the same few large buffers for every image (the decoded image, its resized copy,
    the float arrays); by default glibc hands each back to the OS when freed, and the next image page-faults
    it in again. Keeping them cuts decode + preprocess from 13.1 to 7.9 ms per 750x1101 JPEG here. Only in
    the pipeline's own worker processes, never in the caller's."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 256 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)


def run_at_idle_priority() -> None:
    """Run the calling thread only on cycles nothing else wants (SCHED_IDLE; nice 19 where that is missing).

    For decoding beside a model on the same CPU cores: at normal priority a decoder pre-empts one of the
    model's threads and stalls all of them at the next sync point (see ``stages._idle_decode_worker``)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux
        with contextlib.suppress(OSError, AttributeError):
            os.nice(19)
