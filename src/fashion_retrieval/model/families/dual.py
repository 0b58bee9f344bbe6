"""Dual encoders in transformers: CLIP (FashionCLIP 2.0), SigLIP and SigLIP 2, Chinese-CLIP.

Each embeds with the model's own ``get_image_features`` / ``get_text_features`` (in transformers 5 an output
whose ``pooler_output`` is the projected embedding), L2-normalised. They differ in their classes, their
processors and how captions are tokenised:

- CLIP pools the end-of-text token, Chinese-CLIP the [CLS] token: both pad per batch with a mask;
- SigLIP pools the last position and was trained on captions padded to 64 tokens without a mask, so it is
  tokenised exactly so (padding per batch would change its vectors).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fashion_retrieval.data.images import ImagePreprocessor
from fashion_retrieval.errors import CheckpointError
from fashion_retrieval.model.families.base import Family, FamilyProcessor, TextSpec, TextTokenizer, text_limit


@dataclass(frozen=True)
class _Classes:
    config: str
    model: str
    processor: str


def _transformers(name: str) -> Any:
    import transformers

    return getattr(transformers, name)


def _pooled(output: Any) -> torch.Tensor:
    """``get_*_features`` returns the projected embedding (transformers 4) or an output holding it (5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class DualEncoderFamily(Family):
    """A transformers dual encoder with ``get_image_features`` / ``get_text_features``."""

    model_type: str
    classes: _Classes
    pad_to_max_length = False
    uses_attention_mask = True

    def matches(self, folder: Path, config: dict) -> bool:
        return config.get("model_type") == self.model_type

    def read_config(self, base: str) -> Any:
        return _transformers(self.classes.config).from_pretrained(base)

    def embed_dim(self, config: Any) -> int:
        return int(config.projection_dim)

    def load_processor(self, base: str, config: Any) -> FamilyProcessor:
        try:
            # PIL backend: what our decoding workers reproduce exactly (transformers picks torchvision where it is
            # installed, which resamples differently by about one grey level)
            processor = _transformers(self.classes.processor).from_pretrained(base, backend="pil")
        except (OSError, ImportError, ValueError) as exc:
            raise CheckpointError(
                f"cannot load the {self.label} processor of base {base}: {str(exc).splitlines()[0]}"
            ) from exc
        try:
            preprocess = ImagePreprocessor.from_processor(processor)
        except ValueError as exc:
            raise CheckpointError(f"base {base}: {exc}") from exc
        limit = text_limit(processor.tokenizer, config.text_config.max_position_embeddings)
        spec = TextSpec(limit, self.pad_to_max_length, self.uses_attention_mask)
        return FamilyProcessor(TextTokenizer(processor.tokenizer, spec), preprocess, processor)

    def load_model(self, base: str) -> tuple[torch.nn.Module, set[str]]:
        cls = _transformers(self.classes.model)
        model, info = cls.from_pretrained(base, output_loading_info=True, dtype=torch.float32)
        return model.eval(), set(info.get("missing_keys", ())) | set(info.get("mismatched_keys", ()))

    def image_features(self, model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.normalize(_pooled(model.get_image_features(pixel_values=pixel_values)).float(), dim=-1)

    def text_features(
        self, model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        mask = attention_mask if self.uses_attention_mask else None
        return F.normalize(_pooled(model.get_text_features(input_ids=input_ids, attention_mask=mask)).float(), dim=-1)


class ClipFamily(DualEncoderFamily):
    name, label, model_type = "clip", "CLIP", "clip"
    classes = _Classes("CLIPConfig", "CLIPModel", "CLIPProcessor")
    lora_targets = ("q_proj", "v_proj", "visual_projection", "text_projection")


class SiglipFamily(DualEncoderFamily):
    name, label, model_type = "siglip", "SigLIP", "siglip"
    classes = _Classes("SiglipConfig", "SiglipModel", "SiglipProcessor")
    lora_targets = ("q_proj", "v_proj")  # no projection layers: the towers' heads end in the shared space
    pad_to_max_length = True
    uses_attention_mask = False

    def embed_dim(self, config: Any) -> int:
        text = config.text_config.projection_size or config.text_config.hidden_size
        image = config.vision_config.hidden_size
        if int(text) != int(image):
            raise CheckpointError(f"SigLIP config with text vectors of {text} and image vectors of {image} dims")
        return int(image)


class ChineseClipFamily(DualEncoderFamily):
    name, label, model_type = "chinese_clip", "Chinese-CLIP", "chinese_clip"
    classes = _Classes("ChineseCLIPConfig", "ChineseCLIPModel", "ChineseCLIPProcessor")
    lora_targets = ("query", "value", "q_proj", "v_proj", "visual_projection", "text_projection")


__all__ = ["ChineseClipFamily", "ClipFamily", "DualEncoderFamily", "SiglipFamily"]
