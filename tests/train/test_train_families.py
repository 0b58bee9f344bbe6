"""Fine-tuning other model families with PEFT LoRA (their own target modules), and what a family lacks refused."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch

from fashion_retrieval import FashionEmbeddingModel, read_checkpoint
from fashion_retrieval.data.synthetic import make_catalog
from fashion_retrieval.errors import FashionRetrievalError
from fashion_retrieval.model.tiny_families import build_tiny
from fashion_retrieval.train.loop import TrainConfig, Trainer


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return make_catalog(tmp_path_factory.mktemp("train_families"), n=40, seed=8, image_size=40)


def _config(catalog, base, out, **kw) -> TrainConfig:
    settings = dict(epochs=1, batch_size=8, lr=5e-3, lora_r=4, lora_alpha=8, device="cpu", val_fraction=0.25)
    return TrainConfig(catalog=str(catalog), base=str(base), out=str(out), **{**settings, **kw})


NEEDS_OPEN_CLIP = pytest.mark.skipif(importlib.util.find_spec("open_clip") is None, reason="runs in .venv-open-clip")
OPEN_CLIP = pytest.param("open_clip", marks=[NEEDS_OPEN_CLIP, pytest.mark.open_clip])


@pytest.mark.parametrize("family", ["clip", "siglip", OPEN_CLIP])
def test_lora_on_the_familys_own_modules_trains_and_reloads_exactly(family, catalog, tmp_path):
    base = build_tiny(family, tmp_path / "base", pd.read_csv(catalog)["caption"])
    trainer = Trainer(_config(catalog, base, tmp_path / "run"))
    assert trainer.targets == trainer.family.lora_targets and trainer.family.name == family
    batch = trainer.train_set.collate([trainer.train_set[i] for i in range(8)])
    with torch.no_grad():
        before = trainer._loss(batch).item()
    trainer.run(progress=False)
    with torch.no_grad():
        after = trainer._loss(batch).item()
    assert after < before
    trainer.model.eval()
    with torch.no_grad():
        tokens = trainer.processors.tokenizer(batch["captions"])
        want_image = trainer.family.image_features(trainer.network, batch["pixels"]).numpy()
        want_text = trainer.family.text_features(trainer.network, **tokens).numpy()
    ckpt = read_checkpoint(tmp_path / "run" / "model_weights" / "best_model.pth")
    assert ckpt.format == "original-lora" and ckpt.lora_rank == 4
    for weights, alpha in (
        (tmp_path / "run" / "model_weights" / "best_model.pth", 8.0),
        (tmp_path / "run" / "adapter", 32.0),
    ):
        model = FashionEmbeddingModel(weights, base, device="cpu", lora_alpha=alpha)
        np.testing.assert_allclose(model.encode_pixels(batch["pixels"]), want_image, atol=1e-5)
        np.testing.assert_allclose(
            model.encode_tokens(tokens["input_ids"], tokens["attention_mask"]), want_text, atol=1e-5
        )
    plain = FashionEmbeddingModel(None, base, device="cpu")
    assert np.abs(plain.encode_pixels(batch["pixels"]) - want_image).max() > 1e-4  # training changed the vectors


def test_full_finetune_of_clip_writes_a_folder_that_loads(catalog, tmp_path):
    base = build_tiny("clip", tmp_path / "base", pd.read_csv(catalog)["caption"])
    Trainer(_config(catalog, base, tmp_path / "run", full=True)).run(progress=False)
    model = FashionEmbeddingModel(None, tmp_path / "run" / "model", device="cpu")
    assert model.identity.family == "clip" and model.encode_text("a red dress").shape == (64,)


def test_itm_training_needs_a_matching_head(catalog, tmp_path):
    base = build_tiny("clip", tmp_path / "base", ["a red dress"])
    with pytest.raises(FashionRetrievalError, match="--itm trains an image-text matching head"):
        Trainer(_config(catalog, base, tmp_path / "run", itm=True))
