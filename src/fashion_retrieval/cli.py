"""The ``fashion-retrieval`` command line: each subcommand parses options and makes one library call."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fashion_retrieval.cli_common import print_json, user_errors

app = typer.Typer(
    help="Multimodal fashion search on a fine-tuned BLIP: embed, index, search, serve, evaluate, train.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root() -> None:
    """Multimodal fashion search on a fine-tuned BLIP. Run a subcommand with --help for its options."""


BaseOpt = Annotated[str, typer.Option("--base", help="BLIP base: a Hugging Face folder (or a hub id with network).")]
AlphaOpt = Annotated[float, typer.Option("--lora-alpha", help="LoRA alpha of an original-format checkpoint.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print only a JSON summary (for scripts).")]


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


def main() -> None:
    app()


# The other subcommands live in their own module to keep this one short; importing it registers them.
from fashion_retrieval import commands  # noqa: E402,F401
