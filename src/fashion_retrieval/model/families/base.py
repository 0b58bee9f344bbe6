"""What a model family is: how one kind of image-text model is detected, loaded, tokenised and embedded.

Everything above ``model/`` talks to one encoder (``model.encoder.FashionEmbeddingModel``); the encoder asks
its ``Family`` for what differs between BLIP, CLIP, SigLIP, Chinese-CLIP and open_clip checkpoints: the
classes that load the folder, the image preprocessing and the tokenizer settings, and the two embedding
functions (image and text -> L2-normalised vectors of one shared space).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from fashion_retrieval.data.images import ImagePreprocessor
from fashion_retrieval.errors import UnsupportedFeatureError

Features = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class TextSpec:
    """How a family's text tower wants its tokens.

    ``pad_to_max_length``: SigLIP pools the last position and was trained on captions padded to its maximum
    length, so shorter padding changes its vectors; the others pool a fixed token and pad per batch.
    ``attention_mask``: whether the text tower takes one (SigLIP and open_clip models do not)."""

    max_length: int
    pad_to_max_length: bool = False
    attention_mask: bool = True


class TextTokenizer:
    """Captions -> the ``input_ids`` / ``attention_mask`` tensors a family's text tower takes."""

    def __init__(self, tokenizer: Any, spec: TextSpec) -> None:
        self.tokenizer, self.spec = tokenizer, spec

    @property
    def max_length(self) -> int:
        return self.spec.max_length

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """Token count of each caption (truncated as the model sees it): batches are formed by length."""
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.spec.max_length)["input_ids"]
        return [len(row) for row in ids]

    def table(self, texts: Sequence[str]) -> dict[str, torch.Tensor] | None:
        """Every caption tokenised once, for ``rows`` to cut batches from (training reads each caption every
        epoch; tokenising a batch of 128 took 4.1 ms of a ~55 ms demo training step, cutting it 0.1 ms). None
        where a cut batch would differ from ``__call__``'s: a tokenizer without an attention mask, padded per
        batch, shows no padding to trim."""
        if not self.spec.attention_mask and not self.spec.pad_to_max_length:
            return None
        return self(texts)

    def rows(self, table: dict[str, torch.Tensor], index: Sequence[int]) -> dict[str, torch.Tensor]:
        """The rows ``index`` of a ``table``, as ``__call__`` tokenises those captions: padding columns no row
        of the batch uses are dropped (per-batch padding), unless the family pads to its maximum length."""
        ids, mask = table["input_ids"][list(index)], table["attention_mask"][list(index)]
        if not self.spec.pad_to_max_length:
            used = mask.any(dim=0)
            ids, mask = ids[:, used], mask[:, used]
        return {"input_ids": ids, "attention_mask": mask}

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        padding = "max_length" if self.spec.pad_to_max_length else True
        tokens = self.tokenizer(
            list(texts), padding=padding, truncation=True, max_length=self.spec.max_length, return_tensors="pt"
        )
        ids = tokens["input_ids"]
        mask = tokens.get("attention_mask")
        return {"input_ids": ids, "attention_mask": mask if mask is not None else torch.ones_like(ids)}


@dataclass
class FamilyProcessor:
    """What a family reads from a base folder besides the weights: tokenizer, image preprocessing, and the
    transformers processor where the family has one (saved beside fully fine-tuned weights)."""

    tokenizer: TextTokenizer
    preprocess: ImagePreprocessor
    hf_processor: Any = None

    def preprocessing_record(self) -> dict:
        return {**self.preprocess.describe(), "max_text_length": self.tokenizer.max_length}


class Family(ABC):
    """One kind of image-text model. Instances hold no state: one per family, in ``families.FAMILIES``."""

    name: ClassVar[str]  # recorded in the model identity: blip, clip, siglip, chinese_clip, open_clip
    label: ClassVar[str]  # for people: "BLIP", "SigLIP" ...
    has_itm: ClassVar[bool] = False  # an image-text matching head (BLIP), for --rerank
    lora_targets: ClassVar[tuple[str, ...]]  # module-name fragments PEFT LoRA adapts when training

    @abstractmethod
    def matches(self, folder: Path, config: dict) -> bool:
        """Whether a base folder (with its parsed config.json, {} if none) holds this family."""

    @abstractmethod
    def read_config(self, base: str) -> Any:
        """The model config, without building the model (cheap; for a driver whose workers load it)."""

    @abstractmethod
    def embed_dim(self, config: Any) -> int: ...

    @abstractmethod
    def load_processor(self, base: str, config: Any) -> FamilyProcessor: ...

    @abstractmethod
    def load_model(self, base: str) -> tuple[torch.nn.Module, set[str]]:
        """The model in fp32 on the CPU, in eval mode, and the names of tensors left at random initialisation
        (not in the base's weights): a checkpoint must provide them or loading is refused."""

    @abstractmethod
    def image_features(self, model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        """Preprocessed images [N, 3, H, W] -> float32 [N, D], L2-normalised (the plain path, differentiable)."""

    @abstractmethod
    def text_features(
        self, model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Tokens -> float32 [N, D], L2-normalised (the plain path, differentiable)."""

    def fast_image_features(self) -> Features | None:
        """A faster function computing the same image vectors, checked against the plain path before use."""
        return None

    def fast_text_features(self) -> Features | None:
        return None

    def reference_preprocess(self, model: torch.nn.Module, processor: FamilyProcessor) -> Callable[[Any], Any]:
        """The family's own image preprocessing (PIL image -> float32 [3, H, W]), which ours must reproduce."""
        hf = processor.hf_processor
        return lambda image: hf(images=image, return_tensors="np")["pixel_values"][0]

    def itm_scores(self, encoder: Any, text: str, images: Sequence[Any]) -> Any:
        raise UnsupportedFeatureError(
            f"this model ({self.label}) has no image-text matching head: --rerank needs a BLIP retrieval model"
        )

    def save_pretrained(self, model: torch.nn.Module, processor: FamilyProcessor, folder: Path) -> None:
        """Write fully fine-tuned weights as a base folder this family loads again."""
        model.save_pretrained(folder)
        if processor.hf_processor is not None:
            processor.hf_processor.save_pretrained(folder)


def read_config_json(folder: Path) -> dict:
    """A folder's config.json as a dict ({} when there is none or it is not JSON)."""
    try:
        data = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def text_limit(tokenizer: Any, positions: int) -> int:
    """The longest caption a text tower takes: the tokenizer's limit, bounded by the position embeddings."""
    limit = getattr(tokenizer, "model_max_length", None)
    return int(min(limit, positions)) if limit and limit < 10**6 else int(positions)


__all__ = ["Family", "FamilyProcessor", "Features", "TextSpec", "TextTokenizer", "read_config_json", "text_limit"]
