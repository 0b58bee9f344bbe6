"""Linear layers through prepacked oneDNN kernels: same outputs as nn.Linear, same parameters, safe to train."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
from torch import nn

from fashion_retrieval import FashionEmbeddingModel
from fashion_retrieval.data.images import open_image
from fashion_retrieval.model.features import image_features, text_features
from fashion_retrieval.model.packed_linear import PackedLinear, pack_linears, packing_available
from tests.conftest import CAPTIONS
from tests.helpers import write_image

pytestmark = pytest.mark.skipif(not packing_available(), reason="oneDNN packing needs an x86-64 CPU build")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 32), nn.GELU(), nn.Sequential(nn.Linear(32, 8, bias=False)))


def test_packed_layers_equal_plain_ones_on_any_input_shape():
    plain, packed = _model(), _model()
    assert pack_linears(packed) == 2
    assert type(packed[0]) is PackedLinear and isinstance(packed[2][0], nn.Linear)
    x = torch.randn(3, 7, 12)
    with torch.inference_mode():
        for sample in (x, x[:, :1], x.transpose(0, 1), x[0]):  # 3-d, strided view, transposed, 2-d
            torch.testing.assert_close(packed(sample), plain(sample), rtol=1e-5, atol=1e-6)


def test_parameters_and_state_dict_are_the_plain_layers():
    model = _model()
    weight = model[0].weight
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pack_linears(model)
    assert model[0].weight is weight  # shared, not copied
    assert list(model.state_dict()) == list(before)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_training_uses_autograd_and_a_changed_weight_is_packed_again():
    plain, packed = _model(), _model()
    pack_linears(packed)
    x = torch.randn(5, 12)
    packed(x).square().sum().backward()  # grad enabled: nn.Linear's path, gradients flow
    plain(x).square().sum().backward()
    torch.testing.assert_close(packed[0].weight.grad, plain[0].weight.grad)
    for model in (packed, plain):
        torch.optim.SGD(model.parameters(), lr=0.5).step()  # in-place update of the shared weight
    with torch.no_grad():
        torch.testing.assert_close(packed(x), plain(x), rtol=1e-5, atol=1e-6)


def test_copies_and_pickles_pack_again():
    plain, packed = _model(), _model()
    pack_linears(packed)
    x = torch.randn(4, 12)
    buffer = io.BytesIO()
    torch.save(packed, buffer)
    buffer.seek(0)
    for clone in (copy.deepcopy(packed), torch.load(buffer, weights_only=False)):
        with torch.no_grad():
            torch.testing.assert_close(clone(x), plain(x), rtol=1e-5, atol=1e-6)


def test_other_dtypes_use_the_plain_path():
    plain, packed = _model().double(), _model()
    pack_linears(packed)
    packed.double()
    x = torch.randn(4, 12, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(packed(x), plain(x))


def test_encoder_packs_on_cpu_and_gives_the_plain_vectors(tiny_base, tmp_path):
    fast = FashionEmbeddingModel(None, tiny_base, device="cpu")
    plain = FashionEmbeddingModel(None, tiny_base, device="cpu", fast_cpu=False)
    assert fast.packed_layers > 0 and plain.packed_layers == 0
    assert not any(type(m) is PackedLinear for m in plain.model.modules())
    images = [str(write_image(tmp_path / f"{i}.jpg", (40 * i, 90, 200 - 30 * i))) for i in range(4)]
    np.testing.assert_allclose(fast.encode_batch_images(images), plain.encode_batch_images(images), atol=1e-5)
    np.testing.assert_allclose(fast.encode_batch_texts(CAPTIONS), plain.encode_batch_texts(CAPTIONS), atol=1e-5)
    # the packed model's own ITC functions agree with the plain model's
    tokens = fast.tokenize(CAPTIONS[:2])
    pixels = torch.from_numpy(np.stack([fast.preprocess(open_image(p)) for p in images[:2]]))
    with torch.inference_mode():
        for features, inputs in (
            (text_features, (tokens["input_ids"], tokens["attention_mask"])),
            (image_features, (pixels,)),
        ):
            torch.testing.assert_close(features(fast.model, *inputs), features(plain.model, *inputs), atol=1e-5, rtol=0)


def test_bf16_layers_pack_too_and_a_failed_check_is_logged(caplog):
    plain = _model().to(torch.bfloat16)
    packed = copy.deepcopy(plain)
    if pack_linears(packed) == 0:
        pytest.skip("oneDNN packing is not available on this CPU")
    x = torch.randn(5, 12).to(torch.bfloat16)
    with torch.no_grad():
        torch.testing.assert_close(packed(x).float(), plain(x).float(), rtol=2e-2, atol=2e-2)
    layer = next(m for m in packed.modules() if isinstance(m, PackedLinear))
    caplog.set_level("WARNING", logger="fashion_retrieval")
    real = torch.ops.mkldnn

    class Skewed:  # a kernel that answers wrongly: the layer must stay plain and say why
        def __getattr__(self, name):
            return getattr(real, name)

        @staticmethod
        def _linear_pointwise(*args):
            return real._linear_pointwise(*args) + 1.0

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.ops, "mkldnn", Skewed())
        assert layer._pack() is None
    assert any("stays on F.linear" in r.getMessage() for r in caplog.records)
