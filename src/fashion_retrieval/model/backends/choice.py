"""``--backend auto``: the fastest way to run this model on this machine among those that keep its rankings.

Each candidate (torch at its own automatic dtype; OpenVINO and ONNX Runtime at the lowest precision whose export
passes its parity check, int8 only with a calibration sample) is built once and timed on the fixed probe (a
few images at the model's input size and a few captions, in turn as ``embed`` runs them, after a warm-up pass):
seconds per item = 1 / images/s + 1 / captions/s. Where one candidate is fastest on images and another on
captions, the two towers run apart are timed too, the same way (two runtimes taking turns on the same cores slow
each other: measured on an AMX CPU, +1-5% on images and +7-12% on captions), and kept only if they take at least
5% fewer seconds per item than the best single candidate. The decision, with every candidate's figures, is
cached per model, CPU, library versions and ``FASHION_RETRIEVAL_DTYPE`` (``~/.cache/fashion_retrieval/backend.json``;
processes that start together wait for the first one's) and logged with its reason. On a GPU, torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from fashion_retrieval.errors import FashionRetrievalError
from fashion_retrieval.files import FolderLock
from fashion_retrieval.model.backends.export import Calibration
from fashion_retrieval.model.families import FamilyProcessor
from fashion_retrieval.model.precision import DTYPE_ENV, cache_path, cached, cpu_bf16_units, probe_inputs, remember

log = logging.getLogger(__name__)

CANDIDATES = ("torch", "openvino", "onnxruntime")
PASSES = 3
# the dtype name each backend's precision is asked for again by (torch's comes from its own auto choice)
DTYPE_OF = {"float32": "fp32", "bfloat16": "bf16", "int8": "int8", "float16": "fp16"}
# Towers run apart hold two copies of the model, and a 6-item probe puts near-ties either way (on an AMX CPU one
# probe timed the pair 2% faster per item than torch bf16, another slower): split only for a clear win.
SPLIT_MARGIN = 0.05


def _seconds_per_item(encoder: Any) -> dict:
    """The encoder's bare forwards on the probe, an image batch then a caption batch in turn: images/s and
    captions/s (the best of ``PASSES`` after a warm-up pass)."""
    pixels, tokens = probe_inputs(FamilyProcessor(encoder.text_tokenizer, encoder.preprocess))
    rows = int(tokens["input_ids"].shape[0])

    def seconds(run: Callable[[], object]) -> float:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    def images() -> None:
        encoder.encode_pixels(pixels)

    def captions() -> None:
        encoder.encode_tokens(tokens["input_ids"], tokens["attention_mask"])

    images(), captions()  # warm-up: kernels chosen, fast paths checked
    image_seconds, caption_seconds = zip(*((seconds(images), seconds(captions)) for _ in range(PASSES)), strict=True)
    images_per_second, captions_per_second = len(pixels) / min(image_seconds), rows / min(caption_seconds)
    return {
        "precision": encoder.precision.name,
        "images_per_second": round(images_per_second, 3),
        "captions_per_second": round(captions_per_second, 3),
        "seconds_per_item": round(1 / images_per_second + 1 / captions_per_second, 5),
    }


@dataclass(frozen=True)
class BackendChoice:
    """What ``auto`` runs each tower on: (backend, dtype) for images and for captions."""

    image: tuple[str, str]
    text: tuple[str, str]

    @property
    def split(self) -> bool:
        return self.image != self.text

    @classmethod
    def of(cls, record: dict) -> BackendChoice:
        """From a decision's ``image`` and ``text`` entries (``{"backend": ..., "dtype": ...}``)."""
        return cls(*((record[tower]["backend"], record[tower]["dtype"]) for tower in ("image", "text")))


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
    forced = os.environ.get(DTYPE_ENV, "")  # e.g. FASHION_RETRIEVAL_DTYPE=fp32 changes every candidate's precision
    return f"{identity_key}|{dtype}|{forced}|{cpu_bf16_units()}|{'/'.join(versions)}|{sample}|per-tower"


