"""The ``fashion-retrieval`` command line: each subcommand parses options into a config and makes one
library call. Subcommands live in modules by concern; importing them registers them on ``app``."""

from __future__ import annotations

from fashion_retrieval.cli import embed, model, quality, serve, store  # noqa: F401  (registers subcommands)
from fashion_retrieval.cli.common import app


@app.callback()
def root() -> None:
    """Multimodal fashion search on a fine-tuned BLIP. Run a subcommand with --help for its options."""


def main() -> None:
    app()


__all__ = ["app", "main"]
