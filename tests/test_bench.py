"""The benchmark harness measures what it says: ceilings on the pipeline's own batches, peers checked against
the model, the store benchmark's modelled modality gap, and no model left behind."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from fashion_retrieval.bench.throughput import Workload, ceiling_captions, ceiling_images, warm_up
from fashion_retrieval.model.encoder import FashionEmbeddingModel


@pytest.fixture(scope="module")
def encoder(tiny_base):
    return FashionEmbeddingModel(None, tiny_base, "cpu", dtype="fp32")


def test_ceiling_runs_the_pipelines_own_batches_across_shards(encoder, tmp_path):
    """Several shards, a partial last image batch, captions of many lengths: the ceiling's batches are the ones
    the pipeline forms, so its vectors equal the pipeline's exactly."""
    workload = Workload.create(tmp_path, "cpu", images=7, captions=13, batch_size=3, text_batch_size=4, workers=0)
    workload.shard_size = 5
    warm_up(encoder, workload)
    piped = workload.pipeline(encoder)
    assert piped["images"] > 0 and piped["captions"] > 0
    _, images = ceiling_images(encoder, workload.image_inputs(encoder))
    _, captions = ceiling_captions(encoder, workload.caption_inputs(encoder))
    assert images.shape == (7, encoder.embed_dim) and captions.shape == (13, encoder.embed_dim)
    assert np.abs(images - piped["image_vectors"]).max() <= 1e-6
    assert np.abs(captions - piped["text_vectors"]).max() <= 1e-6
    assert [len(b.rows) for b in workload.caption_inputs(encoder)] == [4, 1, 4, 1, 3]  # per shard of 5
    assert not list(tmp_path.glob("out*"))  # the pipeline's outputs are removed after each run


@pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="ONNX peer needs onnx, onnxscript and onnxruntime (pip install onnxruntime onnx onnxscript)",
)
def test_onnx_peer_reproduces_the_vision_tower(encoder, tmp_path):
    from fashion_retrieval.bench.peers import onnx_peers

    plain = FashionEmbeddingModel(None, encoder.identity.base, "cpu", dtype="fp32", fast_cpu=False)
    workload = Workload.create(tmp_path / "w", "cpu", images=3, batch_size=2, workers=0)
    pixels = workload.pixel_batches(plain.preprocess)
    peers, export = onnx_peers(plain.model, pixels, tmp_path, threads=1)
    assert export["exporter"] in ("dynamo", "torchscript") and export["file_mb"] > 0
    runtime = next(p for p in peers if p.runtime == "onnxruntime")
    described = runtime.describe()
    assert "error" not in described, described
    assert described["within_tolerance"] and described["max_difference_vs_plain_fp32"] <= 1e-4
    assert runtime.images_per_second(pixels) > 0


def test_benchmark_model_is_removed_or_cached(tmp_path, monkeypatch):
    import tempfile

    from benchmarks.common import benchmark_model

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    with pytest.raises(RuntimeError), benchmark_model(tiny=True) as (folder, _):
        assert (folder / "config.json").is_file()
        raise RuntimeError("a benchmark failing half-way")
    assert not folder.exists() and not list((tmp_path / "tmp").iterdir())  # removed, errors included
    with benchmark_model(str(tmp_path / "cache"), tiny=True) as (cached, described):
        stamp = (cached / "config.json").stat().st_mtime_ns
    assert "cached in" in described
    with benchmark_model(str(tmp_path / "cache"), tiny=True) as (again, _):
        assert again == cached and (again / "config.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert cached.exists()


def test_synthetic_store_pairs_have_the_modelled_modality_gap():
    from benchmarks.store_search import synthetic_pairs

    pairs = synthetic_pairs(4000, 256, gap=0.8, pair_cosine=0.5, seed=3)
    matched = float(np.sum(pairs.image * pairs.text, axis=1).mean())
    gap = float(np.linalg.norm(pairs.image.mean(0) - pairs.text.mean(0)))
    assert abs(matched - 0.5) < 0.03 and abs(gap - 0.8) < 0.05
    # queries are not near-copies of catalogue vectors: a caption is far from every image
    assert float((pairs.text[:200] @ pairs.image.T).max()) < 0.8
    assert set(pairs.meta.columns) >= {"id", "gender", "product_type"}
