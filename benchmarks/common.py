"""Shared helpers for the benchmarks: a BLIP-base-sized model with random weights, result files."""

from __future__ import annotations

import json
import os
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


CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")


def cpu_description() -> dict:
    """The CPU's model name and the instruction-set flags that decide fp32/bf16 speed (from /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"model": model, "flags": sorted(f for f in CPU_FLAGS if f in flags), "cores": os.cpu_count()}


def machine() -> dict:
    """Where a result was measured: CPU model and flags, threads, library versions (and the GPU, if any)."""
    import numpy
    import torch
    import transformers

    from fashion_retrieval.model.precision import cpu_bf16_units

    info = {
        "cpu": cpu_description(),
        "bf16_units": cpu_bf16_units(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
    }
    for name in ("pymilvus", "milvus_lite", "faiss", "ray", "onnxruntime"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?")
        except ImportError:
            continue
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
