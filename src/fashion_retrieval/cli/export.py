"""`export`: a model's towers as ONNX or OpenVINO IR (fp32, bf16, int8), runnable without this package; or, with
--db/--uri, a store written back as an embeddings folder (for eval, report, or indexing elsewhere)."""

from __future__ import annotations

from typing import Annotated

import typer

from fashion_retrieval.cli.common import (
    AlphaOpt,
    CalibrateOpt,
    CheckpointOpt,
    CollectionOpt,
    DbOpt,
    JsonOpt,
    TokenOpt,
    UriOpt,
    app,
    print_json,
    user_errors,
)
from fashion_retrieval.errors import FashionRetrievalError


def calibration_from_catalog(catalog: str | None, items: int, images_dir: str | None = None):
    """``items`` rows of a catalogue (seeded) as an int8 calibration sample; None without a catalogue."""
    if not catalog:
        return None
    from fashion_retrieval.data.records import read_catalog
    from fashion_retrieval.pipeline.job import calibration_sample

    return calibration_sample(read_catalog(catalog, images_dir=images_dir), items)


def export_model(
    base: str, checkpoint: str | None, fmt: str, dtype: str, out: str, *, lora_alpha: float, calibration=None
) -> dict:
    """Load the model in fp32 on the CPU and write its towers as ``fmt`` in ``dtype`` into ``out``."""
    from fashion_retrieval.model.backends import export_towers
    from fashion_retrieval.model.loading import load_model

    loaded = load_model(base, checkpoint, lora_alpha=lora_alpha, device="cpu", dtype="fp32")
    manifest = export_towers(loaded, fmt, dtype, out, calibration)
    return {"out": out, "format": fmt, "precision": dtype, "parity": manifest.parity, "files": manifest.files}


def export_store_folder(db: str | None, uri: str | None, token: str | None, collection: str, out: str) -> dict:
    """Every item of the store (Milvus Lite file or server) into an embeddings folder at ``out``."""
    from fashion_retrieval.store import open_store
    from fashion_retrieval.store.export import export_store

    store = open_store(db=db, uri=uri, token=token, collection=collection)
    try:
        return export_store(store, out, progress=True)
    finally:
        store.close()


# Long only by its option declarations (Typer reads them from the signature); the body is a few lines.
@app.command("export")
@user_errors
def export_command(
    out: Annotated[
        str, typer.Option("--out", help="Folder for the towers, tokenizer and manifest.json (or the embeddings).")
    ],
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            help="Export this model's towers: BLIP, CLIP, SigLIP, Chinese-CLIP (Hugging Face format) or open_clip.",
        ),
    ] = None,
    db: DbOpt = None,
    uri: UriOpt = None,
    token: TokenOpt = None,
    collection: CollectionOpt = "fashion_items",
    fmt: Annotated[str, typer.Option("--format", help="onnx (ONNX Runtime and others) or openvino (IR).")] = "openvino",
    dtype: Annotated[
        str, typer.Option("--dtype", help="fp32, bf16 (OpenVINO on CPUs with bf16 units) or int8 (calibrated).")
    ] = "fp32",
    checkpoint: CheckpointOpt = None,
    lora_alpha: AlphaOpt = 32.0,
    catalog: Annotated[
        str | None, typer.Option(help="int8: the catalogue whose images and captions calibrate it.")
    ] = None,
    calibrate: CalibrateOpt = 0,
    images_dir: Annotated[str | None, typer.Option(help="Folder the catalogue's paths are relative to.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Export a model's towers (--base: projection and normalisation included, dynamic batch and caption length) with
    a manifest: the model identity, the exact preprocessing, and the parity measured against the torch fp32 path on
    a fixed probe (max difference, min cosine, ranking pairs flipped). Or export a store (--db/--uri) as an
    embeddings folder, the format `embed` writes, so `eval`, `report` and `index` work on a live catalogue."""
    if (base is None) == (db is None and uri is None):
        raise FashionRetrievalError("give --base (a model's towers) or --db/--uri (a store's items), one of them")
    if base is None:
        summary = export_store_folder(db, uri, token, collection, out)
        if as_json:
            print_json(summary)
        else:
            typer.echo(f"exported {summary['items']} items to {out} (an embeddings folder)")
        return
    if dtype == "int8" and not catalog:
        raise FashionRetrievalError("--dtype int8 is calibrated on your catalogue: pass --catalog CSV [--calibrate N]")
    calibration = calibration_from_catalog(catalog, calibrate or 300, images_dir) if dtype == "int8" else None
    result = export_model(base, checkpoint, fmt, dtype, out, lora_alpha=lora_alpha, calibration=calibration)
    if as_json:
        print_json(result)
        return
    parity = result["parity"]
    typer.echo(
        f"exported {fmt} {dtype} towers to {out}: max difference {parity['max_abs_difference']:.2g}, "
        f"min cosine {parity['min_cosine']:.5f} to fp32, {parity['discordant_pairs']} probe ranking pairs flipped "
        f"({'passed' if parity['passed'] else 'FAILED'} the gate: min cosine {parity['min_cosine_bound']})"
    )
    if not parity["passed"]:
        raise typer.Exit(1)
