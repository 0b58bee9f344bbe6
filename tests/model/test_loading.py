"""Loading every checkpoint format: merged LoRA equals the unmerged wrapped model; bad inputs fail clearly."""

from __future__ import annotations

import argparse
import pickle

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from safetensors.torch import save_file
from transformers import BlipForImageTextRetrieval

from fashion_retrieval import FashionEmbeddingModel, load_model, read_checkpoint
from fashion_retrieval.errors import CheckpointError
from tests.conftest import CAPTIONS
from tests.helpers import (
    TARGETS,
    perturb_base,
    reference_image_embedding,
    reference_text_embedding,
    wrap_original,
    write_image,
)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    colors = [(200, 30, 30), (30, 30, 200), (240, 240, 240), (20, 160, 20), (230, 200, 20)]
    return [write_image(folder / f"{i}.jpg", c, size=(50 + 7 * i, 70)) for i, c in enumerate(colors)]


def _inputs(base, images, texts=CAPTIONS):
    from transformers import BlipProcessor

    processor = BlipProcessor.from_pretrained(base)
    from PIL import Image

    pixels = processor(images=[Image.open(p).convert("RGB") for p in images], return_tensors="pt")["pixel_values"]
    tokens = processor.tokenizer(list(texts), padding=True, return_tensors="pt")
    return pixels, tokens


def _expected(model, base, images):
    pixels, tokens = _inputs(base, images)
    return reference_image_embedding(model, pixels), reference_text_embedding(
        model, tokens["input_ids"], tokens["attention_mask"]
    )


def _encode(encoder: FashionEmbeddingModel, images):
    return encoder.encode_batch_images(images, batch_size=2), encoder.encode_batch_texts(CAPTIONS, batch_size=2)


@pytest.fixture(scope="module")
def original_checkpoint(tiny_base, tmp_path_factory):
    torch.manual_seed(3)
    model = BlipForImageTextRetrieval.from_pretrained(tiny_base).eval()
    perturb_base(model)
    wrapped = wrap_original(model, rank=4, alpha=32).eval()
    path = tmp_path_factory.mktemp("orig") / "best_model.pth"
    torch.save(wrapped.state_dict(), path)
    return path, wrapped


def test_cosine_equals_model_forward_score(tiny_base, images):
    encoder = FashionEmbeddingModel(None, tiny_base, device="cpu")
    pixels, tokens = _inputs(tiny_base, images[:1], CAPTIONS[:1])
    with torch.no_grad():
        score = encoder.model(
            input_ids=tokens["input_ids"],
            pixel_values=pixels,
            attention_mask=tokens["attention_mask"],
            use_itm_head=False,
        ).itm_score.item()
    ours = encoder.compute_similarity(encoder.encode_image(images[0]), encoder.encode_text(CAPTIONS[0]))
    assert ours == pytest.approx(score, abs=1e-5)


def test_original_checkpoint_matches_unmerged_wrapped_model(tiny_base, images, original_checkpoint):
    path, wrapped = original_checkpoint
    ckpt = read_checkpoint(path)
    assert ckpt.format == "original-lora" and ckpt.lora_rank == 4
    assert all(any(t in m for t in TARGETS) for m in ckpt.lora)
    expected_img, expected_txt = _expected(wrapped, tiny_base, images)
    got_img, got_txt = _encode(FashionEmbeddingModel(path, tiny_base, device="cpu"), images)
    np.testing.assert_allclose(got_img, expected_img, atol=1e-5)
    np.testing.assert_allclose(got_txt, expected_txt, atol=1e-5)
    # the LoRA really changed something: a plain base gives other vectors
    plain_img, _ = _encode(FashionEmbeddingModel(None, tiny_base, device="cpu"), images)
    assert np.abs(plain_img - got_img).max() > 1e-3


def test_original_checkpoint_alpha_is_a_parameter(tiny_base, images, original_checkpoint):
    path, _ = original_checkpoint
    a = FashionEmbeddingModel(path, tiny_base, device="cpu", lora_alpha=32).encode_batch_texts(CAPTIONS)
    b = FashionEmbeddingModel(path, tiny_base, device="cpu", lora_alpha=8).encode_batch_texts(CAPTIONS)
    assert np.abs(a - b).max() > 1e-4


