"""The public API: every name in __all__ resolves, and importing the package does not import torch."""

from __future__ import annotations

import subprocess
import sys

import fashion_retrieval


def test_every_public_name_resolves():
    for name in fashion_retrieval.__all__:
        assert getattr(fashion_retrieval, name) is not None, name


def test_import_is_light():
    code = "import sys, fashion_retrieval; print('torch' in sys.modules, 'pymilvus' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_cli_help_lists_every_command():
    out = subprocess.run(
        [sys.executable, "-m", "fashion_retrieval", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in (
        "inspect",
        "embed",
        "schema",
        "index",
        "search",
        "serve",
        "eval",
        "report",
        "train",
        "make-catalog",
        "demo",
    ):
        assert command in out, command


def test_embed_help_states_the_real_default_batch_sizes():
    from typer.testing import CliRunner

    from fashion_retrieval.cli import app
    from fashion_retrieval.config import auto_batch_sizes

    output = CliRunner().invoke(app, ["embed", "--help"]).output
    help_text = " ".join(output.replace("│", " ").split())  # rich wraps help into a box
    assert f"default: {auto_batch_sizes('cpu')[0]} on CPU, {auto_batch_sizes('cuda')[0]} on CUDA" in help_text
