"""Model families, detected from a base folder's own config: BLIP (the default), CLIP, SigLIP, Chinese-CLIP
(transformers ``config.json`` ``model_type``) and open_clip checkpoints (``open_clip_config.json``)."""

from __future__ import annotations

from pathlib import Path

from fashion_retrieval.errors import CheckpointError
from fashion_retrieval.model.families.base import (
    Family,
    FamilyProcessor,
    TextSpec,
    TextTokenizer,
    read_config_json,
)
from fashion_retrieval.model.families.blip import BlipFamily
from fashion_retrieval.model.families.dual import ChineseClipFamily, ClipFamily, SiglipFamily
from fashion_retrieval.model.families.open_clip import OpenClipFamily

# transformers folders first: a hub repo may carry both a config.json and an open_clip_config.json
FAMILIES: tuple[Family, ...] = (BlipFamily(), ClipFamily(), SiglipFamily(), ChineseClipFamily(), OpenClipFamily())
BY_NAME = {family.name: family for family in FAMILIES}


def family_named(name: str | None) -> Family:
    """The family recorded in an identity (None: recorded before families existed, so BLIP)."""
    try:
        return BY_NAME[name or "blip"]
    except KeyError:
        raise CheckpointError(f"unknown model family {name!r}; known: {', '.join(BY_NAME)}") from None


def detect_family(base: str) -> Family:
    """The family of a base folder (or, with network, a hub id), from the folder's own config."""
    folder = Path(base)
    if folder.is_dir():
        if any(folder.glob("open_clip_*.safetensors")) or any(folder.glob("open_clip_*.bin")):
            # open_clip weights, whatever config.json says: hub repos of open_clip models (Marqo's) carry a
            # transformers-style config.json for their remote code beside the open_clip checkpoint
            return BY_NAME["open_clip"]
        config = read_config_json(folder)
    else:
        config = _hub_config(base)
    for family in FAMILIES:
        if family.matches(folder, config):
            return family
    found = config.get("model_type")
    raise CheckpointError(
        f"base {base}: "
        + (f"config.json says model_type {found!r}, " if found else "no config.json model_type and ")
        + "no open_clip_config.json. Loadable: BLIP, CLIP, SigLIP, Chinese-CLIP (transformers folders with "
        "their processor) and open_clip checkpoints (open_clip_config.json + weights)."
    )


def _hub_config(base: str) -> dict:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(base).to_dict()
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load base {base}: {str(exc).splitlines()[0]}") from exc


__all__ = [
    "BY_NAME",
    "FAMILIES",
    "Family",
    "FamilyProcessor",
    "TextSpec",
    "TextTokenizer",
    "detect_family",
    "family_named",
]
