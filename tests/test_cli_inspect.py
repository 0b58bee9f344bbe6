from __future__ import annotations

import json

import torch
from transformers import BlipForImageTextRetrieval
from typer.testing import CliRunner

from fashion_retrieval.cli import app
from tests.helpers import wrap_original


def test_inspect_original_checkpoint(tiny_base, tmp_path):
    model = wrap_original(BlipForImageTextRetrieval.from_pretrained(tiny_base), rank=8, alpha=16)
    torch.save(model.state_dict(), tmp_path / "best_model.pth")
    runner = CliRunner()
    result = runner.invoke(app, ["inspect", str(tmp_path / "best_model.pth"), "--base", str(tiny_base), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["format"] == "original-lora" and report["lora_rank"] == 8 and report["loads"] is True
    assert set(report["adapted_module_groups"]) == {
        "text_encoder.*.query",
        "text_encoder.*.value",
        "vision_proj",
        "text_proj",
    }
    text = runner.invoke(app, ["inspect", str(tmp_path / "best_model.pth")]).stdout
    assert "original-lora" in text and "rank 8" in text


def test_inspect_bad_file_is_one_line(tmp_path):
    (tmp_path / "x.pth").write_text("hello")
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "x.pth")])
    assert result.exit_code == 2
    assert "error:" in result.output and "Traceback" not in result.output
