"""Linear-layer speed on this CPU: PyTorch's default (MKL sgemm) vs a prepacked oneDNN weight (PackedLinear).

BLIP-base's Linear shapes: 768->2304 (vision qkv), 768->768, 768->3072 and 3072->768, for a 577-token
image and for a batch of 16 captions of 55 tokens. Reports GFLOP/s per kernel and the ratio.

    python -m benchmarks.linear_kernels
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import write_result
from fashion_retrieval.model.packed_linear import PackedLinear, packing_available

SHAPES = {"vision (577 tokens)": 577, "captions (16 x 55 tokens)": 16 * 55}
LAYERS = [(768, 2304), (768, 768), (768, 3072), (3072, 768)]


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")
    return name + (" (AVX-512)" if any("avx512f" in line for line in lines) else "")


def gflops(layer: nn.Module, x: torch.Tensor, repeats: int = 20) -> float:
    with torch.inference_mode():
        layer(x)
        start = time.perf_counter()
        for _ in range(repeats):
            layer(x)
        seconds = (time.perf_counter() - start) / repeats
    return 2 * x.shape[0] * layer.in_features * layer.out_features / seconds / 1e9


def main() -> None:
    if not packing_available():
        raise SystemExit("oneDNN packing is not available on this machine")
    torch.manual_seed(0)
    rows = []
    for name, tokens in SHAPES.items():
        for n_in, n_out in LAYERS:
            plain = nn.Linear(n_in, n_out)
            packed = PackedLinear.wrap(plain)
            x = torch.randn(tokens, n_in)
            a, b = gflops(plain, x), gflops(packed, x)
            rows.append(
                {"input": name, "shape": f"{n_in}->{n_out}", "mkl_gflops": round(a, 1), "onednn_gflops": round(b, 1)}
            )
            rows[-1]["speedup"] = round(b / a, 2)
            print(rows[-1], flush=True)
    write_result(
        "linear_kernels_cpu",
        {
            "command": "python -m benchmarks.linear_kernels",
            "cpu": cpu_name(),
            "blas": "MKL" if torch.backends.mkl.is_available() else "other",
            "layers": rows,
        },
    )


if __name__ == "__main__":
    main()
