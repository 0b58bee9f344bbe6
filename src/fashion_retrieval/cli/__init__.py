"""The ``fashion-retrieval`` command line: each subcommand parses options into a config and makes one
library call. Subcommands live in modules by concern; importing them registers them on ``app``."""

from __future__ import annotations

from typing import Annotated

import typer

from fashion_retrieval.cli import compare, embed, export, items, model, quality, serve, store  # noqa: F401  (registers)
from fashion_retrieval.cli.common import app
from fashion_retrieval.logs import configure_logging


@app.callback()
def root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debugging details too.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Log only warnings and errors.")] = False,
) -> None:
    """Multimodal fashion search on your image-text model. Run a subcommand with --help for its options.

    What the library decides for you (checkpoint format, LoRA merge, dtype, fast paths, resumed shards,
    store connections) is logged to stderr; progress bars draw on a terminal, elsewhere a log line every
    few seconds."""
    configure_logging(verbose=verbose, quiet=quiet)


def main() -> None:
    app()


__all__ = ["app", "main"]
