"""``--backend auto``: the fastest way to run this model on this machine among those that keep its rankings.

Each candidate (torch at its own automatic dtype; OpenVINO and ONNX Runtime at the lowest precision whose export
passes its parity check, int8 only with a calibration sample) is built once and timed on the fixed probe (a
few images at the model's input size and a few captions, after a warm-up pass). Each tower goes to the
candidate that runs it fastest: the towers are separate graphs, and the fastest runtime often differs between
them (measured on an AMX CPU: torch bf16 for 384-px images, OpenVINO bf16 for captions). The decision, with every
candidate's figures, is cached per model, CPU and library versions (``~/.cache/fashion_retrieval/backend.json``)
and logged with its reason. On a GPU, torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class BackendChoice:
    """What ``auto`` runs each tower on: (backend, dtype) for images and for captions."""

    image: tuple[str, str]
    text: tuple[str, str]

    @property
    def split(self) -> bool:
        return self.image != self.text


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
    return f"{identity_key}|{dtype}|{cpu_bf16_units()}|{'/'.join(versions)}|{sample}|per-tower"


def _fastest(usable: dict[str, dict], rate: str, dtype: str) -> dict:
    best = max(usable, key=lambda b: usable[b][rate])
    chosen_dtype = dtype if best == "torch" else DTYPE_OF.get(usable[best]["precision"], dtype)
    return {"backend": best, "dtype": chosen_dtype}


def _describe(tower: str, record: dict, figures: dict, rate: str) -> str:
    chosen = figures[record["backend"]]
    return f"{tower} on {record['backend']} {chosen['precision']} ({1000 / chosen[rate]:.3g} ms each)"


def choose_backend(
    identity_key: str,
    make_encoder: Callable[[str], Any],
    *,
    dtype: str = "auto",
    calibration: Calibration | None = None,
) -> BackendChoice:
    """What ``auto`` runs each tower on: ``make_encoder(backend)`` builds each candidate at ``dtype`` (auto: its
    own automatic precision). torch keeps ``dtype`` (its own choice repeats); an exported backend gets the
    precision that passed, which its cached export holds."""
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
        record = {
            "image": _fastest(usable, "images_per_second", dtype),
            "text": _fastest(usable, "captions_per_second", dtype),
            "figures": figures,
        }
        remember(key, record, "backend")
    figures = record["figures"]
    others = ", ".join(
        f"{b} {f['precision']} {1000 / f['images_per_second']:.3g} / {1000 / f['captions_per_second']:.3g} ms"
        for b, f in figures.items()
        if "error" not in f
    )
    log.info(
        "backend auto: %s, %s: the fastest of the candidates that keep the rankings on this machine's probe "
        "(image / caption: %s)",
        _describe("images", record["image"], figures, "images_per_second"),
        _describe("captions", record["text"], figures, "captions_per_second"),
        others,
    )
    return BackendChoice(
        (record["image"]["backend"], record["image"]["dtype"]), (record["text"]["backend"], record["text"]["dtype"])
    )


__all__ = ["CANDIDATES", "BackendChoice", "choose_backend"]
