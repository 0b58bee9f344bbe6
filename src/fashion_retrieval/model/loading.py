"""Load a model of any family: base folder (or hub id) + optional checkpoint, LoRA merged, strict, checked."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.utils import logging as hf_logging

from fashion_retrieval.data.images import ImagePreprocessor
from fashion_retrieval.errors import CheckpointError
from fashion_retrieval.files import sha256_of
from fashion_retrieval.identity import ModelIdentity
from fashion_retrieval.model.checkpoint import Checkpoint, read_checkpoint
from fashion_retrieval.model.families import Family, FamilyProcessor, TextTokenizer, detect_family
from fashion_retrieval.model.families.base import text_limit
from fashion_retrieval.model.precision import Precision, choose_precision

log = logging.getLogger(__name__)

MAX_LISTED = 5
PREPROCESS_TOLERANCE = 1e-3  # normalised pixel values; a misread option (crop, size, filter) differs by ~0.1-2


@dataclass
class LoadedModel:
    model: torch.nn.Module
    family: Family
    processors: FamilyProcessor
    identity: ModelIdentity
    checkpoint: Checkpoint | None
    device: torch.device
    precision: Precision

    @property
    def dtype(self) -> torch.dtype:
        return self.precision.dtype

    @property
    def processor(self) -> Any:
        """The transformers processor (None for open_clip checkpoints)."""
        return self.processors.hf_processor

    @property
    def text_tokenizer(self) -> TextTokenizer:
        return self.processors.tokenizer

    @property
    def preprocess(self) -> ImagePreprocessor:
        return self.processors.preprocess


@dataclass(frozen=True)
class ModelDescription:
    """What a driver needs to know of a model its workers load: identity, tokenizer, image preprocessing."""

    identity: ModelIdentity
    family: Family
    processors: FamilyProcessor


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def _listing(items: list[str], shapes: dict[str, tuple] | None = None) -> str:
    shown = [f"{k} {tuple(shapes[k])}" if shapes and k in shapes else k for k in items[:MAX_LISTED]]
    more = f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
    return ", ".join(shown) + more


def apply_checkpoint(model: torch.nn.Module, ckpt: Checkpoint) -> set[str]:
    """Override the model's tensors with the checkpoint's and merge its LoRA; all-or-nothing.

    Returns the names of the tensors the checkpoint set.
    """
    state = model.state_dict()
    buffers = {name for name, _ in model.named_buffers()}
    # Older transformers saved position_ids buffers; they carry no learned state.
    weights = {k: v for k, v in ckpt.weights.items() if not (k.endswith("position_ids") and k not in state)}
    unexpected = sorted(k for k in weights if k not in state)
    mismatched = sorted(k for k in weights if k in state and tuple(weights[k].shape) != tuple(state[k].shape))
    lora_bad = []
    for module, delta in ckpt.lora.items():
        target = state.get(f"{module}.weight")
        if target is None or target.ndim != 2 or tuple(delta.b.shape[:1] + delta.a.shape[1:]) != tuple(target.shape):
            lora_bad.append(module)
    missing = sorted(k for k in state if k not in weights and k not in buffers) if ckpt.is_full else []
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {_listing(missing, {k: v.shape for k, v in state.items()})}")
    if unexpected:
        problems.append(
            f"unexpected {len(unexpected)}: {_listing(unexpected, {k: v.shape for k, v in weights.items()})}"
        )
    if mismatched:
        pairs = [f"{k} checkpoint {tuple(weights[k].shape)} vs model {tuple(state[k].shape)}" for k in mismatched]
        problems.append(f"shape mismatch {len(mismatched)}: {_listing(pairs)}")
    if lora_bad:
        problems.append(f"LoRA on modules the model lacks or of the wrong shape: {_listing(sorted(lora_bad))}")
    if problems:
        raise CheckpointError(
            f"{ckpt.path} ({ckpt.format}) does not fit this model's architecture; nothing was loaded. "
            + "; ".join(problems)
            + ". Check that --base is the model the checkpoint was trained from."
        )
    with torch.no_grad():
        for key, value in weights.items():
            state[key].copy_(value.to(state[key].dtype))
        for module, delta in ckpt.lora.items():
            target = state[f"{module}.weight"]
            target.add_(delta.delta().to(target.dtype))
    return set(weights) | {f"{m}.weight" for m in ckpt.lora}


def _base_fingerprint(base: str) -> str:
    folder = Path(base)
    if not folder.is_dir():
        return base  # a hub id: the id (and its revision) is the identity
    # .model: SigLIP's SentencePiece tokenizer; .pth/.pt: open_clip weights (BLIP folders have none: keys unchanged)
    suffixes = {".json", ".safetensors", ".bin", ".txt", ".model", ".pth", ".pt"}
    names = sorted(p.name for p in folder.iterdir() if p.suffix in suffixes)
    parts = [part for name in names if name != "adapter_config.json" for part in (name.encode(), folder / name)]
    return sha256_of(*parts)


def max_text_length(processor: Any, model_or_config: Any) -> int:
    """A BLIP processor's caption limit (kept for callers of the BLIP-only API)."""
    config = getattr(model_or_config, "config", model_or_config)
    return text_limit(processor.tokenizer, config.text_config.max_position_embeddings)


def _checked_base(base: str | Path) -> str:
    base = str(base)
    if Path(base).expanduser().exists():
        base = str(Path(base).expanduser())
        if not any((Path(base) / name).is_file() for name in ("config.json", "open_clip_config.json")):
            raise CheckpointError(
                f"base {base} has no config.json or open_clip_config.json: point --base at a model folder "
                "(BLIP, CLIP, SigLIP, Chinese-CLIP in Hugging Face format, or an open_clip checkpoint)"
            )
    return base


