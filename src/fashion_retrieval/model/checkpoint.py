"""Read a fine-tuned checkpoint in any supported format into plain weights plus LoRA deltas.

Formats (detected, never guessed from the file name alone):
  original-lora    the original toolkit's ``best_model.pth``: hand-written LoRA wrap, keys
                   ``<m>.linear.weight|bias``, ``<m>.lora.lora_A`` [in, r], ``<m>.lora.lora_B`` [r, out];
                   output = linear(x) + (x @ A @ B) * alpha / r.
  peft-adapter     a PEFT adapter folder (adapter_config.json + adapter_model.safetensors|bin).
  peft-state-dict  a PEFT state dict: ``base_model.model.`` prefix, ``lora_A[.default].weight`` [r, in],
                   ``lora_B[.default].weight`` [out, r].
  full-state-dict  a plain state dict of the whole model.
  hf-folder        a Hugging Face model folder (config.json + weights).
Any of them may be wrapped in a dict under ``state_dict``, ``model_state_dict`` or ``model``.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fashion_retrieval.errors import CheckpointError
from fashion_retrieval.files import sha256_of

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
PEFT_PREFIX = "base_model.model."
FULL_FORMATS = {"original-lora", "full-state-dict", "hf-folder"}
# torch.load(weights_only=True) has had bypasses: CVE-2025-32434 (fixed in 2.6) and CVE-2026-24747
# (memory corruption in the weights-only unpickler, fixed in 2.10). Older torch may read safetensors only.
SAFE_PICKLE_TORCH = (2, 10)


@dataclass(frozen=True)
class LoraDelta:
    """One low-rank update in PEFT orientation: delta_W = scale * B @ A, A [r, in], B [out, r]."""

    a: torch.Tensor
    b: torch.Tensor
    scale: float

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])

    def delta(self) -> torch.Tensor:
        return (self.b.float() @ self.a.float()) * self.scale


@dataclass
class Checkpoint:
    """What a checkpoint holds, with keys already in the plain model's naming."""

    path: str
    format: str
    sha256: str
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    lora: dict[str, LoraDelta] = field(default_factory=dict)
    lora_alpha: float | None = None
    wrapper_key: str | None = None

    @property
    def is_full(self) -> bool:
        """A full checkpoint must cover every weight of the model (strict loading)."""
        return self.format in FULL_FORMATS

    @property
    def lora_rank(self) -> int | None:
        ranks = {d.rank for d in self.lora.values()}
        return ranks.pop() if len(ranks) == 1 else (max(ranks) if ranks else None)

    def summary(self) -> dict:
        return {
            "path": self.path,
            "format": self.format,
            "wrapped_under": self.wrapper_key,
            "sha256": self.sha256,
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha if self.lora else None,
            "adapted_modules": sorted(self.lora),
            "overridden_tensors": len(self.weights),
        }


def file_sha256(path: Path) -> str:
    """A checkpoint's digest: the file's, or for a folder that of its files' contents in name order."""
    return sha256_of(*sorted(p for p in path.rglob("*") if p.is_file())) if path.is_dir() else sha256_of(path)


def torch_version() -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", torch.__version__).groups()
    return int(major), int(minor)


def check_pickle_allowed(path: Path) -> None:
    """Refuse pickle-based checkpoints on a torch whose weights-only unpickler has a known bypass."""
    if torch_version() < SAFE_PICKLE_TORCH:
        floor = ".".join(map(str, SAFE_PICKLE_TORCH))
        raise CheckpointError(
            f"{path}: refused: torch {torch.__version__} can be exploited by a crafted pickle checkpoint "
            f"(CVE-2026-24747); install torch>={floor}, or convert the checkpoint to .safetensors on a safe machine"
        )


