"""Training: loss goes down, every output is written, best_model.pth reloads exactly, resume continues."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from fashion_retrieval import FashionEmbeddingModel, read_checkpoint
from fashion_retrieval.data.synthetic import make_catalog
from fashion_retrieval.demo import TRAIN_EPOCHS
from fashion_retrieval.model.features import image_features, text_features
from fashion_retrieval.train.loop import TrainConfig, Trainer


@pytest.fixture(scope="module")
def train_catalog(tmp_path_factory):
    return make_catalog(tmp_path_factory.mktemp("train_cat"), n=48, seed=6, image_size=32)


def _config(catalog, base, out, **kw):
    defaults = dict(
        catalog=str(catalog),
        base=str(base),
        out=str(out),
        epochs=1,
        batch_size=8,
        lr=5e-3,
        lora_r=4,
        lora_alpha=8,
        device="cpu",
        val_fraction=0.25,
        seed=0,
    )
    return TrainConfig(**{**defaults, **kw})


def test_lora_training_writes_outputs_and_reloads_exactly(train_catalog, tiny_base, tmp_path):
    trainer = Trainer(_config(train_catalog, tiny_base, tmp_path / "run", epochs=1))
    batch = trainer.train_set.collate([trainer.train_set[i] for i in range(8)])
    with torch.no_grad():
        before = trainer._loss(batch).item()
    summary = trainer.run(progress=False)
    with torch.no_grad():
        after = trainer._loss(batch).item()
    assert after < before
    out = tmp_path / "run"
    for name in (
        "model_weights/best_model.pth",
        "adapter/adapter_config.json",
        "metrics.json",
        "train_config.json",
        "curves.png",
        "state/last.pt",
    ):
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text())["best_epoch"] == 1 == summary["best_epoch"]
    assert "text_to_image_recall@10" in summary["best"]
    ckpt = read_checkpoint(out / "model_weights" / "best_model.pth")
    assert ckpt.format == "original-lora" and ckpt.lora_rank == 4
    reloaded = FashionEmbeddingModel(out / "model_weights" / "best_model.pth", tiny_base, device="cpu", lora_alpha=8)
    adapter = FashionEmbeddingModel(out / "adapter", tiny_base, device="cpu")
    trainer.model.eval()
    with torch.no_grad():
        pixels = batch["pixels"]
        expected_img = image_features(trainer.blip, pixels).numpy()
        tokens = reloaded.tokenize(batch["captions"])
        expected_txt = text_features(trainer.blip, tokens["input_ids"], tokens["attention_mask"]).numpy()
    for model in (reloaded, adapter):
        np.testing.assert_allclose(model.encode_pixels(pixels), expected_img, atol=1e-5)
        np.testing.assert_allclose(
            model.encode_tokens(tokens["input_ids"], tokens["attention_mask"]), expected_txt, atol=1e-5
        )


def test_resume_continues_where_it_stopped(train_catalog, tiny_base, tmp_path):
    straight = Trainer(_config(train_catalog, tiny_base, tmp_path / "a", epochs=2)).run(progress=False)
    first = Trainer(_config(train_catalog, tiny_base, tmp_path / "b", epochs=2)).run(progress=False, epochs_this_run=1)
    assert not first["resumed"] and first["epochs_run"] == 1
    resumed = Trainer(_config(train_catalog, tiny_base, tmp_path / "b", epochs=2)).run(progress=False)
    assert resumed["resumed"] and resumed["epochs_run"] == 2
    assert [m["loss"] for m in resumed["history"]] == pytest.approx([m["loss"] for m in straight["history"]], rel=1e-4)
    with pytest.raises(Exception, match="other settings"):
        Trainer(_config(train_catalog, tiny_base, tmp_path / "b", epochs=3, lr=1e-2)).run(progress=False)


def test_full_finetune_with_soft_targets_and_itm(train_catalog, tiny_base, tmp_path):
    config = _config(
        train_catalog,
        tiny_base,
        tmp_path / "full",
        full=True,
        itm=True,
        match_attributes=("garment", "color"),
        partial_attributes=("garment",),
    )
    summary = Trainer(config).run(progress=False)
    assert summary["epochs_run"] == 1
    path = tmp_path / "full" / "model_weights" / "best_model.pth"
    assert read_checkpoint(path).format == "original-lora"  # zero LoRA: the original loader reads it too
    assert (tmp_path / "full" / "model" / "config.json").is_file()
    FashionEmbeddingModel(path, tiny_base, device="cpu")  # loads strictly
    with pytest.raises(Exception, match="not in the catalogue"):
        Trainer(replace(config, match_attributes=("fabric",)))


@pytest.mark.slow  # 10-20 s: started early, so it does not end the run on one worker
def test_demo_no_serve_json(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "fashion_retrieval",
        "demo",
        "--workdir",
        str(tmp_path / "demo"),
        "--n",
        "160",
        "--train-seconds",
        "2",
        "--no-serve",
        "--json",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    for key in ("recall@1", "recall@5", "recall@10", "attribute_precision@10", "seconds", "workdir"):
        assert key in summary
    assert 0.0 <= summary["recall@1"] <= summary["recall@5"] <= summary["recall@10"] <= 1.0
    assert summary["heldout_queries"] == 16 and summary["gallery"] == summary["indexed"] == 160
    # the CLI trains to the demo's recipe unless told otherwise (the time cap above ends this run early)
    assert json.loads((tmp_path / "demo" / "training" / "train_config.json").read_text())["epochs"] == TRAIN_EPOCHS
    assert "best_new_recall@10" in summary["compose"] or "skipped" in summary["compose"]
    # again, printed for a person (without --json): the workdir is reused, not retrained, and the summary the run
    # leaves in it says so (in this process: the run above checked the CLI's own process and its pure stdout)
    from typer.testing import CliRunner

    from fashion_retrieval.cli import app

    printed = CliRunner().invoke(app, cmd[3:-1])
    assert printed.exit_code == 0, printed.output[-2000:]
    assert "composed queries" in printed.stdout and "-> in red (searching for:" in printed.stdout
    second = json.loads((tmp_path / "demo" / "demo_summary.json").read_text())
    assert second["recall@10"] == summary["recall@10"]
    assert second["step_seconds"]["train"] < summary["step_seconds"]["train"]


def test_training_skips_unreadable_images_and_lists_them(tiny_base, tmp_path):
    from tests.pipeline.conftest import BAD, add_odd_and_bad_images

    catalog = make_catalog(tmp_path / "messy", n=30, seed=1, image_size=32)
    add_odd_and_bad_images(catalog)
    summary = Trainer(_config(catalog, tiny_base, tmp_path / "run")).run(progress=False)
    failures = [json.loads(line) for line in (tmp_path / "run" / "failures.jsonl").read_text().splitlines()]
    assert {f["id"] for f in failures} == {f"odd-{k}" for k in BAD}
    for failure in failures:
        assert BAD[failure["id"].removeprefix("odd-")] in failure["reason"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["failed_images"] == len(BAD) == summary["failed_images"]
    assert summary["train_items"] + summary["val_items"] == 40 - len(BAD)
    from fashion_retrieval.errors import ImageError

    with pytest.raises(ImageError):
        Trainer(_config(catalog, tiny_base, tmp_path / "strict", on_error="fail"))


def test_a_catalogue_of_only_bad_images_is_a_one_line_error(tiny_base, tmp_path):
    from typer.testing import CliRunner

    from fashion_retrieval.cli import app

    catalog = make_catalog(tmp_path / "bad", n=12, seed=2, image_size=32)
    for image in (tmp_path / "bad" / "selected_images").iterdir():
        image.write_bytes(b"not an image")
    args = ["train", str(catalog), "--base", str(tiny_base), "--out", str(tmp_path / "o"), "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--batch-size", "4"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "none of its 12 images can be read" in errors[0]