@pytest.mark.parametrize("wrapper", ["state_dict", "model_state_dict", "model"])
def test_wrapped_and_safetensors_original(tiny_base, images, original_checkpoint, tmp_path, wrapper):
    path, wrapped = original_checkpoint
    state = torch.load(path, weights_only=True)
    wrapped_path = tmp_path / "wrapped.pth"
    torch.save({wrapper: state, "epoch": 3}, wrapped_path)
    st_path = tmp_path / "best_model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, st_path)
    expected_img, _ = _expected(wrapped, tiny_base, images)
    for candidate in (wrapped_path, st_path):
        ckpt = read_checkpoint(candidate)
        assert ckpt.format == "original-lora"
        got_img, _ = _encode(FashionEmbeddingModel(candidate, tiny_base, device="cpu"), images)
        np.testing.assert_allclose(got_img, expected_img, atol=1e-5)
    assert read_checkpoint(wrapped_path).wrapper_key == wrapper


@pytest.fixture(scope="module")
def peft_model(tiny_base):
    torch.manual_seed(5)
    model = BlipForImageTextRetrieval.from_pretrained(tiny_base)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=list(TARGETS), init_lora_weights=False)
    return get_peft_model(model, config).eval()


def test_peft_adapter_folder(tiny_base, images, peft_model, tmp_path):
    peft_model.save_pretrained(tmp_path / "adapter")
    ckpt = read_checkpoint(tmp_path / "adapter", lora_alpha=999)
    assert ckpt.format == "peft-adapter" and ckpt.lora_alpha == 8  # alpha from adapter_config.json
    expected_img, expected_txt = _expected(peft_model, tiny_base, images)
    got_img, got_txt = _encode(FashionEmbeddingModel(tmp_path / "adapter", tiny_base, device="cpu"), images)
    np.testing.assert_allclose(got_img, expected_img, atol=1e-5)
    np.testing.assert_allclose(got_txt, expected_txt, atol=1e-5)


@pytest.mark.parametrize("kind", ["adapter_only", "full_peft_state"])
def test_peft_state_dicts(tiny_base, images, peft_model, tmp_path, kind):
    state = get_peft_model_state_dict(peft_model) if kind == "adapter_only" else peft_model.state_dict()
    state = {f"base_model.model.{k}" if not k.startswith("base_model.") else k: v for k, v in state.items()}
    path = tmp_path / "peft.pt"
    torch.save(state, path)
    ckpt = read_checkpoint(path, lora_alpha=8)
    assert ckpt.format == "peft-state-dict" and ckpt.lora_rank == 4
    expected_img, expected_txt = _expected(peft_model, tiny_base, images)
    got_img, got_txt = _encode(FashionEmbeddingModel(path, tiny_base, device="cpu", lora_alpha=8), images)
    np.testing.assert_allclose(got_img, expected_img, atol=1e-5)
    np.testing.assert_allclose(got_txt, expected_txt, atol=1e-5)


def test_full_state_dict_and_hf_folder(tiny_base, images, tmp_path):
    torch.manual_seed(9)
    model = BlipForImageTextRetrieval.from_pretrained(tiny_base).eval()
    perturb_base(model, seed=4)
    torch.save(model.state_dict(), tmp_path / "full.pth")
    model.save_pretrained(tmp_path / "hf")
    expected_img, _ = _expected(model, tiny_base, images)
    for path, fmt in ((tmp_path / "full.pth", "full-state-dict"), (tmp_path / "hf", "hf-folder")):
        assert read_checkpoint(path).format == fmt
        got_img, _ = _encode(FashionEmbeddingModel(path, tiny_base, device="cpu"), images)
        np.testing.assert_allclose(got_img, expected_img, atol=1e-5)


def test_captioning_base_needs_the_checkpoint(tiny_captioning_base, tiny_base, images, original_checkpoint):
    with pytest.raises(CheckpointError, match="no trained weights.*text_encoder"):
        load_model(tiny_captioning_base)
    path, wrapped = original_checkpoint
    expected_img, expected_txt = _expected(wrapped, tiny_base, images)
    got_img, got_txt = _encode(FashionEmbeddingModel(path, tiny_captioning_base, device="cpu"), images)
    np.testing.assert_allclose(got_img, expected_img, atol=1e-5)
    np.testing.assert_allclose(got_txt, expected_txt, atol=1e-5)


