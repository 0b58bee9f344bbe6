"""Shared helpers for the benchmarks: a BLIP-base-sized model with random weights, result files."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def build_base_sized_blip(folder: Path, image_size: int = 384) -> Path:
    """Same shapes (and so the same compute) as Salesforce/blip-itm-base-coco, random weights, offline."""
    import torch
    from transformers import BlipConfig, BlipForImageTextRetrieval

    from fashion_retrieval.data.synthetic import sample_items
    from fashion_retrieval.model.tiny import build_processor, words_of

    processor = build_processor(folder, words_of(i.caption for i in sample_items(2000)), image_size)
    tok = processor.tokenizer
    config = BlipConfig(
        text_config={
            "vocab_size": 30524,
            "pad_token_id": tok.pad_token_id,
            "bos_token_id": tok.bos_token_id,
            "sep_token_id": tok.sep_token_id,
        },
        vision_config={"image_size": image_size, "patch_size": 16},
    )
    torch.manual_seed(0)
    BlipForImageTextRetrieval(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def machine() -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"benchmark": name, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(), **data}
    path.write_text(json.dumps(data, indent=2))
    print(json.dumps(data, indent=2))
    return path
