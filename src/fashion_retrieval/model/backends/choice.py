"""``--backend auto``: the fastest way to run this model on this machine among those that keep its rankings.

Each candidate (torch at its own automatic dtype; OpenVINO and ONNX Runtime at the lowest precision whose export
passes its parity check, int8 only with a calibration sample) is built once and timed on the fixed probe (a
few images at the model's input size and a few captions, after a warm-up pass), as ``embed`` pays for both:
seconds per item = 1 / images/s + 1 / captions/s. The decision, with every candidate's figures, is cached per
model, CPU and library versions (``~/.cache/fashion_retrieval/backend.json``) and logged with its reason.
On a GPU, torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from fashion_retrieval.errors import FashionRetrievalError
from fashion_retrieval.model.backends.export import Calibration
from fashion_retrieval.model.precision import cached, cpu_bf16_units, probe_inputs, remember

log = logging.getLogger(__name__)

CANDIDATES = ("torch", "openvino", "onnxruntime")
PASSES = 3
# the dtype name each backend's precision is asked for again by (torch's comes from its own auto choice)
DTYPE_OF = {"float32": "fp32", "bfloat16": "bf16", "int8": "int8", "float16": "fp16"}


def _seconds_per_item(encoder: Any) -> dict:
    """The encoder's bare forward on the probe: images/s and captions/s (best of ``PASSES`` after a warm-up)."""
    pixels, tokens = probe_inputs(encoder.loaded.processors if encoder.loaded else encoder.exported.processors)

    def best(run: Callable[[], object], items: int) -> float:
        run()  # warm-up: kernels chosen, fast paths checked
        rates = []
        for _ in range(PASSES):
            start = time.perf_counter()
            run()
            rates.append(items / (time.perf_counter() - start))
        return max(rates)

    images = best(lambda: encoder.encode_pixels(pixels), len(pixels))
    rows = int(tokens["input_ids"].shape[0])
    captions = best(lambda: encoder.encode_tokens(tokens["input_ids"], tokens["attention_mask"]), rows)
    return {
        "precision": encoder.precision.name,
        "images_per_second": round(images, 3),
        "captions_per_second": round(captions, 3),
        "seconds_per_item": round(1 / images + 1 / captions, 5),
    }


def _key(identity_key: str, dtype: str, calibration: Calibration | None) -> str:
    import importlib.metadata

    versions = [torch.__version__]
    for name in ("openvino", "onnxruntime", "nncf"):
        try:
            versions.append(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            versions.append("-")
    sample = "no int8"
    if calibration is not None:
        sample = hashlib.sha256(json.dumps([list(calibration.images), list(calibration.captions)]).encode())
        sample = sample.hexdigest()[:8]
    return f"{identity_key}|{dtype}|{cpu_bf16_units()}|{'/'.join(versions)}|{sample}"


def choose_backend(
    identity_key: str,
    make_encoder: Callable[[str], Any],
    *,
    dtype: str = "auto",
    calibration: Calibration | None = None,
) -> tuple[str, str]:
    """(backend, dtype) for ``auto``: ``make_encoder(backend)`` builds each candidate at ``dtype`` (auto: its own
    automatic precision). torch keeps ``dtype`` (its own choice repeats); an exported backend gets the precision
    that passed, which its cached export holds."""
    key = _key(identity_key, dtype, calibration)
    record = cached(key, "backend")
    if record is None:
        figures: dict[str, dict] = {}
        for backend in CANDIDATES:
            try:
                encoder = make_encoder(backend)
            except (FashionRetrievalError, ImportError, RuntimeError) as exc:
                figures[backend] = {"error": str(exc).splitlines()[0][:300]}
                log.info("backend auto: %s is out (%s)", backend, figures[backend]["error"])
                continue
            figures[backend] = _seconds_per_item(encoder)
            del encoder
        usable = {b: f for b, f in figures.items() if "error" not in f}
        if not usable:
            raise FashionRetrievalError(f"no backend could run this model: {figures}")
        best = min(usable, key=lambda b: usable[b]["seconds_per_item"])
        chosen_dtype = dtype if best == "torch" else DTYPE_OF.get(usable[best]["precision"], dtype)
        record = {"backend": best, "dtype": chosen_dtype, "figures": figures}
        remember(key, record, "backend")
    figures = record["figures"]
    chosen = figures[record["backend"]]
    others = ", ".join(
        f"{b} {f['precision']} {f['seconds_per_item'] * 1000:.3g} ms" for b, f in figures.items() if "error" not in f
    )
    log.info(
        "backend auto: %s %s, %.3g ms per image + caption on this machine's probe (%s)",
        record["backend"],
        chosen["precision"],
        chosen["seconds_per_item"] * 1000,
        others,
    )
    return record["backend"], record["dtype"]


__all__ = ["CANDIDATES", "choose_backend"]
