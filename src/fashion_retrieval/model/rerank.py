"""BLIP's image-text matching (ITM) head: a cross-attention score for (text, image) pairs, used to rerank."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fashion_retrieval.data.images import ImageInput, open_image


@torch.inference_mode()
def itm_scores(encoder, text: str, images: Sequence[ImageInput], batch_size: int = 16) -> np.ndarray:
    """Probability that each image matches ``text`` according to the ITM head, as the model's forward computes it."""
    model = encoder.model
    tokens = encoder.tokenize([text])
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        pixels = torch.from_numpy(np.stack([encoder.preprocess(open_image(i)) for i in chunk]))
        n = len(chunk)
        logits = model(
            input_ids=tokens["input_ids"].expand(n, -1).to(encoder.device),
            attention_mask=tokens["attention_mask"].expand(n, -1).to(encoder.device),
            pixel_values=pixels.to(encoder.device, dtype=next(model.parameters()).dtype),  # the torch model's own
            use_itm_head=True,
        ).itm_score
        out.append(torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)