def _entry(backend: str, figures: dict, dtype: str) -> dict:
    """How to build ``backend`` again at the precision it was timed in."""
    return {"backend": backend, "dtype": dtype if backend == "torch" else DTYPE_OF.get(figures["precision"], dtype)}


def _built(make: Callable[[], Any], figures: dict, name: str) -> Any | None:
    """``make()``, or None with the one-line reason it failed under ``figures[name]``."""
    try:
        return make()
    except (FashionRetrievalError, ImportError, RuntimeError, ValueError) as exc:
        figures[name] = {"error": str(exc).splitlines()[0][:300]}
        log.info("backend auto: %s is out (%s)", name, figures[name]["error"])
        return None


def _measure(make_encoder: Callable[[str], Any], make_split: Callable[[BackendChoice], Any], dtype: str) -> dict:
    """Time every candidate (and the towers run apart, where two candidates share the fastest towers); the
    record ``choose_backend`` caches."""
    figures: dict[str, dict] = {}
    for backend in CANDIDATES:
        encoder = _built(lambda backend=backend: make_encoder(backend), figures, backend)
        if encoder is not None:
            figures[backend] = _seconds_per_item(encoder)
            del encoder
    usable = {b: f for b, f in figures.items() if "error" not in f}
    if not usable:
        reasons = "; ".join(f"{b}: {f['error']}" for b, f in figures.items())
        raise FashionRetrievalError(f"no backend could run this model ({reasons})")
    single = min(usable, key=lambda b: usable[b]["seconds_per_item"])
    record = {"image": _entry(single, usable[single], dtype), "text": _entry(single, usable[single], dtype)}
    image = max(usable, key=lambda b: usable[b]["images_per_second"])
    text = max(usable, key=lambda b: usable[b]["captions_per_second"])
    if image != text:
        apart = {"image": _entry(image, usable[image], dtype), "text": _entry(text, usable[text], dtype)}
        encoder = _built(lambda: make_split(BackendChoice.of(apart)), figures, "apart")
        if encoder is not None:
            figures["apart"] = {**_seconds_per_item(encoder), "image": image, "text": text}
            del encoder
            if figures["apart"]["seconds_per_item"] < (1 - SPLIT_MARGIN) * usable[single]["seconds_per_item"]:
                record = apart
    return {**record, "figures": figures}


def _describe(tower: str, entry: dict, figures: dict) -> str:
    return f"{tower} on {entry['backend']} {figures[entry['backend']]['precision']}"


def choose_backend(
    identity_key: str,
    make_encoder: Callable[[str], Any],
    make_split: Callable[[BackendChoice], Any],
    *,
    dtype: str = "auto",
    calibration: Calibration | None = None,
) -> BackendChoice:
    """What ``auto`` runs each tower on: ``make_encoder(backend)`` builds each candidate at ``dtype`` (auto: its
    own automatic precision), ``make_split(choice)`` the towers run apart. torch keeps ``dtype`` (its own choice
    repeats); an exported backend gets the precision that passed, which its cached export holds."""
    key = _key(identity_key, dtype, calibration)
    record = cached(key, "backend")
    if record is None:
        lock = cache_path("backend").parent / "backend-choice"
        with FolderLock(lock, "backend choice", wait=3600):  # actors starting together: one measures
            record = cached(key, "backend")
            if record is None:
                record = _measure(make_encoder, make_split, dtype)
                remember(key, record, "backend")
    figures = record["figures"]
    timed = ", ".join(
        f"{b} {f['precision']} {1000 / f['images_per_second']:.3g} / {1000 / f['captions_per_second']:.3g} ms"
        for b, f in figures.items()
        if "error" not in f
    )
    log.info(
        "backend auto: %s, %s: the fewest seconds per image and caption among the candidates that keep the "
        "rankings on this machine's probe (per image / per caption: %s)",
        _describe("images", record["image"], figures),
        _describe("captions", record["text"], figures),
        timed,
    )
    return BackendChoice.of(record)


__all__ = ["CANDIDATES", "BackendChoice", "choose_backend"]