def _load_tensor_file(path: Path) -> object:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    with open(path, "rb") as handle:
        head = handle.read(2)
    # torch.save writes a zip archive; older torch a raw pickle, which starts with the PROTO opcode.
    if not (zipfile.is_zipfile(path) or head[:1] == b"\x80"):
        raise CheckpointError(f"{path}: not a PyTorch or safetensors checkpoint (unknown file signature {head!r})")
    check_pickle_allowed(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = next((line for line in lines if "Unsupported global" in line), lines[0] if lines else "")
        raise CheckpointError(
            f"{path}: refused to unpickle (only tensors and plain containers are loaded safely): {reason[:200]}. "
            "Re-save it as torch.save(model.state_dict(), path) or as .safetensors."
        ) from exc
    except Exception as exc:
        raise CheckpointError(
            f"{path}: not a PyTorch or safetensors checkpoint ({type(exc).__name__}: {str(exc)[:120]})"
        ) from exc


def _load_folder(path: Path) -> tuple[dict, str, dict]:
    """Weights and format of a PEFT adapter folder or a Hugging Face model folder."""
    if (path / "adapter_config.json").is_file():
        config = json.loads((path / "adapter_config.json").read_text())
        for name in ("adapter_model.safetensors", "adapter_model.bin"):
            if (path / name).is_file():
                return _as_state_dict(_load_tensor_file(path / name), path)[0], "peft-adapter", config
        raise CheckpointError(f"{path}: adapter_config.json found but no adapter_model.safetensors or .bin")
    if (path / "config.json").is_file():
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
        if not files:
            raise CheckpointError(f"{path}: a model folder without *.safetensors or pytorch_model*.bin weights")
        weights: dict = {}
        for file in files:
            weights.update(_as_state_dict(_load_tensor_file(file), file)[0])
        return weights, "hf-folder", {}
    raise CheckpointError(
        f"{path}: a folder that is neither a PEFT adapter (adapter_config.json) nor a model (config.json)"
    )


def _as_state_dict(obj: object, path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """The tensor dict inside ``obj``, unwrapping one level of the usual training-script wrappers."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, None
    for key in WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner, key
    kinds = sorted({type(v).__name__ for v in obj.values()})
    raise CheckpointError(
        f"{path}: a dict of {', '.join(kinds) or 'nothing'} with no tensor state dict at the top or under "
        f"{', '.join(WRAPPER_KEYS)}"
    )


def _strip(key: str, prefix: str) -> str:
    return key[len(prefix) :] if key.startswith(prefix) else key


def _is_peft(keys: list[str]) -> bool:
    return any(k.startswith(PEFT_PREFIX) or ".lora_A." in k or k.endswith(".lora_A.weight") for k in keys)


def _is_original(keys: list[str]) -> bool:
    return any(k.endswith(".lora.lora_A") for k in keys)


def _parse_original(state: dict[str, torch.Tensor], alpha: float, path: Path) -> tuple[dict, dict]:
    modules = {k[: -len(".lora.lora_A")] for k in state if k.endswith(".lora.lora_A")}
    weights: dict[str, torch.Tensor] = {}
    lora: dict[str, LoraDelta] = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        parent, _, child = module.rpartition(".")
        if child == "lora" and parent in modules:
            continue  # read below, per module
        if child == "linear" and parent in modules:
            weights[f"{parent}.{leaf}"] = value
        else:
            weights[key] = value
    for module in sorted(modules):
        a = state[f"{module}.lora.lora_A"]
        b = state.get(f"{module}.lora.lora_B")
        if b is None or a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
            shape_b = None if b is None else tuple(b.shape)
            raise CheckpointError(
                f"{path}: LoRA of {module} is malformed: lora_A {tuple(a.shape)}, lora_B {shape_b} "
                "(expected [in, r] and [r, out])"
            )
        rank = int(a.shape[1])
        # Original orientation x @ A @ B is the transpose of PEFT's B @ A.
        lora[module] = LoraDelta(a=a.t().contiguous(), b=b.t().contiguous(), scale=alpha / rank)
    return weights, lora


def _peft_scale(config: dict, alpha: float, rank: int) -> float:
    alpha = float(config.get("lora_alpha", alpha))
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def _parse_peft(state: dict[str, torch.Tensor], config: dict, alpha: float, path: Path) -> tuple[dict, dict]:
    weights: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for raw_key, value in state.items():
        key = _strip(raw_key, PEFT_PREFIX).replace(".default.", ".")
        if ".original_module." in key:
            continue  # the frozen copy PEFT keeps beside modules_to_save
        key = key.replace(".modules_to_save.", ".").replace(".base_layer.", ".")
        for side in ("lora_A", "lora_B"):
            marker = f".{side}.weight"
            if key.endswith(marker):
                parts.setdefault(key[: -len(marker)], {})[side] = value
                break
        else:
            if ".lora_" in key:
                raise CheckpointError(f"{path}: unsupported PEFT tensor {raw_key} (only Linear LoRA is supported)")
            weights[key] = value
    lora: dict[str, LoraDelta] = {}
    for module, pair in sorted(parts.items()):
        if set(pair) != {"lora_A", "lora_B"} or pair["lora_A"].shape[0] != pair["lora_B"].shape[1]:
            shapes = {k: tuple(v.shape) for k, v in pair.items()}
            raise CheckpointError(f"{path}: LoRA of {module} is malformed: {shapes} (expected [r, in] and [out, r])")
        rank = int(pair["lora_A"].shape[0])
        lora[module] = LoraDelta(a=pair["lora_A"], b=pair["lora_B"], scale=_peft_scale(config, alpha, rank))
    return weights, lora


def read_checkpoint(path: str | Path, *, lora_alpha: float = 32.0) -> Checkpoint:
    """Read and classify a checkpoint; keys come back in the plain ``BlipForImageTextRetrieval`` naming."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist: pass the path of best_model.pth or an adapter folder")
    config: dict = {}
    wrapper = None
    if path.is_dir():
        state, fmt, config = _load_folder(path)
    else:
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: the file is empty")
        state, wrapper = _as_state_dict(_load_tensor_file(path), path)
        fmt = ""
    state = {_strip(k, "module."): v for k, v in state.items()}  # DataParallel saves
    keys = list(state)
    if fmt == "peft-adapter" or _is_peft(keys):
        fmt = fmt or "peft-state-dict"
        weights, lora = _parse_peft(state, config, lora_alpha, path)
        alpha = float(config.get("lora_alpha", lora_alpha))
    elif _is_original(keys):
        fmt = "original-lora"
        weights, lora = _parse_original(state, lora_alpha, path)
        alpha = lora_alpha
    else:
        fmt = fmt or "full-state-dict"
        weights, lora, alpha = state, {}, None
    return Checkpoint(
        path=str(path),
        format=fmt,
        sha256=file_sha256(path),
        weights=weights,
        lora=lora,
        lora_alpha=alpha,
        wrapper_key=wrapper,
    )
