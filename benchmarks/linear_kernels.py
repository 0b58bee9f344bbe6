"""Linear-layer speed on this CPU: PyTorch's default (MKL sgemm in fp32) vs a prepacked oneDNN weight
(PackedLinear), in fp32 or bf16.

BLIP-base's Linear shapes: 768->2304 (vision qkv), 768->768, 768->3072 and 3072->768, for a 577-token
image and for a batch of 16 captions of 55 tokens. Reports GFLOP/s per kernel and the ratio; the CPU model,
its flags (AVX2/AVX-512/AMX) and the thread count are in the result's ``machine``.

    python -m benchmarks.linear_kernels                         # fp32
    python -m benchmarks.linear_kernels --dtype bf16 --name linear_kernels_cpu_bf16
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import torch
from torch import nn

from benchmarks.common import write_result
from fashion_retrieval.model.packed_linear import PackedLinear, packing_available
from fashion_retrieval.model.precision import NAMES

SHAPES = {"vision (577 tokens)": 577, "captions (16 x 55 tokens)": 16 * 55}
LAYERS = [(768, 2304), (768, 768), (768, 3072), (3072, 768)]


def gflops(layer: nn.Module, x: torch.Tensor, repeats: int = 20) -> float:
    with torch.inference_mode():
        layer(x)
        start = time.perf_counter()
        for _ in range(repeats):
            layer(x)
        seconds = (time.perf_counter() - start) / repeats
    return 2 * x.shape[0] * layer.in_features * layer.out_features / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--name", default="linear_kernels_cpu")
    args = parser.parse_args()
    if not packing_available():
        raise SystemExit("oneDNN packing is not available on this machine")
    dtype = NAMES[args.dtype]
    torch.manual_seed(0)
    rows = []
    for name, tokens in SHAPES.items():
        for n_in, n_out in LAYERS:
            plain = nn.Linear(n_in, n_out).to(dtype)
            packed = PackedLinear.wrap(plain)
            x = torch.randn(tokens, n_in, dtype=dtype)
            a, b = gflops(plain, x, args.repeats), gflops(packed, x, args.repeats)
            rows.append(
                {
                    "input": name,
                    "shape": f"{n_in}->{n_out}",
                    "pytorch_gflops": round(a, 1),
                    "onednn_gflops": round(b, 1),
                }
            )
            rows[-1]["speedup"] = round(b / a, 2)
            print(rows[-1], flush=True)
    write_result(
        args.name,
        {
            "command": "python -m benchmarks.linear_kernels " + shlex.join(sys.argv[1:]),
            "dtype": args.dtype,
            "blas": "MKL" if torch.backends.mkl.is_available() else "other",
            "layers": rows,
        },
    )


if __name__ == "__main__":
    main()
