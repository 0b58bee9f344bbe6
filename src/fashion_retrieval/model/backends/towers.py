"""A model's two towers as modules of their own, for export: image pixels -> vector, tokens -> vector, each with
its projection and L2 normalisation inside, for any family (the family's plain, differentiable path)."""

from __future__ import annotations

import torch

from fashion_retrieval.model.families import Family

IMAGE_INPUTS = ("pixel_values",)
TEXT_INPUTS = ("input_ids", "attention_mask")


class ImageTower(torch.nn.Module):
    """pixel_values float32 [N, 3, H, W] -> float32 [N, D], L2-normalised."""

    def __init__(self, family: Family, model: torch.nn.Module) -> None:
        super().__init__()
        self.family, self.model = family, model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.family.image_features(self.model, pixel_values)


class TextTower(torch.nn.Module):
    """input_ids, attention_mask int64 [N, L] -> float32 [N, D], L2-normalised. Families whose text tower takes
    no mask (SigLIP, open_clip) ignore it; runtimes feed only the inputs an exported graph kept."""

    def __init__(self, family: Family, model: torch.nn.Module) -> None:
        super().__init__()
        self.family, self.model = family, model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.family.text_features(self.model, input_ids, attention_mask)


__all__ = ["IMAGE_INPUTS", "TEXT_INPUTS", "ImageTower", "TextTower"]
