"""Every model family through the real loading code: detection, vectors equal to the family's own
``get_image_features`` / ``get_text_features`` (or open_clip's ``encode_image`` / ``encode_text``), preprocessing
equal to its own processor, checkpoints, and what a family lacks refused clearly.

The references are computed here from transformers / open_clip directly, never through the package."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fashion_retrieval import FashionEmbeddingModel
from fashion_retrieval.errors import CheckpointError, UnsupportedFeatureError
from fashion_retrieval.model.families import detect_family
from fashion_retrieval.model.tiny_families import build_tiny
from tests.conftest import CAPTIONS

HAS_OPEN_CLIP = importlib.util.find_spec("open_clip") is not None
NEEDS_OPEN_CLIP = pytest.mark.skipif(
    not HAS_OPEN_CLIP, reason="open_clip needs torchvision; these run in .venv-open-clip (make test)"
)
HF_FAMILIES = ["clip", "siglip", "chinese_clip"]
FAMILIES = [*HF_FAMILIES, pytest.param("open_clip", marks=[NEEDS_OPEN_CLIP, pytest.mark.open_clip])]
TEXTS = [*CAPTIONS, "一件红色的连衣裙", "dress", "The lady wears a long black coat with a belt and a white scarf."]


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    built: dict[str, object] = {}

    def get(family: str):
        if family not in built:
            built[family] = build_tiny(family, tmp_path_factory.mktemp(f"tiny_{family}"), TEXTS)
        return built[family]

    return get


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    # odd and non-square sizes: the resize, the crop offset and the filter all show
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(53, 37), (40, 64), (33, 33)]]


def _hf_reference(family: str, folder, images, texts) -> tuple[np.ndarray, np.ndarray]:
    import transformers

    names = {"clip": "CLIP", "siglip": "Siglip", "chinese_clip": "ChineseCLIP"}[family]
    model = getattr(transformers, f"{names}Model").from_pretrained(folder).eval()
    processor = getattr(transformers, f"{names}Processor").from_pretrained(folder, backend="pil")
    with torch.no_grad():
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        image = model.get_image_features(pixel_values=pixels).pooler_output
        if family == "siglip":  # as its model card says: padded to the maximum length, no mask
            tokens = processor.tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt")
            text = model.get_text_features(input_ids=tokens["input_ids"]).pooler_output
        else:
            tokens = processor.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
            text = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
            text = text.pooler_output
    return F.normalize(image, dim=-1).numpy(), F.normalize(text, dim=-1).numpy()


def _open_clip_reference(folder, images, texts) -> tuple[np.ndarray, np.ndarray]:
    import open_clip

    model, _, transform = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    with torch.no_grad():
        image = model.eval().encode_image(torch.stack([transform(i) for i in images]), normalize=True)
        text = model.encode_text(tokenizer(texts), normalize=True)
    return image.numpy(), text.numpy()


def reference(family: str, folder, images, texts) -> tuple[np.ndarray, np.ndarray]:
    if family == "open_clip":
        return _open_clip_reference(folder, images, texts)
    return _hf_reference(family, folder, images, texts)


@pytest.mark.parametrize("family", FAMILIES)
def test_vectors_equal_the_familys_own_features(family, bases, images):
    folder = bases(family)
    encoder = FashionEmbeddingModel(None, folder, device="cpu")
    want_image, want_text = reference(family, folder, images, TEXTS)
    got_image = encoder.encode_batch_images(images, batch_size=2)
    got_text = encoder.encode_batch_texts(TEXTS, batch_size=3)  # length-sorted batches, order restored
    assert got_image.shape == want_image.shape and got_text.shape == want_text.shape
    np.testing.assert_allclose(got_image, want_image, atol=1e-5)
    np.testing.assert_allclose(got_text, want_text, atol=1e-5)
    assert encoder.identity.family == family and encoder.embed_dim == want_image.shape[1]
    # a random model still tells captions apart: rankings in the other tests mean something
    assert np.abs(got_text[0] - got_text[1]).max() > 1e-2


@pytest.mark.parametrize("family", FAMILIES)
def test_family_detected_from_the_folders_config_and_reported(family, bases):
    from fashion_retrieval.model.inspect import inspect_checkpoint

    folder = bases(family)
    assert detect_family(str(folder)).name == family
    report = inspect_checkpoint(folder)
    assert report["family"] == family


def test_vector_size_follows_the_model(bases, tiny_base):
    sizes = {f: FashionEmbeddingModel(None, bases(f), device="cpu").embed_dim for f in HF_FAMILIES}
    assert sizes == {"clip": 64, "siglip": 32, "chinese_clip": 64}
    assert FashionEmbeddingModel(None, tiny_base, device="cpu").embed_dim == 256


@pytest.mark.parametrize("family", FAMILIES)
def test_preprocessing_equals_the_familys_processor(family, bases, images):
    encoder = FashionEmbeddingModel(None, bases(family), device="cpu")
    reference_of = encoder.family.reference_preprocess(encoder.model, encoder.loaded.processors)
    for image in images:
        np.testing.assert_allclose(encoder.preprocess(image), reference_of(image), atol=1e-4)


def test_rerank_needs_an_image_text_matching_head(bases, tiny_base, images):
    clip = FashionEmbeddingModel(None, bases("clip"), device="cpu")
    assert not clip.has_itm
    with pytest.raises(UnsupportedFeatureError, match="no image-text matching head"):
        clip.itm_scores("a red dress", images)
    assert FashionEmbeddingModel(None, tiny_base, device="cpu").has_itm


def test_peft_adapter_on_clip_is_merged_and_equals_the_adapted_model(bases, tmp_path, images):
    from peft import LoraConfig, get_peft_model
    from transformers import CLIPModel

    folder = bases("clip")
    torch.manual_seed(3)
    peft_model = get_peft_model(
        CLIPModel.from_pretrained(folder), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    with torch.no_grad():  # a trained adapter: B is not zero
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.2)
    peft_model.save_pretrained(tmp_path / "adapter")
    encoder = FashionEmbeddingModel(tmp_path / "adapter", folder, device="cpu")
    merged = peft_model.merge_and_unload().eval()
    processor_pixels = encoder.processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        want = F.normalize(merged.get_image_features(pixel_values=processor_pixels).pooler_output, dim=-1).numpy()
    np.testing.assert_allclose(encoder.encode_batch_images(images), want, atol=1e-5)
    assert encoder.identity.checkpoint_format == "peft-adapter"
    plain = FashionEmbeddingModel(None, folder, device="cpu")
    assert np.abs(plain.encode_batch_images(images) - want).max() > 1e-3  # the adapter changed the vectors


def test_a_checkpoint_of_another_family_is_refused_naming_keys(bases, tiny_base, tmp_path):
    from safetensors.torch import save_file
    from transformers import BlipForImageTextRetrieval

    state = BlipForImageTextRetrieval.from_pretrained(tiny_base).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "blip.safetensors"))
    with pytest.raises(CheckpointError, match="does not fit this model's architecture.*text_encoder"):
        FashionEmbeddingModel(tmp_path / "blip.safetensors", bases("clip"), device="cpu")


def test_unknown_model_type_is_refused_naming_it(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="model_type 'bert'.*Loadable: BLIP, CLIP, SigLIP"):
        FashionEmbeddingModel(None, tmp_path, device="cpu")


@pytest.mark.open_clip
def test_an_open_clip_folder_without_weights_is_refused(tmp_path):
    config = {"model_cfg": {"embed_dim": 8, "vision_cfg": {"image_size": 32}, "text_cfg": {}}}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(config))
    message = "no weights file" if HAS_OPEN_CLIP else "pip install 'fashion-retrieval\\[open_clip\\]'"
    with pytest.raises(CheckpointError, match=message):
        FashionEmbeddingModel(None, tmp_path, device="cpu")


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_bf16_parity_probe_runs_for_every_family(family, bases, monkeypatch, tmp_path):
    """``--dtype auto`` probes each model: the probe encodes through the family's own functions."""
    from fashion_retrieval.model import precision

    monkeypatch.delenv("FASHION_RETRIEVAL_DTYPE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: "AVX512-BF16")
    encoder = FashionEmbeddingModel(None, bases(family), device="cpu")
    figures = encoder.precision.parity
    assert figures["probes"] == 2 * precision.PROBE_ITEMS and 0.0 < figures["min_cosine"] <= 1.0
    assert encoder.precision.name in ("float32", "bfloat16")


def test_open_clip_weights_win_over_a_remote_code_config(tmp_path):
    """Hub repos of open_clip models (Marqo's) carry a transformers-style config.json for their remote code
    beside the open_clip checkpoint: the open_clip weights decide."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "siglip", "architectures": ["MarqoFashionSigLIP"]}))
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"embed_dim": 8}}))
    (tmp_path / "open_clip_pytorch_model.bin").write_bytes(b"")
    assert detect_family(str(tmp_path)).name == "open_clip"
    (tmp_path / "open_clip_pytorch_model.bin").unlink()
    assert detect_family(str(tmp_path)).name == "siglip"  # no open_clip weights: the transformers config


@pytest.mark.parametrize("family", ["blip", *FAMILIES])
def test_a_batch_cut_from_the_tokenised_table_is_the_batch_tokenised_alone(family, bases):
    """Training tokenises its captions once (``TextTokenizer.table``) and cuts each batch from them (``rows``):
    every cut must be exactly what tokenising that batch gives (per-batch padding, or the family's maximum)."""
    tokenizer = FashionEmbeddingModel(None, bases(family), device="cpu").text_tokenizer
    table = tokenizer.table(TEXTS)
    if table is None:  # a family that shows no padding to trim: training tokenises each batch
        assert not tokenizer.spec.attention_mask
        return
    rng = np.random.default_rng(0)
    for size in (1, 2, 3, len(TEXTS)):
        index = rng.permutation(len(TEXTS))[:size].tolist()
        cut, alone = tokenizer.rows(table, index), tokenizer([TEXTS[i] for i in index])
        for key in ("input_ids", "attention_mask"):
            assert torch.equal(cut[key], alone[key]), (family, index, key)
