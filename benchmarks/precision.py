"""fp32 against the lower precisions and the exported backends on the demo's trained model: do the rankings
survive? (bf16 by default where the CPU has native bf16 units, and int8 on OpenVINO / ONNX Runtime, each only if it
keeps the rankings).

Embeds the demo catalogue through the pipeline as each variant runs it (torch fp32, torch bf16, OpenVINO bf16,
OpenVINO int8 and ONNX Runtime int8, int8 calibrated on 300 catalogue items) and compares each with torch fp32 on
the held-out captions: Recall@1/5/10 and MRR (text->image), attribute precision@10 (garment, colour), how much
the two top-10 lists of each query overlap, and the image vectors' cosines to fp32's. The quality gate of int8
(issue: held-out Recall@10 and attribute precision@10 within 0.01 of fp32) is reported per variant, with the
precision each variant actually ran in (a variant whose parity probe failed falls back, and says so).

    python -m benchmarks.precision [--workdir demo_workdir]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import write_result
from fashion_retrieval.config import EmbedConfig, ModelConfig
from fashion_retrieval.embeddings import load_embeddings
from fashion_retrieval.evaluate.evaluate import EvalConfig, evaluate_embeddings
from fashion_retrieval.pipeline.embed import embed_catalog
from fashion_retrieval.ranking import top_k_indices

# name -> (backend, dtype, calibration items)
VARIANTS = {
    "torch_fp32": ("torch", "fp32", 0),
    "torch_bf16": ("torch", "bf16", 0),
    "openvino_bf16": ("openvino", "bf16", 0),
    "openvino_int8": ("openvino", "int8", 300),
    "onnxruntime_int8": ("onnxruntime", "int8", 300),
}
KEY = "attribute_precision@10[garment,color]"
GATE = 0.01  # int8's quality gate: held-out Recall@10 and attribute precision@10 within this of fp32


def embed_variant(work: Path, checkpoint: Path, out: Path, backend: str, dtype: str, calibrate: int):
    model = ModelConfig(
        str(work / "base"), str(checkpoint), device="cpu", dtype=dtype, backend=backend, calibrate=calibrate
    )
    catalog, heldout = work / "catalog" / "labels_front.csv", work / "heldout_ids.txt"
    embed_catalog(EmbedConfig(str(catalog), model, out=str(out), workers=0), progress=False)
    report = evaluate_embeddings(
        EvalConfig(str(out), query_ids=str(heldout), precision_attributes=("garment", "color"))
    )
    data = load_embeddings(out)
    rows = np.flatnonzero(data.metadata["id"].isin(set(heldout.read_text().split())).to_numpy())
    figures = {
        **{k: report["text_to_image"][k] for k in ("recall@1", "recall@5", "recall@10", "mrr")},
        KEY: report[KEY],
    }
    return figures, (data.text_embeddings[rows], data.image_embeddings), data.manifest["precision"]


def compare(reference: dict, figures: dict, vectors, reference_vectors) -> dict:
    top = top_k_indices(vectors[0] @ vectors[1].T, 10)
    top32 = top_k_indices(reference_vectors[0] @ reference_vectors[1].T, 10)
    overlap = [len(set(a) & set(b)) / 10 for a, b in zip(top32, top, strict=True)]
    cosines = np.sum(reference_vectors[1] * vectors[1], axis=1)
    differences = {k: round(figures[k] - reference[k], 4) for k in reference}
    return {
        "differences_minus_fp32": differences,
        "quality_gate_passed": abs(differences["recall@10"]) <= GATE and abs(differences[KEY]) <= GATE,
        "top10_overlap": {"mean": round(float(np.mean(overlap)), 4), "min": round(float(np.min(overlap)), 2)},
        "image_vector_cosine_to_fp32": {"min": round(float(cosines.min()), 5), "mean": round(float(cosines.mean()), 5)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="demo_workdir", help="a demo workdir (built if it has no model yet)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--name", default="precision_demo")
    args = parser.parse_args()
    work = Path(args.workdir)
    checkpoint = work / "training" / "model_weights" / "best_model.pth"
    if not checkpoint.is_file():
        from fashion_retrieval.demo import DemoConfig, run_demo

        run_demo(DemoConfig(workdir=str(work), serve=False), progress=True)
    out = Path(tempfile.mkdtemp(prefix="bench-precision-"))
    os.environ["XDG_CACHE_HOME"] = str(out / "cache")  # exports made here are removed with it
    results = {}
    for name in ["torch_fp32", *[v for v in args.variants.split(",") if v != "torch_fp32"]]:
        figures, vectors, record = embed_variant(work, checkpoint, out / name, *VARIANTS[name])
        results[name] = {"figures": figures, "vectors": vectors, "precision_record": record}
        print(name, figures, record.get("backend", "torch"), record["dtype"], flush=True)
    reference = results["torch_fp32"]
    summary = {}
    for name, result in results.items():
        summary[name] = {
            "ran_as": {k: result["precision_record"].get(k) for k in ("backend", "dtype", "reason")},
            **result["figures"],
        }
        if name != "torch_fp32":
            summary[name] |= compare(reference["figures"], result["figures"], result["vectors"], reference["vectors"])
    from fashion_retrieval.model.loading import load_model

    os.environ.pop("FASHION_RETRIEVAL_DTYPE", None)
    auto = load_model(work / "base", checkpoint, device="cpu").precision.to_dict()
    write_result(
        args.name,
        {
            "command": "python -m benchmarks.precision --workdir " + str(work),
            "model": "the demo's trained tiny BLIP (64 px), held-out captions as queries",
            "queries": int(len(reference["vectors"][0])),
            "quality_gate": f"held-out Recall@10 and {KEY} within {GATE} of torch fp32",
            "variants": summary,
            "automatic_choice": auto,
        },
    )


if __name__ == "__main__":
    main()
