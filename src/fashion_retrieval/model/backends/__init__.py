"""Where the towers run: torch (the model as loaded), or exported towers on OpenVINO or ONNX Runtime, in fp32, bf16
or int8; and ``auto``, which measures the candidates once per model and machine and runs each tower on the fastest
whose parity check passes. Exports are made once and cached (``~/.cache/fashion_retrieval/exports``); an int8 one
is calibrated on a sample of the user's own catalogue.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from fashion_retrieval.errors import CheckpointError
from fashion_retrieval.model.backends.choice import BackendChoice
from fashion_retrieval.model.backends.export import Calibration, export_towers
from fashion_retrieval.model.backends.exported import (
    RUNTIME_OF,
    ExportedTowers,
    ExportManifest,
    is_export,
    load_processors,
)
from fashion_retrieval.model.families import Family, FamilyProcessor, family_named
from fashion_retrieval.model.precision import DTYPE_ENV, cpu_bf16_units

log = logging.getLogger(__name__)

BACKENDS = ("torch", "openvino", "onnxruntime", "auto")
FORMAT_OF = {"openvino": "openvino", "onnxruntime": "onnx"}
# precisions each exported runtime runs on a CPU, best first (bf16 only where the CPU has bf16 units)
PRECISIONS_OF = {"openvino": ("int8", "bf16", "fp32"), "onnxruntime": ("int8", "fp32")}
BACKEND_ENV = "FASHION_RETRIEVAL_BACKEND"


@dataclass
class ExportedModel:
    """An export opened on its runtime: what the encoder needs instead of a torch model."""

    folder: Path
    manifest: ExportManifest
    family: Family
    processors: FamilyProcessor
    towers: ExportedTowers
    reason: str

    @property
    def backend(self) -> str:
        return RUNTIME_OF[self.manifest.format]


def requested_backend(backend: str | None) -> str:
    """The backend asked for; ``FASHION_RETRIEVAL_BACKEND`` replaces the default (torch) everywhere."""
    backend = backend or os.environ.get(BACKEND_ENV) or "torch"
    if backend not in BACKENDS:
        raise CheckpointError(f"unknown backend {backend!r}: use {', '.join(BACKENDS)}")
    return backend


def exports_root() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "fashion_retrieval" / "exports"


def _versions_key() -> str:
    import importlib.metadata

    import torch

    parts = [torch.__version__]
    for name in ("openvino", "onnxruntime", "nncf", "onnx"):
        try:
            parts.append(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            parts.append("-")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:8]


def export_folder(identity_key: str, backend: str, precision: str, calibration: Calibration | None) -> Path:
    """The cache folder of one export (an int8 one per calibration sample)."""
    name = f"{identity_key}-{FORMAT_OF[backend]}-{precision}-{_versions_key()}"
    if precision == "int8" and calibration is not None:
        sample = json.dumps([list(calibration.images), list(calibration.captions)]).encode()
        name += "-" + hashlib.sha256(sample).hexdigest()[:8]
    return exports_root() / name


def open_export(folder: str | Path, reason: str = "") -> ExportedModel:
    """An export folder (``fashion-retrieval export`` or the cache) opened on its runtime."""
    folder = Path(folder)
    manifest = ExportManifest.read(folder)
    family = family_named(manifest.family)
    towers = ExportedTowers(folder, manifest)
    reason = reason or f"the export in {folder}"
    return ExportedModel(folder, manifest, family, load_processors(folder, manifest), towers, reason)


def _exported(
    base: str,
    checkpoint: str | None,
    backend: str,
    precision: str,
    *,
    lora_alpha: float,
    identity_key: str,
    calibration: Calibration | None,
) -> ExportManifest:
    """The cached export of this model in ``precision`` for ``backend``, made now (from a fresh fp32 load)
    if it is not there yet. One process exports while others wait on the folder lock."""
    from fashion_retrieval.files import FolderLock
    from fashion_retrieval.model.loading import load_model

    folder = export_folder(identity_key, backend, precision, calibration)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FolderLock(folder.parent / f".{folder.name}.lock", "model export", wait=3600):
        if not is_export(folder):
            log.info("exporting the towers for %s %s into %s (once; later runs reuse it)", backend, precision, folder)
            loaded = load_model(base, checkpoint, lora_alpha=lora_alpha, device="cpu", dtype="fp32")
            export_towers(loaded, FORMAT_OF[backend], precision, folder, calibration)
    return ExportManifest.read(folder)


def _precisions(backend: str, requested: str, calibration: Calibration | None) -> list[str]:
    """The precisions to try for ``backend``, best first: ``auto`` takes what the CPU runs fast (int8 only with
    a calibration sample), a fixed one is tried alone and then the higher precisions it falls back to."""
    units = cpu_bf16_units()
    ladder = [p for p in PRECISIONS_OF[backend] if p != "bf16" or units]
    if requested in ("auto", None):
        requested = os.environ.get(DTYPE_ENV) or "auto"  # e.g. FASHION_RETRIEVAL_DTYPE=fp32 everywhere
    if requested == "auto":
        return [p for p in ladder if p != "int8" or calibration is not None]
    names = {"float32": "fp32", "bfloat16": "bf16"}
    requested = names.get(requested, requested)
    if requested not in PRECISIONS_OF[backend]:
        raise CheckpointError(f"--dtype {requested} on {backend}: use {', '.join(PRECISIONS_OF[backend])} or auto")
    if requested == "int8" and calibration is None:
        raise CheckpointError("int8 is calibrated on your catalogue: pass a calibration sample (--calibrate N)")
    # the one asked for, then the higher precisions it falls back to (bf16 asked on a CPU without bf16 units is
    # tried alone: OpenVINO emulates it, slowly, as the export warns)
    return ladder[ladder.index(requested) :] if requested in ladder else [requested]


def open_backend(
    base: str,
    checkpoint: str | None,
    backend: str,
    precision: str,
    *,
    lora_alpha: float = 32.0,
    calibration: Calibration | None = None,
) -> ExportedModel:
    """``backend`` (openvino or onnxruntime) at the best of the requested precisions whose export passes its
    parity check; a precision that fails it is logged with its figures and the next one is tried."""
    from fashion_retrieval.model.loading import describe_model

    identity_key = describe_model(base, checkpoint, lora_alpha=lora_alpha).identity.key
    failures = []
    for candidate in _precisions(backend, precision, calibration):
        manifest = _exported(
            base,
            checkpoint,
            backend,
            candidate,
            lora_alpha=lora_alpha,
            identity_key=identity_key,
            calibration=calibration,
        )
        parity = manifest.parity
        if parity.get("passed"):
            reason = (
                f"{backend} {candidate}: the exported towers kept the probe rankings (min cosine "
                f"{parity['min_cosine']:.4f} >= {parity['min_cosine_bound']}, "
                f"max difference {parity['max_abs_difference']:.2g})"
            )
            if failures:
                reason += "; " + "; ".join(failures)
            log.info("backend %s", reason)
            folder = export_folder(identity_key, backend, candidate, calibration)
            return open_export(folder, reason)
        failure = (
            f"{candidate} changed the probe's vectors or rankings (min cosine {parity['min_cosine']:.4f}, bound "
            f"{parity['min_cosine_bound']}; {parity['discordant_pairs']} ranking pairs flipped)"
        )
        log.warning("%s on %s: staying at a higher precision", failure, backend)
        failures.append(failure)
    raise CheckpointError(f"no precision of {backend} kept this model's rankings: {'; '.join(failures)}")


__all__ = [
    "BACKENDS",
    "BackendChoice",
    "BACKEND_ENV",
    "Calibration",
    "ExportedModel",
    "export_folder",
    "export_towers",
    "exports_root",
    "is_export",
    "open_backend",
    "open_export",
    "requested_backend",
]
