"""BLIP (``BlipForImageTextRetrieval``): the original toolkit's model and the default family.

Image: vision_model -> CLS -> vision_proj; text: text_encoder -> CLS -> text_proj (``model/features.py``,
with checked fast paths). A captioning base (``blip-image-captioning-base``) loads as a retrieval model with
its text encoder and heads at random: the fine-tuned checkpoint must supply them (``model/loading.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fashion_retrieval.data.images import ImagePreprocessor
from fashion_retrieval.errors import CheckpointError
from fashion_retrieval.model import features
from fashion_retrieval.model.families.base import (
    Family,
    FamilyProcessor,
    Features,
    TextSpec,
    TextTokenizer,
    text_limit,
)


class BlipFamily(Family):
    name = "blip"
    label = "BLIP"
    has_itm = True
    lora_targets = ("query", "value", "vision_proj", "text_proj")

    def matches(self, folder: Path, config: dict) -> bool:
        return config.get("model_type") == "blip"

    def read_config(self, base: str) -> Any:
        from transformers import BlipConfig

        return BlipConfig.from_pretrained(base)

    def embed_dim(self, config: Any) -> int:
        return int(config.image_text_hidden_size)

    def load_processor(self, base: str, config: Any) -> FamilyProcessor:
        from transformers import BlipProcessor

        try:
            processor = BlipProcessor.from_pretrained(base, backend="pil")  # see dual.py
        except OSError as exc:
            raise CheckpointError(f"cannot load the processor of base {base}: {str(exc).splitlines()[0]}") from exc
        spec = TextSpec(text_limit(processor.tokenizer, config.text_config.max_position_embeddings))
        preprocess = ImagePreprocessor.from_processor(processor)
        return FamilyProcessor(TextTokenizer(processor.tokenizer, spec), preprocess, processor)

    def load_model(self, base: str) -> tuple[torch.nn.Module, set[str]]:
        from transformers import BlipForImageTextRetrieval

        model, info = BlipForImageTextRetrieval.from_pretrained(base, output_loading_info=True, dtype=torch.float32)
        return model.eval(), set(info.get("missing_keys", ())) | set(info.get("mismatched_keys", ()))

    def image_features(self, model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        return features.image_features(model, pixel_values)

    def text_features(
        self, model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        return features.text_features(model, input_ids, attention_mask)

    def fast_image_features(self) -> Features:
        return features.image_features_fast

    def fast_text_features(self) -> Features:
        return features.text_features_cls_only

    def itm_scores(self, encoder: Any, text: str, images: Sequence[Any]) -> Any:
        from fashion_retrieval.model.rerank import itm_scores

        return itm_scores(encoder, text, images)


__all__ = ["BlipFamily"]
