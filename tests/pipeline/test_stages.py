"""Decoding workers: one thread each, and on a CPU model at idle priority (they fill the model's idle time)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from fashion_retrieval.data.images import ImagePreprocessor, open_image
from fashion_retrieval.errors import FashionRetrievalError
from fashion_retrieval.pipeline.stages import ImageBatch, assemble_shards, read_images
from tests.helpers import write_image

PROBE = """
import os, torch
from fashion_retrieval.pipeline import stages
stages.{init}(0)
print(os.sched_getscheduler(0) == os.SCHED_IDLE, torch.get_num_threads())
"""


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux-only")
@pytest.mark.parametrize(("init", "idle"), [("_idle_decode_worker", True), ("_decode_worker", False)])
def test_worker_priority_and_threads(init, idle):
    out = subprocess.run([sys.executable, "-c", PROBE.format(init=init)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(idle), "1"]


@pytest.mark.parametrize("idle_priority", [True, False])
def test_read_images_keeps_catalogue_order_with_workers(tmp_path, idle_priority):
    paths = [str(write_image(tmp_path / f"{i}.jpg", (25 * i, 100, 250 - 25 * i))) for i in range(9)]
    preprocess = ImagePreprocessor(16, 16, 3, 1 / 255, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    indices = np.array([2, 3, 4, 5, 6, 7, 8])
    batches = list(
        read_images(paths, indices, preprocess, batch_size=2, workers=2, on_error="skip", idle_priority=idle_priority)
    )
    assert np.concatenate([b.indices for b in batches]).tolist() == indices.tolist()
    # each row is its own image, decoded in a worker
    pixels = np.concatenate([b.pixels.numpy() for b in batches])
    np.testing.assert_array_equal(pixels[3], preprocess.resize(open_image(paths[5])))  # resized uint8, not normalised


def _vectors_batch(indices: list[int], dim: int = 3) -> ImageBatch:
    rows = np.asarray(indices)
    vectors = np.repeat(rows[:, None].astype(np.float32), dim, axis=1)
    status = np.zeros(len(rows), np.uint8)
    return ImageBatch(rows, None, status, [""] * len(rows), 0.0, vectors, texts=-vectors)


def test_assemble_shards_keeps_a_repeated_row_once_and_refuses_a_missing_one():
    shard_of = {0: np.arange(0, 4), 1: np.arange(4, 6)}
    # a retried batch delivers rows 2-3 again, after shard 0 was complete and again before
    batches = [_vectors_batch([0, 1, 2]), _vectors_batch([2, 3]), _vectors_batch([2, 3, 4]), _vectors_batch([5])]
    shards = list(assemble_shards(batches, shard_of, shard_size=4, dim=3))
    assert [s.index for s in shards] == [0, 1]
    assert shards[0].image[:, 0].tolist() == [0, 1, 2, 3] and shards[1].text[:, 0].tolist() == [-4, -5]
    # captions may travel with other rows of their shard (the Ray engine pairs rows with length-sorted captions)
    paired = _vectors_batch([0, 1, 2, 3])
    paired.text_indices = np.array([3, 2, 1, 0])
    (shard,) = assemble_shards([paired], {0: np.arange(0, 4)}, shard_size=4, dim=3)
    assert shard.text[:, 0].tolist() == [-3, -2, -1, 0] and shard.image[:, 0].tolist() == [0, 1, 2, 3]
    with pytest.raises(FashionRetrievalError, match=r"rows missing\) \{1: 1\}"):
        list(assemble_shards([_vectors_batch([0, 1, 2, 3, 4])], shard_of, shard_size=4, dim=3))
