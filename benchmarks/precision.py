"""fp32 against bf16 on the demo's trained model: do the rankings survive? (issue: bf16 by default where the
CPU has native bf16 units, only if it keeps the rankings).

Embeds the demo catalogue through the pipeline in fp32 and in bf16 and compares, on the held-out captions:
Recall@1/5/10 and MRR (text->image), attribute precision@10 (garment, colour), and how much the two top-10
lists of each query overlap; also the automatic choice's parity probe on this model and CPU.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="demo_workdir", help="a demo workdir (built if it has no model yet)")
    parser.add_argument("--name", default="precision_demo")
    args = parser.parse_args()
    work = Path(args.workdir)
    checkpoint = work / "training" / "model_weights" / "best_model.pth"
    if not checkpoint.is_file():
        from fashion_retrieval.demo import DemoConfig, run_demo

        run_demo(DemoConfig(workdir=str(work), serve=False), progress=True)
    catalog, heldout = work / "catalog" / "labels_front.csv", work / "heldout_ids.txt"
    out = Path(tempfile.mkdtemp(prefix="bench-precision-"))
    reports, vectors, summaries = {}, {}, {}
    for dtype in ("fp32", "bf16"):
        model = ModelConfig(str(work / "base"), str(checkpoint), device="cpu", dtype=dtype)
        folder = out / dtype
        summaries[dtype] = embed_catalog(EmbedConfig(str(catalog), model, out=str(folder), workers=0), progress=False)
        config = EvalConfig(str(folder), query_ids=str(heldout), precision_attributes=("garment", "color"))
        reports[dtype] = evaluate_embeddings(config)
        data = load_embeddings(folder)
        rows = np.flatnonzero(data.metadata["id"].isin(set(heldout.read_text().split())).to_numpy())
        vectors[dtype] = (data.text_embeddings[rows], data.image_embeddings, data.manifest["precision"])
    top = {d: top_k_indices(t @ i.T, 10) for d, (t, i, _) in vectors.items()}
    overlap = [len(set(a) & set(b)) / 10 for a, b in zip(top["fp32"], top["bf16"], strict=True)]
    cosines = np.sum(vectors["fp32"][1] * vectors["bf16"][1], axis=1)
    key = "attribute_precision@10[garment,color]"
    figures = {
        d: {**{k: r["text_to_image"][k] for k in ("recall@1", "recall@5", "recall@10", "mrr")}, key: r[key]}
        for d, r in reports.items()
    }
    from fashion_retrieval.model.loading import load_model

    os.environ.pop("FASHION_RETRIEVAL_DTYPE", None)
    auto = load_model(work / "base", checkpoint, device="cpu").precision.to_dict()
    write_result(
        args.name,
        {
            "command": "python -m benchmarks.precision --workdir " + str(work),
            "model": "the demo's trained tiny BLIP (64 px), held-out captions as queries",
            "queries": int(len(overlap)),
            "fp32": figures["fp32"],
            "bf16": figures["bf16"],
            "differences_bf16_minus_fp32": {
                k: round(figures["bf16"][k] - figures["fp32"][k], 4) for k in figures["fp32"]
            },
            "top10_overlap": {"mean": round(float(np.mean(overlap)), 4), "min": round(float(np.min(overlap)), 2)},
            "image_vector_cosine_bf16_to_fp32": {
                "min": round(float(cosines.min()), 5),
                "mean": round(float(cosines.mean()), 5),
            },
            "precision_records": {d: v[2] for d, v in vectors.items()},
            "automatic_choice": auto,
        },
    )


if __name__ == "__main__":
    main()
