"""The original toolkit's API: single vs batch, text length sorting, search, image handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fashion_retrieval import FashionEmbeddingModel
from fashion_retrieval.data.images import ImagePreprocessor, open_image
from fashion_retrieval.errors import ImageError
from tests.conftest import CAPTIONS
from tests.helpers import write_image


@pytest.fixture(scope="module")
def encoder(tiny_base):
    return FashionEmbeddingModel(None, tiny_base, device="cpu")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("enc_imgs")
    colors = [(200, 30, 30), (30, 30, 200), (240, 240, 240), (20, 160, 20), (230, 200, 20), (90, 0, 90)]
    return [str(write_image(folder / f"{i}.jpg", c, size=(40 + 9 * i, 90 - 5 * i))) for i, c in enumerate(colors)]


def test_shapes_dtype_and_norm(encoder, images):
    img, txt = encoder.encode_image(images[0]), encoder.encode_text(CAPTIONS[0])
    assert img.shape == (256,) and txt.shape == (256,) and img.dtype == np.float32 == txt.dtype
    batch = encoder.encode_batch_images(images, batch_size=4)
    assert batch.shape == (len(images), 256)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)


def test_batch_equals_single_images(encoder, images):
    batch = encoder.encode_batch_images(images, batch_size=4)
    singles = np.stack([encoder.encode_image(p) for p in images])
    np.testing.assert_allclose(batch, singles, atol=1e-5)


def test_batch_equals_single_texts_with_mixed_lengths(encoder):
    texts = ["dress", CAPTIONS[1] + " " + CAPTIONS[0], "a", CAPTIONS[2], "red red red red red red red", ""]
    batch = encoder.encode_batch_texts(texts, batch_size=2)
    singles = np.stack([encoder.encode_text(t) for t in texts])
    np.testing.assert_allclose(batch, singles, atol=1e-5)
    assert np.abs(batch[0] - batch[1]).max() > 1e-3  # different texts, different vectors, order kept


def test_long_text_is_truncated(encoder):
    vec = encoder.encode_text("red " * 500)
    assert vec.shape == (256,) and np.isfinite(vec).all()


def test_find_similar_match_brute_force(encoder, images):
    image_emb = encoder.encode_batch_images(images)
    text_emb = encoder.encode_batch_texts(CAPTIONS)
    found = encoder.find_similar_images(CAPTIONS[0], image_emb, images, top_k=3)
    scores = image_emb @ encoder.encode_text(CAPTIONS[0])
    order = sorted(range(len(images)), key=lambda i: -scores[i])[:3]
    assert [p for p, _ in found] == [images[i] for i in order]
    assert [s for _, s in found] == pytest.approx([float(scores[i]) for i in order], abs=1e-6)
    found_t = encoder.find_similar_texts(images[1], text_emb, CAPTIONS, top_k=10)
    scores_t = text_emb @ encoder.encode_image(images[1])
    assert [t for t, _ in found_t] == [CAPTIONS[i] for i in np.argsort(-scores_t)]
    assert len(found_t) == len(CAPTIONS)  # top_k larger than the gallery


def test_compute_similarity_is_cosine(encoder, images):
    a, b = encoder.encode_image(images[0]), encoder.encode_text(CAPTIONS[0])
    assert encoder.compute_similarity(a, b) == pytest.approx(float(a @ b), abs=1e-6)
    assert encoder.compute_similarity(2 * a, b) == pytest.approx(float(a @ b), abs=1e-6)


def test_preprocessing_equals_the_processor(encoder, images):
    image = Image.open(images[3]).convert("RGB")
    ours = ImagePreprocessor.from_processor(encoder.processor)(image)
    theirs = encoder.processor(images=image, return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_modes_and_exif(tmp_path, encoder):
    rgba = Image.new("RGBA", (30, 30), (255, 0, 0, 0))  # fully transparent -> white
    rgba.save(tmp_path / "a.png")
    assert open_image(tmp_path / "a.png").getpixel((5, 5)) == (255, 255, 255)
    for mode in ("L", "CMYK", "P", "1"):
        write_image(
            tmp_path / f"m{mode}.png" if mode != "CMYK" else tmp_path / "m.jpg",
            mode=mode,
            fmt="PNG" if mode != "CMYK" else "JPEG",
        )
    for path in tmp_path.glob("m*"):
        assert encoder.encode_image(path).shape == (256,)
    rotated = Image.new("RGB", (20, 10), (0, 0, 255))
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    rotated.save(tmp_path / "rot.jpg", exif=exif)
    assert open_image(tmp_path / "rot.jpg").size == (10, 20)
    # a caller's own PIL image is turned on a copy and left as it was
    with Image.open(tmp_path / "rot.jpg") as theirs:
        theirs.load()
        assert open_image(theirs).size == (10, 20)
        assert theirs.size == (20, 10) and theirs.getexif().get(0x0112) == 6


def test_bad_single_images_raise_naming_the_file(tmp_path, encoder):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    full = tmp_path / "full.jpg"
    write_image(full, size=(200, 200))
    (tmp_path / "trunc.jpg").write_bytes(full.read_bytes()[:300])
    for name in ("missing.jpg", "empty.jpg", "text.jpg", "trunc.jpg"):
        with pytest.raises(ImageError, match=name):
            encoder.encode_image(tmp_path / name)
    with pytest.raises(ImageError, match="missing.jpg"):
        encoder.encode_batch_images([full, tmp_path / "missing.jpg"])
    out = encoder.encode_batch_images([full, tmp_path / "missing.jpg"], on_error="placeholder")
    assert out.shape == (2, 256)


def test_encoder_does_not_change_model_mode(encoder, images):
    encoder.model.train()
    try:
        encoder.encode_image(images[0])
        assert encoder.model.training
    finally:
        encoder.model.eval()


def test_cls_only_last_layer_equals_the_full_text_encoder(encoder):
    from fashion_retrieval.model.features import CheckedFastPath, text_features, text_features_cls_only

    texts = ["dress", CAPTIONS[1] + " " + CAPTIONS[0], CAPTIONS[2]]  # padding inside the batch
    tokens = encoder.tokenize(texts)
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    with torch.no_grad():
        full = text_features(encoder.model, ids, mask).numpy()
        np.testing.assert_allclose(text_features_cls_only(encoder.model, ids, mask).numpy(), full, atol=1e-5)
    fast = CheckedFastPath(text_features_cls_only, text_features)
    fast(encoder.model, ids, mask)
    assert fast.verified is True  # the encoder uses the cheaper path on this model


def test_fused_vision_path_equals_the_vision_model(encoder):
    from fashion_retrieval.model.features import CheckedFastPath, image_features, image_features_fast

    size = encoder.preprocess.height
    pixels = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = image_features(encoder.model, pixels)
        torch.testing.assert_close(image_features_fast(encoder.model, pixels), full, atol=1e-5, rtol=0)
        assert (full[0] - full[1]).abs().max() > 1e-3  # different images, different vectors
    fast = CheckedFastPath(image_features_fast, image_features)
    fast(encoder.model, pixels)
    assert fast.verified is True


def test_a_fast_path_that_disagrees_is_not_used(encoder, caplog):
    from fashion_retrieval.model.features import CheckedFastPath, image_features

    caplog.set_level("WARNING", logger="fashion_retrieval")
    pixels = torch.randn(1, 3, encoder.preprocess.height, encoder.preprocess.width)
    wrong = CheckedFastPath(lambda model, x: -image_features(model, x), image_features)
    broken = CheckedFastPath(lambda model, x: model.no_such_module(x), image_features)
    with torch.no_grad():
        want = image_features(encoder.model, pixels)
        for path in (wrong, broken):
            for _ in range(2):  # the checking call and the next one both give the plain vectors
                torch.testing.assert_close(path(encoder.model, pixels), want)
            assert path.verified is False
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("differs from image_features" in m and "using the plain path" in m for m in warnings), warnings
    assert any("failed on this model (AttributeError" in m for m in warnings), warnings
