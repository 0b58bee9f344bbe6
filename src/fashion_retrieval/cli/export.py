"""`export`: a model's towers as ONNX or OpenVINO IR (fp32, bf16, int8), runnable without this package."""

from __future__ import annotations

from typing import Annotated

import typer

from fashion_retrieval.cli.common import (
    AlphaOpt,
    BaseOpt,
    CalibrateOpt,
    CheckpointOpt,
    JsonOpt,
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


# Long only by its option declarations (Typer reads them from the signature); the body is a few lines.
@app.command("export")
@user_errors
def export_command(
    base: BaseOpt,
    out: Annotated[str, typer.Option("--out", help="Folder for the towers, tokenizer and manifest.json.")],
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
    """Export the image and text towers (projection and normalisation included, dynamic batch and caption length)
    with a manifest: the model identity, the exact preprocessing, and the parity measured against the torch
    fp32 path on a fixed probe (max difference, min cosine, ranking pairs flipped)."""
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
