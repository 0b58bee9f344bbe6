"""Embedding throughput: the pipeline against its ceiling, and peers as baselines, per dtype, in one run.

A BLIP-base-sized model with random weights (the same compute as the real one; ``--tiny`` checks the harness
on a tiny model instead), a generated catalogue of JPEGs at DeepFashion's 750x1101 with captions of its
length. Figures (``fashion_retrieval/bench/throughput.py`` says exactly what each one runs):

- pipeline: ``embed_catalog`` on the catalogue, as ``fashion-retrieval embed`` runs; images/s and captions/s
  are the run summary's own (its ``read`` + ``encode_images`` and its ``encode_texts`` stages);
- ceiling: the encoder's bare forward on the same rows in the same batches (images decoded beforehand by the
  pipeline's decode, captions pre-tokenized in the pipeline's length-sorted batches), the fastest of
  ``--ceiling-passes`` passes: an upper bound of the pipeline, checked per round (``upper_bound_held``) and by
  comparing the vectors of both;
- peers, on the same batches: ``plain`` (the model as transformers runs it), ``compile`` (``torch.compile`` of
  the plain model's vision tower and text encoder; compile time reported apart and excluded from the rate),
  ``onnx`` (the vision tower exported to ONNX, run by ONNX Runtime and by OpenVINO, vectors compared with the
  fp32 model's), ``loop`` (one item at a time through the processor, as the original toolkit did). A peer that
  does not install or fails here is reported with the reason.

Every measurement is repeated for ``--rounds`` rounds, interleaved (per round each dtype in alternating order,
the pipeline and its ceiling back to back in alternating order), so drift of a shared machine hits all alike;
figures are medians over rounds, ratios medians of per-round ratios. ``--dtypes fp32,bf16`` measures both and
their ratio; each records the dtype actually used and why. The model lives in a temporary folder removed at the
end (errors included) unless ``--cache DIR`` keeps it there for the next run. Results: benchmarks/results/.

    python -m benchmarks.embed_throughput --dtypes fp32,bf16 --cache ~/.cache/fashion-bench   # CPU, full run
    python -m benchmarks.embed_throughput --dtype auto --cache ~/.cache/fashion-bench          # what auto picks
    python -m benchmarks.embed_throughput --tiny --images 4 --captions 16 --rounds 1 --name embed_tiny  # smoke
    python -m benchmarks.embed_throughput --device cuda --images 4096 --batch-size 128 --text-batch-size 256 \\
        --rounds 1 --peers plain,compile --name embed_gpu
"""

from __future__ import annotations

import argparse
import gc
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from benchmarks.common import benchmark_model, temporary_folder, write_result
from fashion_retrieval.bench.peers import CompiledPeer, onnx_peers
from fashion_retrieval.bench.throughput import (
    Workload,
    ceiling_captions,
    ceiling_images,
    max_difference,
    plain_captions,
    plain_images,
    plain_twin,
    sync,
    upper_bound,
    warm_up,
)
from fashion_retrieval.model.encoder import FashionEmbeddingModel
from fashion_retrieval.model.features import image_features, text_features

PEERS = ("plain", "compile", "onnx", "loop")


def loop_images_per_second(encoder: FashionEmbeddingModel, paths: list[str]) -> float:
    """The original-style loop: one image at a time, open, processor, forward of the plain model."""
    start = time.perf_counter()
    with torch.inference_mode():
        for path in paths:
            inputs = encoder.processor(images=Image.open(path).convert("RGB"), return_tensors="pt")
            image_features(encoder.model, inputs["pixel_values"].to(encoder.device, dtype=encoder.dtype))
    sync(encoder.device)
    return len(paths) / (time.perf_counter() - start)


