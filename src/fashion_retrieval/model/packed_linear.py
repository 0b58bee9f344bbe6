"""Linear layers through oneDNN with a prepacked weight, for fp32 and bf16 inference on x86 CPUs.

PyTorch's CPU ``nn.Linear`` calls MKL's sgemm, which on AMD CPUs runs its AVX2 code: on this machine's
AMD EPYC (AVX-512) it reaches ~200 GFLOP/s on BLIP's shapes, while oneDNN, which picks its kernels by
instruction set rather than vendor, reaches ~460 GFLOP/s on the same matrices. BLIP spends ~90% of its
time in Linear layers, so packing them doubles caption throughput and speeds images up ~1.5x
(benchmarks/embed_throughput.py). In bf16 the packed weight saves the per-call reorder: 5-17% over
``F.linear`` on an AVX512-BF16 CPU (benchmarks/linear_kernels.py). Outputs equal ``nn.Linear``'s within
rounding; each layer is checked against ``F.linear`` when packed and stays plain (with a log line) if not.
"""

from __future__ import annotations

import logging
import platform

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)
PACKABLE = (torch.float32, torch.bfloat16)
# Relative tolerance of the packing check: fp32 accumulation order only; bf16 rounds each product's inputs.
CHECK_RTOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2}


def packing_available() -> bool:
    """oneDNN is built in and this is an x86-64 CPU (where the speed-up was measured)."""
    return (
        platform.machine().lower() in ("x86_64", "amd64")
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


class PackedLinear(nn.Linear):
    """An ``nn.Linear`` with the same parameters (and state dict) whose grad-free CPU fp32/bf16 forward runs
    oneDNN on a prepacked copy of the weight. Anything else (autograd, other dtypes or devices) is
    ``nn.Linear``'s own forward; an in-place weight update (an optimiser step, ``load_state_dict``)
    is noticed through the tensor's version counter and the weight packed again."""

    @classmethod
    def wrap(cls, linear: nn.Linear) -> PackedLinear:
        packed = cls.__new__(cls)
        nn.Module.__init__(packed)
        packed.in_features, packed.out_features = linear.in_features, linear.out_features
        packed.weight, packed.bias = linear.weight, linear.bias  # the same Parameter objects
        packed.train(linear.training)
        packed._packed, packed._packed_for = None, None
        packed._weight_packed()  # pack (and check) now, not on the first query
        return packed

    def __getstate__(self) -> dict:
        # The packed weight is an opaque oneDNN tensor (no storage to copy or pickle): a copy packs again.
        return {**super().__getstate__(), "_packed": None, "_packed_for": None}

    def _weight_key(self) -> tuple:
        return (self.weight.data_ptr(), self.weight._version)

    def _weight_packed(self) -> torch.Tensor | None:
        """The prepacked weight, packed again if the weight changed; None if packing is unusable here."""
        key = self._weight_key()
        if self._packed_for != key:
            self._packed, self._packed_for = self._pack(), key
        return self._packed

    @torch.no_grad()
    def _pack(self) -> torch.Tensor | None:
        weight = self.weight.detach()
        if weight.device.type != "cpu" or weight.dtype not in PACKABLE:
            return None
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)
            probe = torch.randn(3, self.in_features, generator=torch.Generator().manual_seed(0)).to(weight.dtype)
            got = torch.ops.mkldnn._linear_pointwise(probe, packed, self._bias(), "none", [], "").float()
            want = F.linear(probe, weight, self._bias()).float()
        except RuntimeError as exc:  # an op missing or refusing these shapes in this torch build
            log.info("Linear %s stays on F.linear: oneDNN packing failed (%s)", tuple(weight.shape), exc)
            return None
        rtol = CHECK_RTOL[weight.dtype]
        scale = float(want.abs().max()) + 1e-6
        if not torch.allclose(got, want, rtol=rtol, atol=rtol * 0.1 * scale):
            log.warning(
                "Linear %s stays on F.linear: the packed kernel differs by %.2e",
                tuple(weight.shape),
                float((got - want).abs().max()),
            )
            return None
        return packed

    def _bias(self) -> torch.Tensor | None:
        return None if self.bias is None else self.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == self.weight.dtype:
            packed = self._weight_packed()
            if packed is not None:
                return torch.ops.mkldnn._linear_pointwise(x, packed, self._bias(), "none", [], "")
        return F.linear(x, self.weight, self.bias)


def pack_linears(module: nn.Module) -> int:
    """Replace every ``nn.Linear`` under ``module`` by a ``PackedLinear`` sharing its parameters, in place.

    Returns how many layers run packed (0 where oneDNN packing is unavailable or fails its check)."""
    if not packing_available():
        return 0
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                packed = PackedLinear.wrap(child)
                setattr(parent, name, packed)
                count += packed._packed is not None
    return count


__all__ = ["PackedLinear", "pack_linears", "packing_available"]
