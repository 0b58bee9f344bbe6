"""What a checkpoint holds, for ``fashion-retrieval inspect``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from fashion_retrieval.errors import CheckpointError
from fashion_retrieval.model.checkpoint import read_checkpoint


def _group(name: str) -> str:
    """``text_encoder.encoder.layer.3.attention.self.query`` -> ``text_encoder.*.query``."""
    parts = name.split(".")
    return f"{parts[0]}.*.{parts[-1]}" if len(parts) > 2 else name


def inspect_checkpoint(path: str | Path, *, base: str | None = None, lora_alpha: float = 32.0) -> dict:
    ckpt = read_checkpoint(path, lora_alpha=lora_alpha)
    report = ckpt.summary()
    report["adapted_module_groups"] = dict(sorted(Counter(_group(m) for m in ckpt.lora).items()))
    report["overridden_groups"] = dict(sorted(Counter(k.split(".")[0] for k in ckpt.weights).items()))
    if ckpt.format == "original-lora":
        report["note"] = "alpha is not stored in this format; the value shown is --lora-alpha (default 32)"
    if base is not None:
        from fashion_retrieval.model.loading import load_model

        try:
            loaded = load_model(base, path, lora_alpha=lora_alpha, device="cpu")
            report["loads"] = True
            report["identity"] = loaded.identity.to_dict()
        except CheckpointError as exc:
            report["loads"] = False
            report["load_error"] = str(exc)
    return report


def render_inspection(report: dict) -> str:
    lines = [
        f"checkpoint: {report['path']}",
        f"format:     {report['format']}"
        + (f" (wrapped under '{report['wrapped_under']}')" if report["wrapped_under"] else ""),
        f"sha256:     {report['sha256']}",
    ]
    if report["adapted_modules"]:
        lines.append(
            f"LoRA:       rank {report['lora_rank']}, alpha {report['lora_alpha']}, "
            f"{len(report['adapted_modules'])} adapted modules"
        )
        lines += [f"  {group}: {count}" for group, count in report["adapted_module_groups"].items()]
    else:
        lines.append("LoRA:       none")
    lines.append(f"tensors overridden: {report['overridden_tensors']}")
    lines += [f"  {group}: {count}" for group, count in report["overridden_groups"].items()]
    if "note" in report:
        lines.append(f"note: {report['note']}")
    if "loads" in report:
        lines.append("loads onto base: yes" if report["loads"] else f"loads onto base: NO\n  {report['load_error']}")
    return "\n".join(lines)
