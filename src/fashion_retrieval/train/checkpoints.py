"""Writing trained weights: the original toolkit's ``best_model.pth`` format, from a PEFT or plain model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def original_format_from_peft(blip: nn.Module) -> dict[str, torch.Tensor]:
    """State dict of a PEFT-injected BLIP in the original hand-written LoRA layout.

    PEFT keeps ``X.base_layer.weight``, ``X.lora_A.default.weight`` [r, in] and ``X.lora_B.default.weight``
    [out, r]; the original has ``X.linear.weight``, ``X.lora.lora_A`` [in, r] and ``X.lora.lora_B`` [r, out],
    with the same scale alpha / r.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in blip.state_dict().items():
        value = value.detach().cpu().float().contiguous() if value.is_floating_point() else value.detach().cpu()
        if ".lora_A.default.weight" in key:
            out[key.replace(".lora_A.default.weight", ".lora.lora_A")] = value.t().contiguous()
        elif ".lora_B.default.weight" in key:
            out[key.replace(".lora_B.default.weight", ".lora.lora_B")] = value.t().contiguous()
        elif ".base_layer." in key:
            out[key.replace(".base_layer.", ".linear.")] = value
        elif ".lora_" in key:
            continue  # dropout / embedding LoRA pieces: none for Linear LoRA
        else:
            out[key] = value
    return out


def original_format_from_plain(model: nn.Module, targets: Sequence[str], rank: int) -> dict[str, torch.Tensor]:
    """A fully fine-tuned model written in the original layout, with zero LoRA (the weights carry everything),
    so that the original toolkit's loader, which wraps before loading, reads it too."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(t in name for t in targets):
            for leaf in ("weight", "bias"):
                if f"{name}.{leaf}" in state:
                    state[f"{name}.linear.{leaf}"] = state.pop(f"{name}.{leaf}")
            state[f"{name}.lora.lora_A"] = torch.zeros(module.in_features, rank)
            state[f"{name}.lora.lora_B"] = torch.zeros(rank, module.out_features)
    return state
