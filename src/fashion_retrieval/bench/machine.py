"""Where a figure was measured: CPU model and flags, threads, library versions (and the GPU, if any).

Recorded with every benchmark result and every model comparison: ratios measured in one run compare across
machines, absolute times do not."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path

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


DISTRIBUTIONS = {
    "pymilvus": "pymilvus",
    "milvus-lite": "milvus_lite",
    "faiss-cpu": "faiss",
    "ray": "ray",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
}


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
    # installed distributions, read without importing them (ray and openvino take seconds to import)
    for name, key in DISTRIBUTIONS.items():
        try:
            info[key] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


__all__ = ["CPU_FLAGS", "cpu_description", "machine"]
