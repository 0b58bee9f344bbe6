"""open_clip checkpoints (Marqo-FashionCLIP, Marqo-FashionSigLIP, Marqo-Ecommerce, LAION ...), loaded by the
``open_clip`` library itself (the optional extra ``fashion-retrieval[open_clip]``).

A checkpoint folder as published on model hubs: ``open_clip_config.json`` (``model_cfg`` and ``preprocess_cfg``)
beside its weights (``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``) and, for models with a
Hugging Face tokenizer, that tokenizer's files. open_clip builds the model from the config and loads the weights
strictly; the image preprocessing is read from ``preprocess_cfg`` and checked against open_clip's own transform.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fashion_retrieval.data.images import ImagePreprocessor
from fashion_retrieval.errors import CheckpointError
from fashion_retrieval.model.families.base import Family, FamilyProcessor, TextSpec, TextTokenizer

CONFIG_FILE = "open_clip_config.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
# open_clip's defaults (open_clip.transform.PreprocessCfg, open_clip.constants): what a config leaves out
DEFAULT_PREPROCESS = {
    "mean": (0.48145466, 0.4578275, 0.40821073),
    "std": (0.26862954, 0.26130258, 0.27577711),
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}
PIL_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1}


def import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError as exc:
        raise CheckpointError(
            f"this base is an open_clip checkpoint and open_clip cannot be imported ({exc}): "
            "pip install 'fashion-retrieval[open_clip]' (it needs torchvision built for your torch)"
        ) from exc
    return open_clip


class OpenClipTextTokenizer(TextTokenizer):
    """open_clip's tokenizers return ids padded to the model's context length; pads are 0 (its BPE tokenizer)
    or the tokenizer's pad id (Hugging Face tokenizers)."""

    def __init__(self, tokenizer: Any, spec: TextSpec) -> None:
        super().__init__(tokenizer, spec)
        inner = getattr(tokenizer, "tokenizer", None)
        self.pad_id = int(getattr(inner, "pad_token_id", None) or 0)

    def _ids(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts).long()

    def lengths(self, texts: list[str]) -> list[int]:
        return (self._ids(list(texts)) != self.pad_id).sum(dim=1).tolist()

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        ids = self._ids(list(texts))
        return {"input_ids": ids, "attention_mask": (ids != self.pad_id).long()}


class OpenClipFamily(Family):
    name = "open_clip"
    label = "open_clip"
    # open_clip's attention is nn.MultiheadAttention (fused in_proj, which PEFT does not adapt): LoRA goes on the
    # attention output and the MLP Linears.
    lora_targets = ("out_proj", "c_fc", "c_proj")

    def matches(self, folder: Path, config: dict) -> bool:
        return (folder / CONFIG_FILE).is_file()

    def read_config(self, base: str) -> dict:
        path = Path(base) / CONFIG_FILE
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable open_clip config ({exc})") from exc
        if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
            raise CheckpointError(f"{path}: has no model_cfg (an open_clip config holds model_cfg and preprocess_cfg)")
        return config

    def embed_dim(self, config: dict) -> int:
        return int(config["model_cfg"]["embed_dim"])

    def load_processor(self, base: str, config: dict) -> FamilyProcessor:
        open_clip = import_open_clip()
        tokenizer = open_clip.get_tokenizer(f"local-dir:{base}")
        configured = config["model_cfg"].get("text_cfg", {}).get("context_length", 77)
        context = int(getattr(tokenizer, "context_length", None) or configured)
        spec = TextSpec(context, pad_to_max_length=True, attention_mask=False)
        return FamilyProcessor(OpenClipTextTokenizer(tokenizer, spec), preprocessor_from_config(config, base))

    def load_model(self, base: str) -> tuple[torch.nn.Module, set[str]]:
        weights = [p for p in Path(base).iterdir() if p.suffix in WEIGHT_SUFFIXES]
        if not weights:
            # open_clip would build the model with random weights and only log a warning
            raise CheckpointError(f"base {base}: {CONFIG_FILE} but no weights file (*.safetensors, *.bin, *.pth)")
        open_clip = import_open_clip()
        try:
            model = open_clip.create_model(f"local-dir:{base}", device="cpu", precision="fp32")
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            raise CheckpointError(f"open_clip cannot load base {base}: {str(exc).splitlines()[0][:300]}") from exc
        return model.eval(), set()

    def image_features(self, model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.normalize(model.encode_image(pixel_values).float(), dim=-1)

    def text_features(
        self, model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        return F.normalize(model.encode_text(input_ids).float(), dim=-1)

    def reference_preprocess(self, model: torch.nn.Module, processor: FamilyProcessor) -> Any:
        """open_clip's own eval transform for this model (torchvision), to check ours against."""
        from open_clip.transform import PreprocessCfg, image_transform_v2

        transform = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
        return lambda image: transform(image).numpy()

    def save_pretrained(self, model: torch.nn.Module, processor: FamilyProcessor, folder: Path) -> None:
        raise CheckpointError("--full training writes Hugging Face folders: train an open_clip model with LoRA")


def preprocessor_from_config(config: dict, base: str) -> ImagePreprocessor:
    """open_clip's eval transform from ``preprocess_cfg`` (and the vision tower's image size): resize_mode
    ``shortest`` = resize the shorter side then crop the centre (torchvision's rounding), ``squash`` = resize to
    the square; ``longest`` (pad to a square) is refused."""
    cfg = {**DEFAULT_PREPROCESS, **config.get("preprocess_cfg", {})}
    # open_clip sets the size from the vision tower, whatever preprocess_cfg says
    size = config["model_cfg"].get("vision_cfg", {}).get("image_size", 224)
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if cfg["resize_mode"] not in ("shortest", "squash") or cfg["interpolation"] not in PIL_RESAMPLE:
        raise CheckpointError(
            f"base {base}: open_clip preprocessing resize_mode={cfg['resize_mode']!r}, "
            f"interpolation={cfg['interpolation']!r} is not supported (shortest or squash; bicubic, bilinear ...)"
        )
    if cfg["resize_mode"] == "shortest" and height != width:
        raise CheckpointError(f"base {base}: a shortest-edge resize to a non-square size {size} is not supported")
    return ImagePreprocessor(
        height=height,
        width=width,
        resample=PIL_RESAMPLE[cfg["interpolation"]],
        rescale_factor=1 / 255,
        mean=tuple(float(x) for x in cfg["mean"]),
        std=tuple(float(x) for x in cfg["std"]),
        shortest_edge=height if cfg["resize_mode"] == "shortest" else None,
        crop_rounding="round",
    )


__all__ = ["OpenClipFamily", "preprocessor_from_config"]
