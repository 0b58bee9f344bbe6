"""Load a BLIP retrieval model: base folder (or hub id) + optional checkpoint, LoRA merged, strict."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import BlipForImageTextRetrieval, BlipProcessor
from transformers.utils import logging as hf_logging

from fashion_retrieval.errors import CheckpointError
from fashion_retrieval.files import sha256_of
from fashion_retrieval.identity import ModelIdentity
from fashion_retrieval.model.checkpoint import Checkpoint, read_checkpoint
from fashion_retrieval.model.precision import Precision, choose_precision

log = logging.getLogger(__name__)

MAX_LISTED = 5


@dataclass
class LoadedModel:
    model: BlipForImageTextRetrieval
    processor: BlipProcessor
    identity: ModelIdentity
    checkpoint: Checkpoint | None
    device: torch.device
    precision: Precision

    @property
    def dtype(self) -> torch.dtype:
        return self.precision.dtype


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
            f"{ckpt.path} ({ckpt.format}) does not fit this BLIP architecture; nothing was loaded. "
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
    names = sorted(p.name for p in folder.iterdir() if p.suffix in {".json", ".safetensors", ".bin", ".txt"})
    parts = [part for name in names if name != "adapter_config.json" for part in (name.encode(), folder / name)]
    return sha256_of(*parts)


def _preprocessing(processor: BlipProcessor, max_text_length: int) -> dict:
    ip = processor.image_processor
    return {
        "size": dict(ip.size),
        "resample": int(ip.resample),
        "rescale_factor": float(ip.rescale_factor),
        "image_mean": [float(x) for x in ip.image_mean],
        "image_std": [float(x) for x in ip.image_std],
        "max_text_length": max_text_length,
    }


def max_text_length(processor: BlipProcessor, model_or_config) -> int:
    limit = processor.tokenizer.model_max_length
    config = getattr(model_or_config, "config", model_or_config)
    positions = config.text_config.max_position_embeddings
    return int(min(limit, positions)) if limit and limit < 10**6 else int(positions)


def _checked_base(base: str | Path) -> str:
    base = str(base)
    if Path(base).expanduser().exists():
        base = str(Path(base).expanduser())
        if not (Path(base) / "config.json").is_file():
            raise CheckpointError(f"base {base} has no config.json: point --base at a Hugging Face BLIP folder")
    return base


def _identity(base: str, ckpt: Checkpoint | None, config, processor: BlipProcessor) -> ModelIdentity:
    return ModelIdentity(
        base=base,
        base_fingerprint=_base_fingerprint(base),
        checkpoint=ckpt.path if ckpt else None,
        checkpoint_sha256=ckpt.sha256 if ckpt else None,
        checkpoint_format=ckpt.format if ckpt else None,
        lora_alpha=ckpt.lora_alpha if ckpt and ckpt.lora else None,
        embed_dim=int(config.image_text_hidden_size),
        preprocessing=_preprocessing(processor, max_text_length(processor, config)),
    )


def _processor(base: str) -> BlipProcessor:
    try:
        return BlipProcessor.from_pretrained(base)
    except OSError as exc:
        raise CheckpointError(f"cannot load the processor of base {base}: {str(exc).splitlines()[0]}") from exc


def describe_model(base: str | Path, checkpoint: str | Path | None = None, *, lora_alpha: float = 32.0):
    """The identity ``load_model`` would record, without building the model (for a driver whose workers load it).

    Returns (identity, processor). Whether the checkpoint fits is checked where the model is loaded."""
    from transformers import BlipConfig

    base = _checked_base(base)
    ckpt = read_checkpoint(checkpoint, lora_alpha=lora_alpha) if checkpoint is not None else None
    try:
        config = BlipConfig.from_pretrained(base)
    except OSError as exc:
        raise CheckpointError(f"cannot load base {base}: {str(exc).splitlines()[0]}") from exc
    processor = _processor(base)
    return _identity(base, ckpt, config, processor), processor


def load_model(
    base: str | Path,
    checkpoint: str | Path | None = None,
    *,
    lora_alpha: float = 32.0,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
) -> LoadedModel:
    """Load ``base`` (HF folder or hub id) with its processor, apply ``checkpoint``, merge LoRA, move, eval.

    Refuses to return a model with any weight still at random initialisation.
    """
    base = _checked_base(base)
    ckpt = read_checkpoint(checkpoint, lora_alpha=lora_alpha) if checkpoint is not None else None
    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the missing-keys warning is replaced by the check below
    try:
        model, info = BlipForImageTextRetrieval.from_pretrained(base, output_loading_info=True, dtype=torch.float32)
    except OSError as exc:
        raise CheckpointError(f"cannot load base {base}: {str(exc).splitlines()[0]}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    processor = _processor(base)
    random_init = set(info.get("missing_keys", ())) | set(info.get("mismatched_keys", ()))
    covered = apply_checkpoint(model, ckpt) if ckpt else set()
    still_random = sorted(random_init - covered)
    if still_random:
        groups = sorted({k.split(".")[0] for k in still_random})
        raise CheckpointError(
            f"base {base} has no trained weights for {len(still_random)} tensors ({', '.join(groups)}: "
            f"{_listing(still_random)})"
            + (f" and {ckpt.path} does not provide them" if ckpt else "")
            + ". A captioning base needs the fine-tuned best_model.pth that holds the retrieval heads, "
            "or use a retrieval base such as Salesforce/blip-itm-base-coco."
        )
    torch_device = resolve_device(device)
    identity = _identity(base, ckpt, model.config, processor)
    if ckpt:
        log.info(
            "loaded %s (%s): %d tensors overridden, LoRA merged into %d layers",
            ckpt.path,
            ckpt.format,
            len(ckpt.weights),
            len(ckpt.lora),
        )
    model = model.to(torch_device).eval()
    model, precision = choose_precision(
        model,
        processor,
        torch_device,
        dtype,
        identity_key=identity.key,
        max_text_length=max_text_length(processor, model),
    )
    log.info("model %s on %s in %s (%s)", identity.key, torch_device, precision.name, precision.reason)
    return LoadedModel(model.eval(), processor, identity, ckpt, torch_device, precision)