def loop_captions_per_second(encoder: FashionEmbeddingModel, captions: list[str]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for caption in captions:
            t = encoder.processor(text=caption, return_tensors="pt", truncation=True)
            text_features(encoder.model, t["input_ids"].to(encoder.device), t["attention_mask"].to(encoder.device))
    sync(encoder.device)
    return len(captions) / (time.perf_counter() - start)


def inductor_caches_in(folder: Path) -> None:
    """torch.compile's caches in the benchmark's work folder: removed at the end, and compile times are cold.
    The environment variable is set, not defaulted (importing transformers already pointed it at inductor's
    default folder); the precompiled headers' folder is fixed at import, so it is moved by hand."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    try:
        import torch._inductor.codecache as codecache

        codecache._HEADER_DIR = str(folder / "precompiled_headers")
        codecache._HEADER_LOCK_DIR = str(folder / "precompiled_headers" / "locks")
    except (ImportError, AttributeError):  # another torch release: its headers stay in its default folder
        pass


class DtypeRun:
    """One dtype's encoder, its plain twin and compiled peer, and their ready inputs."""

    def __init__(self, requested: str, base, args, workload: Workload, peers: set[str]) -> None:
        self.requested = requested
        self.encoder = FashionEmbeddingModel(None, base, device=args.device, dtype=requested)
        self.name = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[self.encoder.precision.name]
        self.plain = plain_twin(self.encoder, None, str(base)) if peers & {"plain", "compile", "loop"} else None
        self.pixels, self.captions = workload.image_inputs(self.encoder), workload.caption_inputs(self.encoder)
        warm_up(self.encoder, workload)
        if self.plain is not None:
            warm_up(self.plain, workload)
        self.compiled = None
        if "compile" in peers:
            self.compiled = CompiledPeer(self.plain.model)
            self.compiled.prepare(self.pixels, self.captions)


def one_round(run: DtypeRun, workload: Workload, round_: int, peers: set[str], args, check: dict) -> dict:
    encoder, row, vectors = run.encoder, {}, {}

    def ceilings() -> None:
        row["ceiling_images"], vectors["images"] = ceiling_images(encoder, run.pixels, args.ceiling_passes)
        row["ceiling_captions"], vectors["captions"] = ceiling_captions(encoder, run.captions, args.ceiling_passes)

    # the pipeline and its ceiling back to back, in alternating order (drift of a shared machine cancels)
    if round_ % 2:
        ceilings()
    piped = workload.pipeline(encoder)
    if not round_ % 2:
        ceilings()
    if not check:  # once: the ceiling ran the pipeline's rows in its batches, so its vectors are the pipeline's
        check["images"] = max_difference(vectors["images"], piped["image_vectors"])
        check["captions"] = max_difference(vectors["captions"], piped["text_vectors"])
    row |= {"pipeline_images": piped["images"], "pipeline_captions": piped["captions"]}
    row["stage_seconds"] = piped["stage_seconds"]
    if "caption_stage_seconds" in piped:
        row["caption_stage_seconds"] = piped["caption_stage_seconds"]
    if "plain" in peers:
        row["plain_images"] = plain_images(run.plain.model, run.pixels)[0]
        row["plain_captions"] = plain_captions(run.plain.model, run.captions)[0]
    if run.compiled is not None:
        rate = run.compiled.images_per_second(run.pixels)
        if rate is not None:
            row["compile_images"] = rate
        rate = run.compiled.captions_per_second(run.captions)
        if rate is not None:
            row["compile_captions"] = rate
    if "loop" in peers:
        loop_images = args.loop_items or min(workload.images, 16)
        row["loop_images"] = loop_images_per_second(run.plain, workload.paths[:loop_images])
        row["loop_captions"] = loop_captions_per_second(run.plain, workload.texts[: min(workload.captions, 64)])
    return {k: v if isinstance(v, dict) else round(v, 3) for k, v in row.items()}


def median(rounds: list[dict], key: str) -> float | None:
    values = [r[key] for r in rounds if r.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def ratio(a_rounds: list[dict], a: str, b_rounds: list[dict], b: str) -> float | None:
    values = [x[a] / y[b] for x, y in zip(a_rounds, b_rounds, strict=True) if x.get(a) and y.get(b)]
    return round(statistics.median(values), 3) if values else None


def summarise(run: DtypeRun, rounds: list[dict], check: dict) -> dict:
    figures = {}
    for kind in ("images", "captions"):
        figures[f"{kind}_per_second"] = {
            name: median(rounds, f"{name}_{kind}") for name in ("pipeline", "ceiling", "plain", "compile", "loop")
        }
        figures[f"{kind}_per_second"] = {k: v for k, v in figures[f"{kind}_per_second"].items() if v is not None}
    ratios = {}
    for kind in ("images", "captions"):
        for peer in ("ceiling", "plain", "compile", "loop"):
            value = ratio(rounds, f"pipeline_{kind}", rounds, f"{peer}_{kind}")
            if value is not None:
                ratios[f"pipeline_vs_{peer}_{kind}"] = value
    held = {
        kind: sum(upper_bound(r[f"pipeline_{kind}"], r[f"ceiling_{kind}"]) for r in rounds)
        for kind in ("images", "captions")
    }
    return {
        "precision": run.encoder.precision.to_dict(),  # the dtype actually used, and why
        "packed_linear_layers": run.encoder.packed_layers,
        "fast_paths": run.encoder.fast_paths(),
        **figures,
        "ratios": ratios,
        # rounds (of all) in which the ceiling was >= the pipeline (within 3% timing noise)
        "upper_bound_held": {k: f"{v}/{len(rounds)}" for k, v in held.items()},
        # the ceiling ran the pipeline's own rows and batches: the same vectors
        "ceiling_vs_pipeline_max_difference": {k: check[k] for k in ("images", "captions")},
        **({"torch_compile": run.compiled.describe()} if run.compiled is not None else {}),
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48, help="catalogue rows embedded for images/s")
    parser.add_argument(
        "--captions",
        type=int,
        default=None,
        help="catalogue rows embedded for captions/s (default: the same run as --images; a different number "
        "runs the pipeline a second time, over that many rows, images included)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="images per forward (default: per device)")
    parser.add_argument("--text-batch-size", type=int, default=None, help="captions per forward (per device)")
    parser.add_argument("--workers", type=int, default=None, help="decoding workers (default: the pipeline's)")
    parser.add_argument("--loop-items", type=int, default=None, help="images for the one-at-a-time loop")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ceiling-passes", type=int, default=2, help="the ceiling is the fastest of these passes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto, fp32 or bf16 (fp16 on GPUs)")
    parser.add_argument("--dtypes", default=None, help="several in one run, e.g. fp32,bf16 (replaces --dtype)")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)}")
    parser.add_argument("--tiny", action="store_true", help="a tiny random BLIP (checks the harness, not speed)")
    parser.add_argument("--cache", default=None, help="keep the BLIP-base-sized model in this folder and reuse it")
    parser.add_argument("--name", default=None, help="result file (default: embed_throughput_<device>[_tiny])")
    args = parser.parse_args()
    peers = {p for p in args.peers.split(",") if p}
    if peers - set(PEERS):
        parser.error(f"--peers: unknown {', '.join(sorted(peers - set(PEERS)))}; choose from {', '.join(PEERS)}")
    dtypes = [d.strip() for d in (args.dtypes or args.dtype).split(",") if d.strip()]
    with benchmark_model(args.cache, tiny=args.tiny) as (base, described), temporary_folder("bench-embed-") as work:
        device_type = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu").type
        if args.device not in ("auto", "cpu"):
            device_type = torch.device(args.device).type
        workload = Workload.create(
            work,
            device_type,
            images=args.images,
            captions=args.captions,
            batch_size=args.batch_size,
            text_batch_size=args.text_batch_size,
            workers=args.workers,
        )
        if "compile" in peers:
            inductor_caches_in(work / "torchinductor")
        runs = [DtypeRun(d, base, args, workload, peers) for d in dtypes]
        for n, run in enumerate(runs):  # e.g. --dtypes auto,fp32 where auto chose fp32: keep both apart
            if any(run.name == other.name for other in runs[:n]):
                run.name = f"{run.name}_{run.requested}"
        onnx, export = [], {}
        if "onnx" in peers:
            # exported from the plain fp32 model (PyTorch's own Linear layers, not the packed ones)
            fp32 = next((run.plain for run in runs if run.name == "fp32" and run.plain is not None), None)
            fp32 = fp32 or FashionEmbeddingModel(None, base, device="cpu", dtype="fp32", fast_cpu=False)
            pixels = workload.pixel_batches(fp32.preprocess)  # float32, the pipeline's batches
            onnx, export = onnx_peers(fp32.model, pixels, work, torch.get_num_threads())
            del fp32
        rounds: dict[str, list[dict]] = {run.name: [] for run in runs}
        onnx_rounds: dict[str, list[float]] = {peer.runtime: [] for peer in onnx}
        checks: dict[str, dict] = {run.name: {} for run in runs}
        for round_ in range(args.rounds):
            for run in runs if round_ % 2 == 0 else runs[::-1]:
                rounds[run.name].append(one_round(run, workload, round_, peers, args, checks[run.name]))
                print(run.name, rounds[run.name][-1], flush=True)
            for peer in onnx:
                rate = peer.images_per_second(pixels)
                if rate is not None:
                    onnx_rounds[peer.runtime].append(round(rate, 3))
            gc.collect()
        result = {
            "command": "python -m benchmarks.embed_throughput " + shlex.join(sys.argv[1:]),
            "model": described,
            "device": str(runs[0].encoder.device),
            "images": workload.images,
            "captions": workload.captions,
            "batch_size": workload.batch_size,
            "text_batch_size": workload.text_batch_size,
            "workers": workload.workers,
            "rounds": args.rounds,
            "peers": sorted(peers),
            "dtypes": {run.name: summarise(run, rounds[run.name], checks[run.name]) for run in runs},
        }
        if "fp32" in rounds and "bf16" in rounds:
            result["bf16_vs_fp32"] = {
                f"{what}_{kind}": ratio(rounds["bf16"], f"{what}_{kind}", rounds["fp32"], f"{what}_{kind}")
                for what in ("pipeline", "ceiling", "plain", "compile")
                for kind in ("images", "captions")
                if ratio(rounds["bf16"], f"{what}_{kind}", rounds["fp32"], f"{what}_{kind}") is not None
            }
        if "onnx" in peers:
            first = runs[0].name
            result["onnx_vision"] = {
                "export": export,
                "inputs": "the pipeline's image batches (float32); vectors compared with the fp32 plain model's",
                "pipeline_vs_this": f"the {first} pipeline's images/s over this runtime's",
                "runtimes": [
                    {
                        **peer.describe(),
                        **(
                            {
                                "images_per_second": round(statistics.median(onnx_rounds[peer.runtime]), 3),
                                "pipeline_vs_this": round(
                                    statistics.median(
                                        r["pipeline_images"] / o
                                        for r, o in zip(rounds[first], onnx_rounds[peer.runtime], strict=True)
                                    ),
                                    3,
                                ),
                                "rounds": onnx_rounds[peer.runtime],
                            }
                            if onnx_rounds[peer.runtime]
                            else {}
                        ),
                    }
                    for peer in onnx
                ],
            }
        result["note"] = (
            "medians over interleaved rounds. pipeline: embed_catalog's own images/s and captions/s. ceiling: the "
            "encoder's bare forward on the same rows in the same batches, fastest of --ceiling-passes passes (an "
            "upper bound of the pipeline: see "
            "upper_bound_held and ceiling_vs_pipeline_max_difference). plain: the model as transformers runs it; "
            "compile: torch.compile (inductor) of the plain model, compile time apart; onnx_vision: the vision "
            "tower exported to ONNX on ONNX Runtime and OpenVINO; loop: one item at a time through the processor "
            "and the plain model, as the original toolkit did."
        )
        name = args.name or f"embed_throughput_{device_type}" + ("_tiny" if args.tiny else "")
        write_result(name, result)


if __name__ == "__main__":
    main()
