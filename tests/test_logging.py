"""The library logs its decisions; progress is a bar on a terminal and a periodic log line elsewhere."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from fashion_retrieval.progress import LogProgress, progress_bar


def test_progress_without_a_terminal_is_a_log_line_every_few_seconds(caplog, monkeypatch):
    caplog.set_level("INFO", logger="fashion_retrieval")
    bar = progress_bar(100, "embedding", "img")  # pytest's stderr is not a terminal
    assert isinstance(bar, LogProgress)
    clock = iter([0.0, 1.0, 2.0, 6.0, 7.0, 13.0, 14.0])
    monkeypatch.setattr("fashion_retrieval.progress.time.monotonic", lambda: next(clock))
    bar = LogProgress(100, "embedding", "img")  # starts at t=0
    for _ in range(5):
        bar.update(10)  # t = 1, 2, 6, 7, 13: lines at 6 and 13 only
    bar.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "fashion_retrieval.progress"]
    assert len(lines) == 3, lines
    assert lines[0].startswith("embedding: 30/100 img, 30%, 5.0 img/s") and "s left" in lines[0]
    assert "done in 14.0 s" in lines[-1]


@pytest.mark.slow  # about 10 s: started early, so it does not end the run on one worker
def test_cli_logs_decisions_and_quiet_silences_them(tiny_base, tmp_path):
    from fashion_retrieval.data.synthetic import make_catalog

    catalog = make_catalog(tmp_path / "c", n=6, seed=1, image_size=32)

    args = ["embed", str(catalog), "--base", str(tiny_base), "--workers", "0", "--device", "cpu", "--json"]
    # a real process first: its stdout must stay pure JSON, its decisions go to stderr
    command = [sys.executable, "-m", "fashion_retrieval", *args, "--out", str(tmp_path / "process")]
    normal = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(normal.stdout)["embedded"] == 6  # stdout stays pure JSON
    assert "fashion_retrieval.model.loading: model" in normal.stderr and "float32" in normal.stderr

    def invoke(*flags):  # the flags in this process (the CLI configures logging on each call)
        from typer.testing import CliRunner

        from fashion_retrieval.cli import app

        result = CliRunner().invoke(app, [*flags, *args, "--out", str(tmp_path / f"o{len(flags)}")])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["embedded"] == 6
        return result

    # the CLI configures this process's logging on each call: kept here, put back after
    root, ours = logging.getLogger(), logging.getLogger("fashion_retrieval")
    handlers, root_level, our_level = root.handlers[:], root.level, ours.level
    try:
        assert "INFO" in invoke().stderr  # what --quiet silences is there without it
        assert "INFO" not in invoke("--quiet").stderr
        assert "DEBUG" in invoke("--quiet", "--verbose").stderr  # -v wins: debugging details
    finally:
        root.handlers[:] = handlers
        root.setLevel(root_level)
        ours.setLevel(our_level)