def _malformed(original_checkpoint, tmp_path):
    path, _ = original_checkpoint
    state = torch.load(path, weights_only=True)
    wrong_shape = dict(state)
    key = next(k for k in state if k.endswith("vision_proj.linear.weight"))
    wrong_shape[key] = torch.zeros(7, 3)
    missing = {k: v for k, v in state.items() if "itm_head" not in k}
    extra = dict(state, **{"not_a_module.weight": torch.zeros(2)})

    files = {}
    for name, obj in {"wrong_shape": wrong_shape, "missing": missing, "extra": extra}.items():
        files[name] = tmp_path / f"{name}.pth"
        torch.save(obj, files[name])
    files["random"] = tmp_path / "random.pth"
    files["random"].write_bytes(np.random.default_rng(0).bytes(4096))
    files["pickle"] = tmp_path / "pickle.pth"
    files["pickle"].write_bytes(pickle.dumps({"model": argparse.Namespace(weights=1)}))
    files["list"] = tmp_path / "list.pth"
    torch.save([1, 2, 3], files["list"])
    files["empty"] = tmp_path / "empty.pth"
    files["empty"].write_bytes(b"")
    return files


@pytest.mark.parametrize(
    "name, message",
    [
        ("wrong_shape", r"original-lora.*shape mismatch 1: .*vision_proj\.weight checkpoint \(7, 3\) vs model"),
        ("missing", r"missing 2: itm_head\.bias \(2,\), itm_head\.weight"),
        ("extra", r"unexpected 1: not_a_module\.weight"),
        ("random", r"not a PyTorch or safetensors checkpoint"),
        ("pickle", r"refused to unpickle"),
        ("list", r"holds a list, not a state dict"),
        ("empty", r"the file is empty"),
    ],
)
def test_malformed_checkpoints_fail_clearly(tiny_base, original_checkpoint, tmp_path, name, message):
    files = _malformed(original_checkpoint, tmp_path)
    with pytest.raises(CheckpointError, match=message):
        load_model(tiny_base, files[name], device="cpu")


def test_missing_checkpoint_and_base(tiny_base, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tiny_base, tmp_path / "nope.pth")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(tmp_path / "empty_dir")


def test_identity_records_checkpoint(tiny_base, original_checkpoint):
    path, _ = original_checkpoint
    a = load_model(tiny_base, path, device="cpu").identity
    b = load_model(tiny_base, None, device="cpu").identity
    assert a.checkpoint_sha256 and a.key != b.key and a.embed_dim == 256
    assert load_model(tiny_base, path, device="cpu").identity.key == a.key


def test_pickle_checkpoints_are_refused_on_a_torch_with_a_known_bypass(tiny_base, original_checkpoint, monkeypatch):
    path, _ = original_checkpoint
    monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")
    with pytest.raises(
        CheckpointError, match=r"torch 2\.5\.1\+cpu .*CVE-2026-24747.*torch>=2\.10.*safetensors"
    ) as info:
        load_model(tiny_base, path, device="cpu")
    assert "\n" not in str(info.value)
    # safetensors never unpickles: always allowed
    state = torch.load(path, weights_only=True)
    safe = path.with_suffix(".safetensors")
    save_file({k: v.contiguous() for k, v in state.items()}, str(safe))
    assert load_model(tiny_base, safe, device="cpu").checkpoint.format == "original-lora"


def test_one_digest_helper_keeps_the_recorded_digests(tmp_path):
    import hashlib

    from fashion_retrieval.files import sha256_of
    from fashion_retrieval.model.checkpoint import file_sha256

    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"x" * 3_000_000)
    b.write_bytes(b"yz")
    assert sha256_of(a) == file_sha256(a) == hashlib.sha256(a.read_bytes()).hexdigest()
    # a folder: the contents of its files in name order, as earlier versions recorded it
    assert file_sha256(tmp_path) == hashlib.sha256(a.read_bytes() + b.read_bytes()).hexdigest()
    assert sha256_of(b"a", b) == hashlib.sha256(b"a" + b"yz").hexdigest()
