"""The README's first Python snippet (the original toolkit's examples) runs against a tiny model."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from transformers import BlipForImageTextRetrieval

from tests.helpers import wrap_original, write_image

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_snippet_runs(tiny_base, tmp_path, monkeypatch, capsys):
    snippet = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)[0]
    checkpoint = tmp_path / "best_model.pth"
    torch.save(wrap_original(BlipForImageTextRetrieval.from_pretrained(tiny_base)).state_dict(), checkpoint)
    snippet = re.sub(r'model_path = ".*?"', f'model_path = "{checkpoint}"', snippet)
    snippet = re.sub(r'processor_path = ".*?"', f'processor_path = "{tiny_base}"', snippet)
    monkeypatch.chdir(tmp_path)
    for i, name in enumerate(["image1.jpg", "image2.jpg", "image3.jpg", "path/to/image.jpg"]):
        write_image(tmp_path / name, (40 * i, 200 - 30 * i, 90))
    exec(compile(snippet, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 6  # top_k=5 over 3 images and 3 texts gives 3 lines each
    assert printed[0].startswith("image") and printed[3].split(":")[0] in {"red dress", "blue jeans", "black jacket"}