def _identity(base: str, family: Family, ckpt: Checkpoint | None, config: Any, processors: FamilyProcessor):
    return ModelIdentity(
        base=base,
        base_fingerprint=_base_fingerprint(base),
        checkpoint=ckpt.path if ckpt else None,
        checkpoint_sha256=ckpt.sha256 if ckpt else None,
        checkpoint_format=ckpt.format if ckpt else None,
        lora_alpha=ckpt.lora_alpha if ckpt and ckpt.lora else None,
        embed_dim=family.embed_dim(config),
        preprocessing=processors.preprocessing_record(),
        family=family.name,
    )


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' loading bars and its missing-keys warning say nothing our own checks do not say better."""
    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def _read_base(base: str) -> tuple[Family, Any, FamilyProcessor]:
    family = detect_family(base)
    try:
        with quiet_transformers():
            config = family.read_config(base)
            return family, config, family.load_processor(base, config)
    except OSError as exc:
        raise CheckpointError(f"cannot load base {base}: {str(exc).splitlines()[0]}") from exc


def describe_model(
    base: str | Path, checkpoint: str | Path | None = None, *, lora_alpha: float = 32.0
) -> ModelDescription:
    """The identity ``load_model`` would record, with the tokenizer and image preprocessing, without building
    the model (for a driver whose workers load it). Whether the checkpoint fits is checked where it is loaded."""
    base = _checked_base(base)
    ckpt = read_checkpoint(checkpoint, lora_alpha=lora_alpha) if checkpoint is not None else None
    family, config, processors = _read_base(base)
    return ModelDescription(_identity(base, family, ckpt, config, processors), family, processors)


def _probe_image() -> Image.Image:
    """A small non-square image with structure, so that size, crop offset and filter all show."""
    y, x = np.mgrid[0:53, 0:37]
    pixels = np.stack([(x * 7) % 256, (y * 5) % 256, ((x + y) * 11) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(pixels)


def check_preprocessing(family: Family, model: torch.nn.Module, processors: FamilyProcessor, base: str) -> None:
    """Our preprocessing (PIL + numpy, run in the decoding workers) must equal the family's own processor's."""
    image = _probe_image()
    ours = processors.preprocess(image)
    theirs = np.asarray(family.reference_preprocess(model, processors)(image), dtype=np.float32)
    difference = float(np.abs(ours - theirs).max()) if ours.shape == theirs.shape else float("inf")
    if difference > PREPROCESS_TOLERANCE:
        raise CheckpointError(
            f"base {base}: its {family.label} image preprocessing is not one this project reproduces (ours "
            f"{ours.shape} vs the processor's {theirs.shape}, max difference {difference:.3g}); "
            f"preprocessing read: {processors.preprocess.describe()}"
        )
    log.debug("%s preprocessing matches its processor (max difference %.1e)", family.label, difference)


def _refuse_random(base: str, still_random: list[str], ckpt: Checkpoint | None) -> None:
    groups = sorted({k.split(".")[0] for k in still_random})
    raise CheckpointError(
        f"base {base} has no trained weights for {len(still_random)} tensors ({', '.join(groups)}: "
        f"{_listing(still_random)})"
        + (f" and {ckpt.path} does not provide them" if ckpt else "")
        + ". A captioning base needs the fine-tuned best_model.pth that holds the retrieval heads, "
        "or use a retrieval base such as Salesforce/blip-itm-base-coco."
    )


def load_model(
    base: str | Path,
    checkpoint: str | Path | None = None,
    *,
    lora_alpha: float = 32.0,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
) -> LoadedModel:
    """Load ``base`` (a folder of any family, or a hub id) with its processor, apply ``checkpoint``, merge LoRA,
    move, eval. Refuses a model with any weight still at random initialisation, or whose image preprocessing
    would not be reproduced exactly."""
    base = _checked_base(base)
    ckpt = read_checkpoint(checkpoint, lora_alpha=lora_alpha) if checkpoint is not None else None
    family, config, processors = _read_base(base)
    try:
        with quiet_transformers():
            model, random_init = family.load_model(base)
    except OSError as exc:
        raise CheckpointError(f"cannot load base {base}: {str(exc).splitlines()[0]}") from exc
    check_preprocessing(family, model, processors, base)
    covered = apply_checkpoint(model, ckpt) if ckpt else set()
    still_random = sorted(random_init - covered)
    if still_random:
        _refuse_random(base, still_random, ckpt)
    identity = _identity(base, family, ckpt, config, processors)
    if ckpt:
        log.info(
            "loaded %s (%s): %d tensors overridden, LoRA merged into %d layers",
            ckpt.path,
            ckpt.format,
            len(ckpt.weights),
            len(ckpt.lora),
        )
    torch_device = resolve_device(device)
    model = model.to(torch_device).eval()
    model, precision = choose_precision(model, family, processors, torch_device, dtype, identity_key=identity.key)
    log.info(
        "model %s (%s) on %s in %s (%s)", identity.key, family.label, torch_device, precision.name, precision.reason
    )
    return LoadedModel(model.eval(), family, processors, identity, ckpt, torch_device, precision)


__all__ = [
    "LoadedModel",
    "ModelDescription",
    "apply_checkpoint",
    "describe_model",
    "load_model",
    "max_text_length",
    "quiet_transformers",
    "resolve_device",
]
