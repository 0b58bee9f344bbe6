"""Embedding throughput per backend and precision, BLIP-base-sized at 384 px, through ``embed``, in one run.

Every row runs ``embed_catalog`` on the same generated catalogue (750x1101 JPEGs, DeepFashion-length captions), as
``fashion-retrieval embed`` does, decoding included:

- torch fp32, torch bf16 (where the CPU has bf16 units);
- OpenVINO fp32, bf16 (bf16 units only) and int8; ONNX Runtime fp32 and int8: each export made once before the
  rounds (int8 calibrated on ``--calibrate`` catalogue rows) and run as an export folder, so its speed is measured
  whatever its parity gate says on random weights (whether int8 keeps a *trained* model's rankings is
  ``benchmarks/precision.py``'s question);
- ``--backend auto``: what the automatic choice picks here, per tower, among the candidates whose parity gate
  passes (its timing of the candidates happens once, before the rounds, and is not counted).

Every row runs one image batch and one caption batch before it is timed: the first calls pick kernels and, for a
freshly compiled export, finish OpenVINO's / ONNX Runtime's lazy setup (a one-off cost a catalogue run amortises,
which a 32-row round would not). Rounds are interleaved (the order alternates); figures are medians, ratios medians
of per-round ratios to torch fp32. The model and the exports live in a temporary folder removed at the end.

    python -m benchmarks.backend_throughput
    python -m benchmarks.backend_throughput --tiny --images 8 --rounds 1 --name backend_smoke   # checks the harness
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from benchmarks.common import benchmark_model, temporary_folder, write_result
from fashion_retrieval.bench.throughput import Workload, warm_up
from fashion_retrieval.model.backends import Calibration, export_towers
from fashion_retrieval.model.encoder import FashionEmbeddingModel
from fashion_retrieval.model.loading import load_model
from fashion_retrieval.model.precision import cpu_bf16_units

EXPORTS = (("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"), ("onnx", "fp32"), ("onnx", "int8"))


def exports(base: Path, folder: Path, calibration: Calibration) -> dict[str, Path]:
    """Each export made once; returns row name -> export folder (with how long each export took)."""
    loaded = load_model(base, device="cpu", dtype="fp32")
    made = {}
    for fmt, precision in EXPORTS:
        if precision == "bf16" and cpu_bf16_units() is None:
            continue
        out = folder / f"{fmt}-{precision}"
        start = time.perf_counter()
        manifest = export_towers(loaded, fmt, precision, out, calibration if precision == "int8" else None)
        runtime = {"onnx": "onnxruntime", "openvino": "openvino"}[fmt]
        made[f"{runtime}_{precision}"] = out
        print(
            f"exported {fmt} {precision} in {time.perf_counter() - start:.0f} s, parity {manifest.parity}", flush=True
        )
    del loaded
    return made


def encoders(base: Path, export_folders: dict[str, Path], calibration: Calibration) -> dict[str, FashionEmbeddingModel]:
    rows = {"torch_fp32": FashionEmbeddingModel(None, base, "cpu", dtype="fp32")}
    if cpu_bf16_units():
        rows["torch_bf16"] = FashionEmbeddingModel(None, base, "cpu", dtype="bf16")
    for name, folder in export_folders.items():
        rows[name] = FashionEmbeddingModel(None, folder)
    rows["auto"] = FashionEmbeddingModel(None, base, "cpu", backend="auto", calibration=calibration)
    return rows


def summarise(rows: dict, rounds: list[dict]) -> dict:
    def med(name: str, kind: str) -> float:
        return round(statistics.median(r[name][kind] for r in rounds), 3)

    def ratio(name: str, kind: str) -> float:
        return round(statistics.median(r[name][kind] / r["torch_fp32"][kind] for r in rounds), 3)

    return {
        "images_per_second": {n: med(n, "images") for n in rows},
        "captions_per_second": {n: med(n, "captions") for n in rows},
        "vs_torch_fp32": {n: {k: ratio(n, k) for k in ("images", "captions")} for n in rows},
        "ran_as": {n: e.precision.to_dict() for n, e in rows.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="catalogue rows embedded (images and captions)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calibrate", type=int, default=32, help="catalogue rows int8 is calibrated on")
    parser.add_argument("--tiny", action="store_true", help="a tiny random BLIP (checks the harness, not speed)")
    parser.add_argument("--name", default="backend_throughput_cpu")
    args = parser.parse_args()
    with temporary_folder("backend-bench") as folder, benchmark_model(None, tiny=args.tiny) as (base, described):
        os.environ["XDG_CACHE_HOME"] = str(folder / "cache")  # auto's exports and decision: removed with the folder
        workload = Workload.create(folder / "work", "cpu", images=args.images)
        calibration = Calibration(workload.paths[: args.calibrate], workload.texts[: args.calibrate], "benchmark")
        rows = encoders(base, exports(base, folder / "exports", calibration), calibration)
        for encoder in rows.values():
            warm_up(encoder, workload)
        rounds = []
        for round_ in range(args.rounds):
            order = list(rows) if round_ % 2 == 0 else list(reversed(rows))
            result = {}
            for name in order:
                piped = workload.pipeline(rows[name])
                result[name] = {"images": piped["images"], "captions": piped["captions"]}
            rounds.append(result)
            print(round_, result, flush=True)
    write_result(
        args.name,
        {
            "command": f"python -m benchmarks.backend_throughput {' '.join(sys.argv[1:])}",
            "model": described,
            "images": args.images,
            "calibrate": args.calibrate,
            **summarise(rows, rounds),
            "rounds": rounds,
        },
    )


if __name__ == "__main__":
    main()
