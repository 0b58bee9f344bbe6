"""Embedding throughput per model family at real size: ``embed`` against the family's plain transformers forward.

Random weights at the real shapes (the compute is the weights' shapes, not their values): CLIP ViT-B/16 at 224 px
(FashionCLIP 2.0's shapes), SigLIP base at 224 px, BLIP base at 384 px; a generated catalogue of 750x1101 JPEGs
with DeepFashion-length captions (``bench.throughput.Workload``). Per family, in one run and interleaved over
``--rounds``:

- ``embed``: ``embed_catalog`` on the catalogue, as ``fashion-retrieval embed`` runs it (decoding included), at
  torch fp32, at torch's automatic dtype (bf16 on CPUs with bf16 units), and with ``--backend auto`` (the fastest
  of torch / OpenVINO / ONNX Runtime whose parity check passes: its export and timing happen once, before the
  rounds, and are not counted);
- ``plain``: the family's own forward as transformers runs it (``get_image_features`` / ``get_text_features``;
  BLIP's vision_model -> vision_proj and text_encoder -> text_proj) on the same rows, already decoded and
  tokenised in the same batches (a forward-only peer: it pays no decoding), in fp32 and in bf16.

Every encoder and every plain model runs one image batch and one caption batch before it is timed: the first calls
pick kernels and check the fast paths (a one-off cost a catalogue run amortises, which a 32-row round would not).

Ratios are medians of per-round ratios. The models live in a temporary folder removed at the end.

    python -m benchmarks.family_throughput                                   # all three families
    python -m benchmarks.family_throughput --families clip --images 8 --rounds 1 --name family_smoke
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import build_base_sized_blip, temporary_folder, write_result
from fashion_retrieval.bench.throughput import Workload, timed_rate, warm_up
from fashion_retrieval.model.encoder import FashionEmbeddingModel
from fashion_retrieval.model.loading import load_model
from fashion_retrieval.model.tiny_families import build_tiny

# Real shapes: ViT-B/16 vision towers; CLIP's text tower is 512 wide with 8 heads, SigLIP's 768 with 12.
REAL_SIZE = {
    "clip": {
        "image_size": 224,
        "hidden": 768,
        "layers": 12,
        "intermediate": 3072,
        "heads": 12,
        "embed_dim": 512,
        "text": {"hidden": 512, "layers": 12, "intermediate": 2048, "heads": 8},
    },
    "siglip": {"image_size": 224, "hidden": 768, "layers": 12, "intermediate": 3072, "heads": 12},
}
DESCRIBED = {
    "clip": "CLIPModel ViT-B/16 at 224 px (FashionCLIP 2.0's shapes), random weights",
    "siglip": "SiglipModel base patch16 at 224 px, random weights",
    "blip": "BlipForImageTextRetrieval base at 384 px, random weights",
}


def build(family: str, folder: Path, captions: list[str]) -> Path:
    if family == "blip":
        return build_base_sized_blip(folder)
    return build_tiny(family, folder, captions, patch_size=16, **REAL_SIZE[family])


def plain_rates(family: str, base: Path, dtype: str, workload: Workload, encoder: FashionEmbeddingModel) -> dict:
    """The family's own forward on the plainly loaded model (no packed layers, no fast paths) in ``dtype``."""
    loaded = load_model(base, device="cpu", dtype=dtype)
    model, features = loaded.model, loaded.family
    pixels = [b.to(loaded.dtype) for b in workload.pixel_batches(encoder.preprocess)]
    batches = workload.caption_inputs(encoder)
    with torch.inference_mode():  # one-off costs (allocations, kernel choice) out of the figures, as for embed's
        features.image_features(model, pixels[0])
        features.text_features(model, batches[0].input_ids, batches[0].attention_mask)
    images, _ = timed_rate(
        torch.device("cpu"), lambda x: features.image_features(model, x), pixels, sum(len(b) for b in pixels)
    )
    captions, _ = timed_rate(
        torch.device("cpu"),
        lambda b: features.text_features(model, b.input_ids, b.attention_mask),
        batches,
        sum(len(b.rows) for b in batches),
    )
    del loaded
    gc.collect()
    return {"images": round(images, 3), "captions": round(captions, 3)}


def embed_rates(encoder: FashionEmbeddingModel, workload: Workload) -> dict:
    piped = workload.pipeline(encoder)
    return {"images": piped["images"], "captions": piped["captions"]}


def one_family(family: str, folder: Path, workload: Workload, rounds: int) -> dict:
    base = build(family, folder / family, workload.texts)
    encoders = {
        "embed_fp32": FashionEmbeddingModel(None, base, "cpu", dtype="fp32"),
        "embed_auto_dtype": FashionEmbeddingModel(None, base, "cpu", dtype="auto"),
        "embed_backend_auto": FashionEmbeddingModel(None, base, "cpu", backend="auto"),
    }
    for encoder in encoders.values():  # first calls check the fast paths and pick kernels: not a throughput
        warm_up(encoder, workload)
    rows = []
    for round_ in range(rounds):
        row: dict = {}
        names = list(encoders) if round_ % 2 == 0 else list(reversed(encoders))
        for name in names:
            row[name] = embed_rates(encoders[name], workload)
        for dtype in ("fp32", "bf16") if round_ % 2 == 0 else ("bf16", "fp32"):
            row[f"plain_{dtype}"] = plain_rates(family, base, dtype, workload, encoders["embed_fp32"])
        rows.append(row)
        print(family, round_, row, flush=True)
    return summarise(family, encoders, rows)


def summarise(family: str, encoders: dict, rows: list[dict]) -> dict:
    def med(name: str, kind: str) -> float:
        return round(statistics.median(r[name][kind] for r in rows), 3)

    def ratio(a: str, b: str, kind: str) -> float:
        return round(statistics.median(r[a][kind] / r[b][kind] for r in rows), 3)

    names = [*encoders, "plain_fp32", "plain_bf16"]
    return {
        "model": DESCRIBED[family],
        "images_per_second": {n: med(n, "images") for n in names},
        "captions_per_second": {n: med(n, "captions") for n in names},
        "ratios": {
            f"{a}_vs_{b}_{kind}": ratio(a, b, kind)
            for a, b in (
                ("embed_fp32", "plain_fp32"),
                ("embed_auto_dtype", "plain_bf16"),
                ("embed_auto_dtype", "plain_fp32"),
                ("embed_backend_auto", "plain_fp32"),
                ("embed_backend_auto", "plain_bf16"),
            )
            for kind in ("images", "captions")
        },
        "precision": {n: e.precision.to_dict() for n, e in encoders.items()},
        "rounds": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="clip,siglip,blip")
    parser.add_argument("--images", type=int, default=32, help="catalogue rows embedded (images and captions)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--name", default="family_throughput_cpu")
    args = parser.parse_args()
    results = {}
    with temporary_folder("family-bench") as folder:
        os.environ["XDG_CACHE_HOME"] = str(folder / "cache")  # backend exports and decisions: removed with it
        workload = Workload.create(folder / "work", "cpu", images=args.images)
        for family in args.families.split(","):
            with tempfile.TemporaryDirectory(dir=folder) as models:
                results[family] = one_family(family, Path(models), workload, args.rounds)
            gc.collect()
    write_result(
        args.name,
        {
            "command": f"python -m benchmarks.family_throughput {' '.join(sys.argv[1:])}",
            "images": args.images,
            "rounds": args.rounds,
            "families": results,
        },
    )


if __name__ == "__main__":
    main()
