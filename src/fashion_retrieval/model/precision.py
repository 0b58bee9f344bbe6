"""Which dtype a model runs in, chosen per device and checked on the user's own model.

``auto``: on CUDA bf16 (fp16 where bf16 is missing). On a CPU with native bf16 matrix units (AMX tiles, or
AVX512-BF16 dot products), bf16 runs BLIP 1.7-3x faster than fp32 (benchmarks/results/embed_throughput_cpu.json);
there ``auto`` encodes a fixed probe (generated garment images and captions) in fp32 and in bf16 and keeps
bf16 only if every probe vector keeps a cosine of at least ``PARITY_COSINE`` to its fp32 twin and the
probe rankings agree; otherwise fp32, with the reason logged. Elsewhere (AVX2-only CPUs, where bf16 is
emulated and ~7x slower) ``auto`` is fp32. The decision is cached per model, torch version and CPU.

Why 0.998: an angle of 3.6 degrees. Retrieval with a fine-tuned BLIP separates the relevant item from its
nearest rival by a cosine margin well above what such a rotation can move (on the demo model, fp32 and bf16
rankings give the same Recall@K within 0.01: tests/model/test_precision.py); a model that loses more than
that in bf16 (badly scaled weights, overflow) fails the check and stays fp32.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fashion_retrieval.identity import reference_or_verified

log = logging.getLogger(__name__)

PARITY_COSINE = 0.998
TIE_MARGIN = 1e-3  # fp32 score differences below this are ties: their order may flip without disagreement
PROBE_ITEMS = 6
NAMES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


@dataclass(frozen=True)
class Precision:
    """The dtype a model runs in, on which backend, and why (recorded in manifests and /api/health).

    ``dtype`` is what the encoder feeds its towers; an exported backend computes in ``compute`` (fp32, bf16 or
    int8), which then names the precision."""

    dtype: torch.dtype
    reason: str
    parity: dict | None = None  # the probe's figures when a parity check decided
    backend: str = "torch"
    compute: str | None = None
    towers: dict[str, Precision] | None = None  # each tower's, when they run on different backends

    @classmethod
    def per_tower(cls, image: Precision, text: Precision, reason: str) -> Precision:
        """The record of towers run apart: ``backend`` and ``compute`` name both (image/text), ``dtype`` is what
        the image tower is fed; the parity passes when each side is the torch fp32 reference or passed its own
        check (each side's figures are under ``towers``)."""

        passed = [side.parity for side in (image, text) if (side.parity or {}).get("passed")]
        parity = {"passed": reference_or_verified(image.to_dict()) and reference_or_verified(text.to_dict())}
        if passed:
            parity["min_cosine"] = min(side.get("min_cosine", 1.0) for side in passed)
        return cls(
            image.dtype,
            reason,
            parity,
            backend=f"{image.backend}/{text.backend}",
            compute=image.name if image.name == text.name else f"{image.name}/{text.name}",
            towers={"image": image, "text": text},
        )

    @property
    def name(self) -> str:
        return {"fp32": "float32", "bf16": "bfloat16"}.get(self.compute or "", self.compute) or str(
            self.dtype
        ).removeprefix("torch.")

    def to_dict(self) -> dict:
        record = {"dtype": self.name, "reason": self.reason}
        if self.backend != "torch":  # torch records keep their earlier shape
            record["backend"] = self.backend
        if self.parity:
            record["parity"] = self.parity
        if self.towers:
            record["towers"] = {tower: side.to_dict() for tower, side in self.towers.items()}
        return record


def cpu_bf16_units() -> str | None:
    """'AMX' or 'AVX512-BF16' when this CPU multiplies bf16 natively (torch's own checks), else None."""
    cpu = getattr(torch, "cpu", None)
    if cpu is None:
        return None
    if getattr(cpu, "_is_amx_tile_supported", lambda: False)():
        return "AMX"
    if getattr(cpu, "_is_avx512_bf16_supported", lambda: False)():
        return "AVX512-BF16"
    return None


DTYPE_ENV = "FASHION_RETRIEVAL_DTYPE"


def requested_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """A fixed dtype, or None for auto. ``FASHION_RETRIEVAL_DTYPE`` (e.g. fp32) replaces auto everywhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        dtype = os.environ.get(DTYPE_ENV) or "auto"
        if dtype == "auto":
            return None
    if dtype not in NAMES:
        raise ValueError(f"unknown dtype {dtype!r}: use auto, fp32, fp16 or bf16")
    return NAMES[dtype]


def probe_inputs(processors) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A fixed probe: generated garment images (preprocessed as the model's processor says) and captions."""
    from fashion_retrieval.data.synthetic import render_item, sample_items

    items = sample_items(PROBE_ITEMS, seed=12345)
    preprocess = processors.preprocess
    size = max(preprocess.height, preprocess.width, preprocess.shortest_edge or 0)
    pixels = torch.from_numpy(np.stack([preprocess(render_item(item, size, i)) for i, item in enumerate(items)]))
    return pixels, processors.tokenizer([item.caption for item in items])


@torch.inference_mode()
def _probe_vectors(family, model, pixels, tokens, dtype) -> tuple[np.ndarray, np.ndarray]:
    image = family.image_features(model, pixels.to(dtype)).numpy()
    text = family.text_features(model, tokens["input_ids"], tokens["attention_mask"]).numpy()
    return image, text


def _discordant(reference: np.ndarray, candidate: np.ndarray) -> int:
    """Pairs ordered differently by the two score matrices (per query row), ignoring fp32 near-ties."""
    count = 0
    for ref, cand in zip(reference, candidate, strict=True):
        ref_diff = ref[:, None] - ref[None, :]
        cand_diff = cand[:, None] - cand[None, :]
        count += int(np.sum((np.abs(ref_diff) > TIE_MARGIN) & (np.sign(ref_diff) != np.sign(cand_diff))) // 2)
    return count


def compare_vectors(reference: tuple[np.ndarray, np.ndarray], candidate: tuple[np.ndarray, np.ndarray]) -> dict:
    """How far candidate (image, text) probe vectors are from the fp32 reference ones: the cosine of each to its
    twin (min), the largest difference of a component, and how many probe ranking pairs disagree."""
    image32, text32 = reference
    image_lo, text_lo = candidate
    cosines = np.concatenate([np.sum(image32 * image_lo, axis=1), np.sum(text32 * text_lo, axis=1)])
    disagree = _discordant(text32 @ image32.T, text_lo @ image_lo.T) + _discordant(
        image32 @ text32.T, image_lo @ text_lo.T
    )
    difference = max(float(np.abs(image32 - image_lo).max()), float(np.abs(text32 - text_lo).max()))
    return {
        "min_cosine": round(float(cosines.min()), 6),
        "max_abs_difference": float(f"{difference:.3g}"),
        "discordant_pairs": disagree,
        "probes": len(cosines),
    }


def parity(family, model_fp32, model_low, pixels, tokens, dtype) -> dict:
    """Cosines of each probe vector to its fp32 twin, and how many probe ranking pairs disagree."""
    reference = _probe_vectors(family, model_fp32, pixels, tokens, torch.float32)
    return compare_vectors(reference, _probe_vectors(family, model_low, pixels, tokens, dtype))


def cache_path(name: str = "precision") -> Path:
    """Where a decision made once per model and machine is kept (``precision``, ``backend``)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "fashion_retrieval" / f"{name}.json"


def _cache_key(identity_key: str, units: str) -> str:
    return f"{identity_key}|torch {torch.__version__}|{units}"


def cached(key: str, name: str = "precision") -> dict | None:
    try:
        return json.loads(cache_path(name).read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def remember(key: str, record: dict, name: str = "precision") -> None:
    path = cache_path(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        known = json.loads(path.read_text()) if path.is_file() else {}
        known[key] = record
        from fashion_retrieval.files import atomic_write_bytes

        atomic_write_bytes(path, json.dumps(known, indent=1).encode())
    except (OSError, ValueError) as exc:  # a read-only home: decide again next time
        log.debug("cannot cache the precision decision in %s: %s", path, exc)


def choose_precision(
    model,
    family,
    processors,
    device: torch.device,
    requested: str | torch.dtype | None,
    *,
    identity_key: str,
) -> tuple[torch.nn.Module, Precision]:
    """The model in the dtype to run it in (converted in place, or a converted copy), and why."""
    fixed = requested_dtype(requested)
    if fixed is not None:
        how = f"{DTYPE_ENV}=" if requested in (None, "auto") else "--dtype "
        return model.to(fixed), Precision(fixed, f"requested {how}{str(fixed).removeprefix('torch.')}")
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return model.to(dtype), Precision(dtype, "auto on CUDA: half precision runs on the tensor cores")
    if device.type != "cpu":
        return model, Precision(torch.float32, f"auto on {device.type}: fp32")
    units = cpu_bf16_units()
    if units is None:
        return model, Precision(torch.float32, "auto on a CPU without native bf16 units (bf16 would be emulated)")
    key = _cache_key(identity_key, units)
    record = cached(key)
    if record is None:
        pixels, tokens = probe_inputs(processors)
        low = copy.deepcopy(model).to(torch.bfloat16)
        figures = parity(family, model, low, pixels, tokens, torch.bfloat16)
        ok = figures["min_cosine"] >= PARITY_COSINE and figures["discordant_pairs"] == 0
        record = {"bf16": ok, "parity": {**figures, "passed": ok}}
        remember(key, record)
        del low
    figures = record["parity"]
    if record["bf16"]:
        reason = (
            f"auto: this CPU has {units} and bf16 kept the probe rankings "
            f"(min cosine {figures['min_cosine']:.4f} >= {PARITY_COSINE})"
        )
        log.info("dtype bf16: %s", reason)
        return model.to(torch.bfloat16), Precision(torch.bfloat16, reason, figures)
    reason = (
        f"auto: this CPU has {units}, but bf16 moved this model's probe vectors too far "
        f"(min cosine {figures['min_cosine']:.4f}, {figures['discordant_pairs']} ranking pairs flipped): fp32"
    )
    log.warning("dtype fp32: %s", reason)
    return model, Precision(torch.float32, reason, figures)


__all__ = [
    "PARITY_COSINE",
    "Precision",
    "cached",
    "choose_precision",
    "compare_vectors",
    "cpu_bf16_units",
    "parity",
    "probe_inputs",
    "remember",
    "requested_dtype",
]
