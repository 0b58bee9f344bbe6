"""`train`, `eval` and `report`: fine-tuning and measuring retrieval quality."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from fashion_retrieval.cli.common import CheckpointOpt, DeviceOpt, JsonOpt, app, csv_option, print_json, user_errors
from fashion_retrieval.errors import FashionRetrievalError

if TYPE_CHECKING:
    from fashion_retrieval.evaluate.evaluate import EvalConfig


# Long only by its option declarations (Typer reads them from the signature); the body passes the options on.
@app.command()
@user_errors
def train(
    catalog: Annotated[str, typer.Argument(help="labels_front.csv (DeepFashion layout) or a mapped table.")],
    base: Annotated[str, typer.Option("--base", help="Model folder to fine-tune (BLIP, CLIP, SigLIP ...).")],
    out: Annotated[str, typer.Option(help="Output folder (model_weights/best_model.pth, adapter/, ...).")],
    checkpoint: CheckpointOpt = None,
    images_dir: Annotated[str | None, typer.Option(help="Folder the catalogue's paths are relative to.")] = None,
    epochs: Annotated[int, typer.Option(help="Epochs.")] = 5,
    batch_size: Annotated[int, typer.Option(help="Pairs per step (in-batch negatives).")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate (warm-up, then cosine decay).")] = 1e-4,
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    lora_alpha: Annotated[float, typer.Option(help="LoRA alpha.")] = 32.0,
    targets: Annotated[
        str, typer.Option(help="Modules LoRA adapts (default: the family's: BLIP query,value,vision_proj,text_proj).")
    ] = "",
    val_fraction: Annotated[float, typer.Option(help="Share of items held out for validation.")] = 0.1,
    device: DeviceOpt = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bf16 autocast on CUDA), fp32 or bf16.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed (split, init, shuffles).")] = 0,
    grad_accum: Annotated[int, typer.Option(help="Batches per optimizer step.")] = 1,
    full: Annotated[bool, typer.Option(help="Fine-tune every weight instead of LoRA.")] = False,
    itm: Annotated[bool, typer.Option(help="Add BLIP's image-text matching loss (hard negatives).")] = False,
    max_seconds: Annotated[float | None, typer.Option(help="Time budget; the schedule fits it.")] = None,
    match_attributes: Annotated[
        str,
        typer.Option(
            help="Soft targets: items equal on these attributes count as positives, e.g. product_type,gender."
        ),
    ] = "",
    limit: Annotated[int | None, typer.Option(help="Only the first N items.")] = None,
    on_error: Annotated[
        str, typer.Option(help="Unreadable images: skip (listed in OUT/failures.jsonl) or fail at the first.")
    ] = "skip",
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune BLIP retrieval with LoRA (or fully); keeps the best epoch in the original checkpoint format.

    Every image is decoded once before training; unreadable ones are left out and listed, as `embed` does."""
    from fashion_retrieval.train.loop import TrainConfig
    from fashion_retrieval.train.loop import train as run_training

    config = TrainConfig(
        catalog=catalog,
        base=base,
        out=out,
        checkpoint=checkpoint,
        images_dir=images_dir,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        targets=csv_option(targets) or None,
        val_fraction=val_fraction,
        device=device,
        dtype=dtype,
        seed=seed,
        grad_accum=grad_accum,
        full=full,
        itm=itm,
        max_seconds=max_seconds,
        match_attributes=csv_option(match_attributes),
        limit=limit,
        on_error=on_error,
    )
    summary = run_training(config, progress=not as_json)
    if as_json:
        print_json(summary)
    else:
        _print_training(summary)


def _print_training(summary: dict) -> None:
    typer.echo(
        f"best epoch {summary['best_epoch']} of {summary['epochs_run']}: "
        + ", ".join(f"{k} {v:.3f}" for k, v in summary["best"].items() if "recall@" in k)
    )
    typer.echo(f"checkpoint: {summary['checkpoint']}")
    if summary["failed_images"]:
        typer.echo(f"{summary['failed_images']} unreadable images left out: {summary['out']}/failures.jsonl")


