"""The two embedding functions of BLIP's image-text contrastive (ITC) space.

Image: vision_model -> CLS -> vision_proj -> L2 normalise.
Text:  text_encoder (no image cross-attention) -> CLS -> text_proj -> L2 normalise.
Their dot product equals ``BlipForImageTextRetrieval.forward(..., use_itm_head=False)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import BlipForImageTextRetrieval


def image_features(model: BlipForImageTextRetrieval, pixel_values: torch.Tensor) -> torch.Tensor:
    hidden = model.vision_model(pixel_values=pixel_values).last_hidden_state
    return F.normalize(model.vision_proj(hidden[:, 0, :]).float(), dim=-1)


def text_features(
    model: BlipForImageTextRetrieval, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    hidden = model.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return F.normalize(model.text_proj(hidden[:, 0, :]).float(), dim=-1)
