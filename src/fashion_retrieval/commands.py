"""Subcommands beyond ``inspect``: each parses options into a config and makes one library call."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fashion_retrieval.cli import AlphaOpt, JsonOpt, app
from fashion_retrieval.cli_common import print_json, user_errors
from fashion_retrieval.config import EmbedConfig, ModelConfig, default_workers

CheckpointOpt = Annotated[
    str | None, typer.Option("--checkpoint", help="Fine-tuned weights: best_model.pth, a PEFT adapter, a state dict.")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1 ...")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (fp32 on CPU, bf16/fp16 on GPU), fp32, fp16, bf16.")]


@app.command()
@user_errors
def embed(
    catalog: Annotated[str, typer.Argument(help="labels_front.csv, any CSV/Parquet/JSONL, or an image folder.")],
    base: Annotated[str, typer.Option("--base", help="BLIP base folder (model config + processor).")],
    checkpoint: CheckpointOpt = None,
    lora_alpha: AlphaOpt = 32.0,
    images_dir: Annotated[
        str | None,
        typer.Option(help="Folder the catalogue's paths are relative to (default: selected_images/ beside it)."),
    ] = None,
    out: Annotated[str, typer.Option(help="Output folder.")] = "embeddings_output",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    workers: Annotated[
        int, typer.Option(help="Image decoding processes (0: in the main process).")
    ] = default_workers(),
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    on_error: Annotated[
        str,
        typer.Option(
            help="Bad images: skip (listed in failures.jsonl), placeholder "
            "(black image, flagged), fail (stop at the first)."
        ),
    ] = "skip",
    limit: Annotated[int | None, typer.Option(help="Only the first N items (a quick look).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a folder made from another model or catalogue.")] = False,
    id_col: Annotated[str, typer.Option(help="Column with the item id.")] = "image_id",
    image_col: Annotated[str, typer.Option(help="Column with the image path.")] = "path",
    text_col: Annotated[str, typer.Option(help="Column with the caption ('' for none).")] = "caption",
    shard_size: Annotated[int, typer.Option(help="Items per resumable shard.")] = 1024,
    as_json: JsonOpt = False,
) -> None:
    """Embed every image and caption of a catalogue into an embeddings folder (resumable: re-run to continue)."""
    from fashion_retrieval.pipeline.embed import embed_catalog

    config = EmbedConfig(
        catalog=catalog,
        model=ModelConfig(base, checkpoint, lora_alpha, device, dtype),
        out=out,
        images_dir=images_dir,
        id_col=id_col,
        image_col=image_col,
        text_col=text_col or None,
        batch_size=batch_size,
        workers=workers,
        on_error=on_error,
        limit=limit,
        overwrite=overwrite,
        shard_size=shard_size,
    )
    summary = embed_catalog(config, progress=not as_json)
    if as_json:
        print_json(summary)
        return
    if summary["status"] == "already complete":
        typer.echo(
            f"{out}: already complete ({summary['embedded']} embedded, {summary['failed']} failed); nothing to do"
        )
        return
    typer.echo(
        f"embedded {summary['embedded']} of {summary['items']} items, {summary['failed']} failed"
        + (f", {summary['placeholders']} placeholders" if summary["placeholders"] else "")
        + f" in {summary['seconds']:.1f} s -> {out}"
    )
    if summary["images_per_second"]:
        typer.echo(
            f"  images/s {summary['images_per_second']}, captions/s {summary['captions_per_second']}, "
            f"stage seconds {summary['stage_seconds']}"
        )
    if summary["failed"]:
        typer.echo(f"  failures listed in {Path(out) / 'failures.jsonl'}")
