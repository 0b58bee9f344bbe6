"""The embedding pipeline: outputs, alignment, bad images, resume, refusal, the original entry point."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from fashion_retrieval import FashionEmbeddingModel, create_dataset_embeddings, load_embeddings
from fashion_retrieval.config import auto_batch_sizes
from fashion_retrieval.data.synthetic import make_catalog
from fashion_retrieval.errors import FashionRetrievalError, ImageError
from fashion_retrieval.pipeline.embed import embed_catalog
from tests.helpers import embed_config
from tests.pipeline.conftest import BAD, ODD


@pytest.fixture(scope="module")
def encoder(tiny_base):
    return FashionEmbeddingModel(None, tiny_base, device="cpu")


_config = embed_config


def test_outputs_aligned_and_failures_listed(messy_catalog, tiny_base, encoder, tmp_path):
    summary = embed_catalog(
        _config(messy_catalog, tiny_base, tmp_path / "e", workers=2), encoder=encoder, progress=False
    )
    assert summary["items"] == 40 and summary["failed"] == len(BAD) and summary["embedded"] == 40 - len(BAD)
    result = load_embeddings(tmp_path / "e")
    meta = result.metadata
    assert result.image_embeddings.shape == (35, 256) == result.text_embeddings.shape
    assert result.image_embeddings.dtype == np.float32
    for key in ODD:  # odd but valid images are embedded
        assert f"odd-{key}" in set(meta["id"])
    failures = {f["id"]: f["reason"] for f in result.failures}
    assert set(failures) == {f"odd-{k}" for k in BAD}
    for key, reason in BAD.items():
        assert reason in failures[f"odd-{key}"], failures[f"odd-{key}"]
    # row i of each matrix is metadata row i: re-encode a few directly
    for row in (0, 17, len(meta) - 1):
        np.testing.assert_allclose(result.image_embeddings[row], encoder.encode_image(meta.at[row, "path"]), atol=1e-5)
        np.testing.assert_allclose(result.text_embeddings[row], encoder.encode_text(meta.at[row, "caption"]), atol=1e-5)
    assert {"gender", "product_type", "product_id", "image_type", "color"} <= set(meta.columns)
    manifest = result.manifest
    assert manifest["model"]["key"] == encoder.identity.key and manifest["summary"]["failed"] == 5
    assert {"read", "encode_images", "encode_texts", "write"} <= set(manifest["summary"]["stage_seconds"])
    with open(tmp_path / "e" / "metadata.pkl", "rb") as handle:
        original = pickle.load(handle)
    assert set(original) == {
        "image_paths",
        "texts",
        "image_ids",
        "product_ids",
        "genders",
        "product_types",
        "image_types",
    }
    assert original["image_ids"] == meta["id"].tolist() and len(original["genders"]) == 35
    assert not (tmp_path / "e" / ".partial").exists()


def test_placeholder_and_fail_modes(messy_catalog, tiny_base, encoder, tmp_path):
    summary = embed_catalog(
        _config(messy_catalog, tiny_base, tmp_path / "p", on_error="placeholder"), encoder=encoder, progress=False
    )
    assert summary["embedded"] == 40 and summary["placeholders"] == len(BAD) and summary["failed"] == 0
    meta = load_embeddings(tmp_path / "p").metadata
    assert meta["placeholder"].sum() == len(BAD) and meta.loc[meta["id"] == "odd-empty", "placeholder"].item()
    with pytest.raises(ImageError, match="missing.jpg"):
        embed_catalog(
            _config(messy_catalog, tiny_base, tmp_path / "f", on_error="fail"), encoder=encoder, progress=False
        )
    assert not (tmp_path / "f" / "manifest.json").exists()


def test_rerun_does_nothing_and_other_model_is_refused(messy_catalog, tiny_base, encoder, tmp_path, tmp_path_factory):
    config = _config(messy_catalog, tiny_base, tmp_path / "e")
    embed_catalog(config, encoder=encoder, progress=False)
    before = (tmp_path / "e" / "image_embeddings.npy").stat().st_mtime_ns
    again = embed_catalog(config, encoder=encoder, progress=False)
    assert again["status"] == "already complete"
    assert (tmp_path / "e" / "image_embeddings.npy").stat().st_mtime_ns == before
    from fashion_retrieval.model.tiny import build_tiny_blip

    other = FashionEmbeddingModel(None, build_tiny_blip(tmp_path_factory.mktemp("other"), seed=7), device="cpu")
    with pytest.raises(FashionRetrievalError, match="another run .*model.*--overwrite"):
        embed_catalog(config, encoder=other, progress=False)
    replaced = embed_catalog(replace(config, overwrite=True), encoder=other, progress=False)
    assert replaced["status"] == "done"
    assert load_embeddings(tmp_path / "e").manifest["model"]["key"] == other.identity.key


def test_limit_and_image_folder_and_generic_table(messy_catalog, tiny_base, encoder, tmp_path):
    summary = embed_catalog(_config(messy_catalog, tiny_base, tmp_path / "l", limit=6), encoder=encoder, progress=False)
    assert summary["items"] == 6
    folder = messy_catalog.parent / "selected_images"
    summary = embed_catalog(
        _config(folder, tiny_base, tmp_path / "dir", text_col=None), encoder=encoder, progress=False
    )
    result = load_embeddings(tmp_path / "dir")
    assert result.text_embeddings is None and not (tmp_path / "dir" / "text_embeddings.npy").exists()
    assert summary["failed"] == len(BAD) - 1  # the folder has no "missing" file
    frame = pd.read_csv(messy_catalog).rename(columns={"image_id": "sku", "caption": "title", "path": "img"})
    frame["img"] = [str(folder / p) for p in frame["img"]]
    frame.head(12).to_json(tmp_path / "items.jsonl", orient="records", lines=True)
    config = _config(
        tmp_path / "items.jsonl", tiny_base, tmp_path / "j", id_col="sku", image_col="img", text_col="title"
    )
    assert embed_catalog(config, encoder=encoder, progress=False)["embedded"] == 12


def test_create_dataset_embeddings_original_signature(messy_catalog, tiny_base, tmp_path):
    image, text, metadata = create_dataset_embeddings(
        messy_catalog, None, tiny_base, str(tmp_path / "o"), device="cpu", workers=0, progress=False
    )
    assert image.shape == text.shape == (35, 256)
    assert metadata["texts"][0] == pd.read_csv(messy_catalog)["caption"][0]
    loaded = load_embeddings(tmp_path / "o", original_pickle=True)
    np.testing.assert_array_equal(loaded[0], image)
    assert loaded[2] == metadata


def _embed_cmd(catalog, base, out):
    return [
        sys.executable,
        "-m",
        "fashion_retrieval",
        "embed",
        str(catalog),
        "--base",
        str(base),
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--shard-size",
        "4",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--json",
    ]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_uninterrupted(tiny_base, tmp_path):
    catalog = make_catalog(tmp_path / "cat", n=160, seed=3, image_size=640)  # decoding takes a while
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # the uninterrupted reference in this process (a CLI run of its own would only import torch again), with the
    # CLI's batch and shard sizes
    embed_catalog(embed_config(catalog, tiny_base, tmp_path / "full", batch_size=2, shard_size=4), progress=False)
    process = subprocess.Popen(
        _embed_cmd(catalog, tiny_base, tmp_path / "cut"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    partial = tmp_path / "cut" / ".partial"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(partial.glob("shard-*.npz"))) < 3:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    done_before = len(list(partial.glob("shard-*.npz")))
    assert 3 <= done_before < 40 and not (tmp_path / "cut" / "manifest.json").exists()
    # the rerun: the same command, in this process (what resumes is the folder the killed process left)
    from typer.testing import CliRunner

    from fashion_retrieval.cli import app

    result = CliRunner().invoke(app, _embed_cmd(catalog, tiny_base, tmp_path / "cut")[3:])
    assert result.exit_code == 0, result.output[-2000:]
    summary = json.loads(result.stdout)
    assert summary["resumed_shards"] >= 3 and summary["embedded"] == 160
    full, cut = load_embeddings(tmp_path / "full"), load_embeddings(tmp_path / "cut")
    assert cut.metadata["id"].tolist() == full.metadata["id"].tolist()
    np.testing.assert_allclose(cut.image_embeddings, full.image_embeddings, atol=1e-6)
    np.testing.assert_allclose(cut.text_embeddings, full.text_embeddings, atol=1e-6)
    pd.testing.assert_frame_equal(cut.metadata, full.metadata)


def test_bench_command_reports_pipeline_and_forward(tiny_base, tmp_path, monkeypatch):
    import tempfile

    from typer.testing import CliRunner

    from fashion_retrieval.cli import app

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the generated data goes
    args = ["bench", "--base", str(tiny_base), "--device", "cpu", "--dtype", "fp32", "--images", "3"]
    result = CliRunner().invoke(app, [*args, "--captions", "8", "--plain", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["images"], report["captions"]) == (3, 8)
    assert (report["batch_size"], report["text_batch_size"]) == auto_batch_sizes("cpu")
    assert report["precision"]["dtype"] == "float32" and report["precision"]["reason"]
    for kind in ("images_per_second", "captions_per_second"):
        assert report[kind]["pipeline"] > 0 and report[kind]["ceiling"] > 0 and report[kind]["plain"] > 0
    # the ceiling ran the pipeline's own rows in the pipeline's own batches: the same vectors
    assert max(report["ceiling_vs_pipeline_max_difference"].values()) <= 1e-6
    assert list(tmp_path.iterdir()) == []  # generated catalogue and outputs removed
    text = CliRunner().invoke(app, args)
    assert text.exit_code == 0, text.output
    assert "captions/s pipeline" in text.output and "ceiling" in text.output
    assert list(tmp_path.iterdir()) == []


def test_jpeg_draft_is_opt_in_and_a_run_of_its_own(tiny_base, encoder, tmp_path):
    from PIL import Image

    from fashion_retrieval.data.images import open_image

    catalog = make_catalog(tmp_path / "cat", n=8, seed=2, image_size=256)  # JPEGs 8x the 32 px model input
    exact = embed_catalog(_config(catalog, tiny_base, tmp_path / "exact"), encoder=encoder, progress=False)
    assert exact["embedded"] == 8
    drafted = replace(_config(catalog, tiny_base, tmp_path / "exact"), jpeg_draft=True)
    with pytest.raises(FashionRetrievalError, match="another --jpeg-draft"):
        embed_catalog(drafted, encoder=encoder, progress=False)  # the vectors would differ: not a resume
    embed_catalog(replace(drafted, out=str(tmp_path / "draft")), encoder=encoder, progress=False)
    a, b = load_embeddings(tmp_path / "exact"), load_embeddings(tmp_path / "draft")
    first = a.metadata.at[0, "path"]
    with Image.open(first) as image:
        image.draft("RGB", (32, 32))
        assert image.size[0] < 256  # decoded reduced
    np.testing.assert_allclose(
        b.image_embeddings[0], encoder.encode_image(open_image(first, reduce_to=(32, 32))), atol=1e-5
    )
    assert not np.allclose(a.image_embeddings, b.image_embeddings, atol=1e-6)
