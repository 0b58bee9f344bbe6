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


def inspect_base(path: str | Path) -> dict:
    """What a base model folder is: its family (from the folder's own config), vector size, preprocessing."""
    from fashion_retrieval.model.loading import describe_model

    description = describe_model(path)
    identity = description.identity
    return {
        "path": str(path),
        "format": "base folder",
        "family": identity.family,
        "embed_dim": identity.embed_dim,
        "preprocessing": identity.preprocessing,
        "has_itm": description.family.has_itm,
        "identity": identity.to_dict(),
    }


def _is_open_clip_folder(path: Path) -> bool:
    return path.is_dir() and (path / "open_clip_config.json").is_file() and not (path / "config.json").is_file()


def inspect_checkpoint(path: str | Path, *, base: str | None = None, lora_alpha: float = 32.0) -> dict:
    """What a checkpoint holds; for a model folder also its family (an open_clip folder is described only)."""
    if base is None and _is_open_clip_folder(Path(path)):
        return inspect_base(path)
    ckpt = read_checkpoint(path, lora_alpha=lora_alpha)
    report = ckpt.summary()
    report["adapted_module_groups"] = dict(sorted(Counter(_group(m) for m in ckpt.lora).items()))
    report["overridden_groups"] = dict(sorted(Counter(k.split(".")[0] for k in ckpt.weights).items()))
    if ckpt.format == "original-lora":
        report["note"] = "alpha is not stored in this format; the value shown is --lora-alpha (default 32)"
    if ckpt.format == "hf-folder" and base is None:
        report["family"] = inspect_base(path)["family"]
    if base is not None:
        from fashion_retrieval.model.families import detect_family
        from fashion_retrieval.model.loading import load_model

        report["family"] = detect_family(base).name
        try:
            loaded = load_model(base, path, lora_alpha=lora_alpha, device="cpu")
            report["loads"] = True
            report["identity"] = loaded.identity.to_dict()
        except CheckpointError as exc:
            report["loads"] = False
            report["load_error"] = str(exc)
    return report


def render_inspection(report: dict) -> str:
    if report["format"] == "base folder":
        return "\n".join(
            [
                f"base:       {report['path']}",
                f"family:     {report['family']} ({report['embed_dim']}-d vectors"
                + (", image-text matching head)" if report["has_itm"] else ")"),
                f"preprocessing: {report['preprocessing']}",
            ]
        )
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
    if "family" in report:
        lines.append(f"family:     {report['family']}")
    if "loads" in report:
        lines.append("loads onto base: yes" if report["loads"] else f"loads onto base: NO\n  {report['load_error']}")
    return "\n".join(lines)
