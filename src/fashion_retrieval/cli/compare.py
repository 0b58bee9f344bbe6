"""`compare`: candidate models side by side on your own catalogue (quality, speed, vector size)."""

from __future__ import annotations

from typing import Annotated

import typer

from fashion_retrieval.cli.common import (
    AlphaOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    app,
    csv_option,
    print_json,
    user_errors,
)
from fashion_retrieval.config import ModelConfig
from fashion_retrieval.errors import FashionRetrievalError

NO_CHECKPOINT = "-"


def model_configs(
    bases: list[str], checkpoints: list[str], lora_alpha: float, device: str, dtype: str
) -> tuple[ModelConfig, ...]:
    """``--base`` and ``--checkpoint`` pair by position (``-`` for a base without one); no checkpoint at all is fine."""
    if checkpoints and len(checkpoints) != len(bases):
        raise FashionRetrievalError(
            f"{len(bases)} --base and {len(checkpoints)} --checkpoint: give one --checkpoint per --base "
            f"('{NO_CHECKPOINT}' for a base used as it is), or none"
        )
    pairs = zip(bases, checkpoints or [NO_CHECKPOINT] * len(bases), strict=True)
    return tuple(
        ModelConfig(base, None if ckpt == NO_CHECKPOINT else ckpt, lora_alpha, device, dtype) for base, ckpt in pairs
    )


# Long only by its option declarations (Typer reads them from the signature); the body is a few lines.
@app.command()
@user_errors
def compare(
    catalog: Annotated[str, typer.Argument(help="labels_front.csv, any CSV/Parquet/JSONL catalogue.")],
    base: Annotated[
        list[str],
        typer.Option(
            "--base",
            help="A candidate model folder (repeat: --base A --base B): BLIP, CLIP (FashionCLIP), SigLIP, "
            "Chinese-CLIP, or an open_clip checkpoint (Marqo-FashionSigLIP ...).",
        ),
    ],
    checkpoint: Annotated[
        list[str] | None,
        typer.Option(
            "--checkpoint",
            help=f"Fine-tuned weights for the --base in the same position ('{NO_CHECKPOINT}' for none).",
        ),
    ] = None,
    out: Annotated[str, typer.Option(help="Folder for every model's embeddings and results.")] = "compare_output",
    html_out: Annotated[str | None, typer.Option("--html", help="The page (default OUT/compare.html).")] = None,
    sample: Annotated[
        int, typer.Option(help="Catalogue items every model embeds (0: all); the same seeded sample for each.")
    ] = 1000,
    relevance: Annotated[str, typer.Option(help="pair, or attributes:field1,field2 (as eval).")] = "pair",
    protocol: Annotated[str, typer.Option(help="full, or marqo (Marqo's leaderboard protocol, as eval).")] = "full",
    precision_attributes: Annotated[
        str, typer.Option(help="Attributes for attribute precision@10, e.g. product_type,gender.")
    ] = "",
    compose: Annotated[bool, typer.Option("--compose/--no-compose", help="Also measure composed queries.")] = True,
    images_dir: Annotated[str | None, typer.Option(help="Folder the catalogue's paths are relative to.")] = None,
    workers: Annotated[int, typer.Option(help="Image decoding processes while embedding.")] = 2,
    lora_alpha: AlphaOpt = 32.0,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Compare models on your catalogue: each embeds the same sample, then Recall@1/10, MRR, attribute
    precision@10, composed Recall@10, images/s and captions/s here, vector size and index memory, in one table
    (OUT/compare.json) and one self-contained page. Resumable: run it again to continue or to add a model."""
    from fashion_retrieval.evaluate.compare import CompareConfig, compare_models

    config = CompareConfig(
        catalog=catalog,
        models=model_configs(base, checkpoint or [], lora_alpha, device, dtype),
        out=out,
        html=html_out,
        sample=sample or None,
        relevance=relevance,
        protocol=protocol,
        precision_attributes=csv_option(precision_attributes),
        compose=compose,
        images_dir=images_dir,
        workers=workers,
    )
    result = compare_models(config, progress=not as_json)
    if as_json:
        print_json(result)
        return
    typer.echo(render_table(result))
    typer.echo(f"page: {result['html']}")


def render_table(result: dict) -> str:
    from fashion_retrieval.evaluate.compare import METRICS, SPEEDS

    def show(value) -> str:
        return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    header = ["model", *(label for _, label in METRICS + SPEEDS), "dims"]
    rows = [
        [m["label"] + f" ({m['family']})"]
        + [show(m["metrics"].get(k)) for k, _ in METRICS]
        + [show(m["speed"].get(k)) for k, _ in SPEEDS]
        + [str(m["dim"])]
        for m in result["models"]
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in [header, *rows])
