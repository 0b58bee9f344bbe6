"""Shared pieces of the CLI: one-line errors for user mistakes, JSON output, option types."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import typer

from fashion_retrieval.errors import FashionRetrievalError


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Print a user-caused error as one line (no traceback) and exit with status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (FashionRetrievalError, FileNotFoundError, ValueError) as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None

    return wrapper


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
