"""`inspect`: what a checkpoint holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fashion_retrieval.cli.common import AlphaOpt, JsonOpt, app, print_json, user_errors


@app.command()
@user_errors
def inspect(
    checkpoint: Annotated[Path, typer.Argument(help="best_model.pth, a PEFT adapter folder, a state dict ...")],
    base: Annotated[str | None, typer.Option("--base", help="Also check that it loads onto this base.")] = None,
    lora_alpha: AlphaOpt = 32.0,
    as_json: JsonOpt = False,
) -> None:
    """Say what a checkpoint holds: format, LoRA rank and alpha, adapted modules, overridden tensors."""
    from fashion_retrieval.model.inspect import inspect_checkpoint, render_inspection

    report = inspect_checkpoint(checkpoint, base=base, lora_alpha=lora_alpha)
    if as_json:
        print_json(report)
    else:
        typer.echo(render_inspection(report))
    if report.get("loads") is False:
        raise typer.Exit(1)
