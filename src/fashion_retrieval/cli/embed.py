"""`embed`, `make-catalog` and `bench`: catalogues into embeddings folders, and how fast that runs here."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fashion_retrieval.cli.common import (
    AlphaOpt,
    BackendOpt,
    BaseOpt,
    CalibrateOpt,
    CheckpointOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    app,
    print_json,
    user_errors,
)
from fashion_retrieval.config import AUTO_BATCH, EmbedConfig, ModelConfig, default_workers


# Long only by its option declarations (Typer reads them from the signature); the body passes the options on.
@app.command()
@user_errors
def embed(
    catalog: Annotated[str, typer.Argument(help="labels_front.csv, any CSV/Parquet/JSONL, or an image folder.")],
    base: BaseOpt,
    checkpoint: CheckpointOpt = None,
    lora_alpha: AlphaOpt = 32.0,
    images_dir: Annotated[
        str | None,
        typer.Option(help="Folder the catalogue's paths are relative to (default: selected_images/ beside it)."),
    ] = None,
    out: Annotated[str, typer.Option(help="Output folder.")] = "embeddings_output",
    batch_size: Annotated[
        int | None,
        typer.Option(
            help=f"Images per forward pass (default: {AUTO_BATCH['cpu'][0]} on CPU, {AUTO_BATCH['cuda'][0]} on CUDA: "
            "what measured fastest)."
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Image decoding processes (0: in the main process).")
    ] = default_workers(),
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    backend: BackendOpt = "torch",
    calibrate: CalibrateOpt = 0,
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
    jpeg_draft: Annotated[
        bool,
        typer.Option(
            help="Decode JPEGs at least twice the model's input size at a reduced scale before resizing: about "
            "half the decoding time, not the exact pixels (demo: vectors at cosine 0.992 mean, 0.81 min, to exact; "
            "Recall@10 unchanged, attribute precision@10 -0.005)."
        ),
    ] = False,
    engine: Annotated[
        str,
        typer.Option(
            help="local: decoding workers + one model in this process. ray: Ray Data, decoding tasks on CPUs and "
            "a pool of encoder actors, on this machine or a cluster (pip install 'fashion-retrieval[ray]'); "
            "same output folder either way."
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="With --engine ray: the cluster to join (auto, HOST:6379 or ray://HOST:10001); "
            "default: start a local Ray instance sized to this machine."
        ),
    ] = None,
    actors: Annotated[
        int | None,
        typer.Option(
            help="With --engine ray: encoder actors, each loading the model once (default: one per GPU, else one)."
        ),
    ] = None,
    gpus_per_actor: Annotated[
        float, typer.Option(help="With --engine ray: GPUs per encoder actor (0: encode on CPUs).")
    ] = 0.0,
    cpus_per_actor: Annotated[
        float | None,
        typer.Option(
            help="With --engine ray: CPUs per encoder actor (default: 1 beside a GPU; on CPUs, its node's cores "
            "less one kept for decoding)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Embed every image and caption of a catalogue into an embeddings folder (resumable: re-run to continue)."""
    from fashion_retrieval.pipeline.embed import embed_catalog

    config = EmbedConfig(
        catalog=catalog,
        model=ModelConfig(base, checkpoint, lora_alpha, device, dtype, backend, calibrate),
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
        jpeg_draft=jpeg_draft,
        engine=engine,
        ray_address=ray_address,
        actors=actors,
        gpus_per_actor=gpus_per_actor,
        cpus_per_actor=cpus_per_actor,
    )
    summary = embed_catalog(config, progress=not as_json)
    if as_json:
        print_json(summary)
    else:
        _print_embed_summary(summary, out)


def _print_embed_summary(summary: dict, out: str) -> None:
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


@app.command("make-catalog")
@user_errors
def make_catalog_command(
    out: Annotated[str, typer.Argument(help="Folder for labels_front.csv and selected_images/.")],
    n: Annotated[int, typer.Option("--n", help="Number of items.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same catalogue).")] = 0,
    image_size: Annotated[int, typer.Option(help="Image side in pixels.")] = 128,
) -> None:
    """Draw a synthetic fashion catalogue in DeepFashion-MultiModal's layout."""
    from fashion_retrieval.data.synthetic import make_catalog

    typer.echo(f"wrote {make_catalog(out, n=n, seed=seed, image_size=image_size)}")


@app.command()
@user_errors
def bench(
    base: BaseOpt,
    checkpoint: CheckpointOpt = None,
    lora_alpha: AlphaOpt = 32.0,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    images: Annotated[
        int,
        typer.Option(
            help="Catalogue rows embedded through the pipeline for images/s: generated 750x1101 JPEGs with "
            "DeepFashion-length captions."
        ),
    ] = 16,
    captions: Annotated[
        int | None,
        typer.Option(
            help="Rows embedded for captions/s (default: the same run as --images; another number runs the "
            "pipeline again over that many rows, images included)."
        ),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per forward (default: per device).")] = None,
    plain: Annotated[
        bool, typer.Option("--plain", help="Also time the model as transformers runs it (loads a second copy).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """How fast your model embeds here: the pipeline (as `embed` runs) against its ceiling, the bare forward on
    the same rows in the same batches; generated data in a temporary folder, removed afterwards."""
    from fashion_retrieval.bench.throughput import measure_throughput, plain_twin
    from fashion_retrieval.model.encoder import FashionEmbeddingModel

    encoder = FashionEmbeddingModel(checkpoint, base, device, lora_alpha=lora_alpha, dtype=dtype)
    twin = plain_twin(encoder, checkpoint, base, lora_alpha) if plain else None
    result = measure_throughput(encoder, images=images, captions=captions, batch_size=batch_size, plain=twin)
    if as_json:
        print_json(result)
    else:
        _print_bench(result)


def _print_bench(result: dict) -> None:
    """Pipeline against ceiling (and against plain transformers when measured), for images then captions."""
    typer.echo(
        f"{result['device']} ({result['dtype']}: {result['precision']['reason']}), batch {result['batch_size']} "
        f"images / {result['text_batch_size']} captions; {result['images']} images, {result['captions']} captions"
    )
    for kind, label in (("images", "images/s  "), ("captions", "captions/s")):
        rates = result[f"{kind}_per_second"]
        line = (
            f"  {label} pipeline {rates['pipeline']}, ceiling {rates['ceiling']} "
            f"({result['pipeline_vs_ceiling'][kind]:.0%} of the bare forward on the same batches)"
        )
        if "plain" in rates:
            line += f"; transformers as is {rates['plain']} ({result['pipeline_vs_plain'][kind]:.2f}x)"
        typer.echo(line)
        if not result["upper_bound_held"][kind]:
            typer.echo(f"  (the {kind} ceiling came out below the pipeline: a busy machine; run again when quiet)")