@app.command("eval")
@user_errors
def eval_command(
    embeddings: Annotated[str, typer.Argument(help="An embeddings folder written by `embed`.")],
    ks: Annotated[str, typer.Option(help="Cut-offs for Recall@K.")] = "1,5,10",
    relevance: Annotated[
        str, typer.Option(help="pair (each caption's own image) or attributes:gender,product_type.")
    ] = "pair",
    protocol: Annotated[
        str,
        typer.Option(
            help="full (every caption) or marqo (sampled captions against the whole "
            "gallery, as the public fashion leaderboard)."
        ),
    ] = "full",
    queries: Annotated[int | None, typer.Option(help="Sample at most N queries (compose: reference items).")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    query_ids: Annotated[str | None, typer.Option(help="File of ids (one per line) to use as queries.")] = None,
    task: Annotated[
        str,
        typer.Option(
            help="retrieval (Recall@K of captions and images) or compose (composed, negative and "
            "feedback queries; needs the model: --base/--checkpoint, default the one the folder records)."
        ),
    ] = "retrieval",
    base: Annotated[str | None, typer.Option("--base", help="compose: the model folder (default: recorded).")] = None,
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = "auto",
    mapping: Annotated[
        str | None,
        typer.Option(help="compose: JSON mapping attribute values to phrases (default: the synthetic catalogue's)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Retrieval quality: Recall@K, MRR and ranks for text->image and image->text with a per-attribute
    breakdown (--task retrieval), or composed/negative/feedback queries (--task compose)."""
    if task == "compose":
        _eval_compose(embeddings, base, checkpoint, device, query_ids, mapping, queries, seed, as_json)
        return
    if task != "retrieval":
        raise FashionRetrievalError(f"--task {task!r}: use retrieval or compose")
    from fashion_retrieval.evaluate.evaluate import EvalConfig, evaluate_embeddings

    config = EvalConfig(
        embeddings, tuple(int(k) for k in csv_option(ks)), relevance, protocol, queries, seed, query_ids
    )
    report = evaluate_embeddings(config)
    if as_json:
        print_json(report)
    else:
        _print_retrieval(report, config)


def _print_retrieval(report: dict, config: EvalConfig) -> None:
    """Both directions' metrics, then Recall@(largest K) per value of each attribute."""
    typer.echo(f"{report['queries']} queries against {report['gallery']} items ({config.relevance}, {config.protocol})")
    for direction in ("text_to_image", "image_to_text"):
        metrics = report[direction]
        typer.echo(f"  {direction:<14} " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    for attribute, values in report["breakdown_text_to_image"].items():
        k = max(config.ks)
        typer.echo(
            f"  recall@{k} by {attribute}: "
            + ", ".join(f"{v} {m[f'recall@{k}']:.2f} ({m['queries']})" for v, m in values.items())
        )


def _eval_compose(
    embeddings: str,
    base: str | None,
    checkpoint: str | None,
    device: str,
    query_ids: str | None,
    mapping: str | None,
    references: int | None,
    seed: int,
    as_json: bool,
) -> None:
    from fashion_retrieval.evaluate.compose import ComposeEvalConfig, evaluate_compose, format_compose_report

    config = ComposeEvalConfig(
        embeddings,
        base=base,
        checkpoint=checkpoint,
        device=device,
        query_ids=query_ids,
        mapping=mapping,
        references=references,
        seed=seed,
    )
    report = evaluate_compose(config)
    if as_json:
        print_json(report)
    else:
        typer.echo(format_compose_report(report))


@app.command()
@user_errors
def report(
    embeddings: Annotated[str, typer.Argument(help="An embeddings folder written by `embed`.")],
    out: Annotated[str, typer.Option(help="The HTML file (its PNGs go beside it).")] = "report.html",
    samples: Annotated[int, typer.Option(help="Sample queries shown with their top images.")] = 4,
    duplicate_threshold: Annotated[
        float, typer.Option(help="Cosine above which two images are near-duplicates.")
    ] = 0.98,
    as_json: JsonOpt = False,
) -> None:
    """Write one self-contained HTML page analysing an embeddings folder (instead of a notebook)."""
    from fashion_retrieval.evaluate.report import ReportConfig, write_report

    summary = write_report(ReportConfig(embeddings, out, samples, duplicate_threshold), progress=not as_json)
    if as_json:
        print_json(summary)
    else:
        typer.echo(
            f"wrote {summary['out']} ({summary['items']} items, modality gap {summary['modality_gap']:.3f}, "
            f"{summary['near_duplicate_pairs']} near-duplicate pairs)"
        )
