"""Shared helpers for the benchmarks: a BLIP-base-sized model with random weights, result files."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from fashion_retrieval.bench.machine import CPU_FLAGS, cpu_description, machine  # noqa: F401

RESULTS = Path(__file__).parent / "results"


def build_base_sized_blip(folder: Path, image_size: int = 384) -> Path:
    """Same shapes (and so the same compute) as Salesforce/blip-itm-base-coco, random weights, offline."""
    import torch
    from transformers import BlipConfig, BlipForImageTextRetrieval

    from fashion_retrieval.data.synthetic import sample_items
    from fashion_retrieval.model.tiny import build_processor, words_of

    processor = build_processor(folder, words_of(i.caption for i in sample_items(2000)), image_size)
    tok = processor.tokenizer
    config = BlipConfig(
        text_config={
            "vocab_size": 30524,
            "pad_token_id": tok.pad_token_id,
            "bos_token_id": tok.bos_token_id,
            "sep_token_id": tok.sep_token_id,
        },
        vision_config={"image_size": image_size, "patch_size": 16},
    )
    torch.manual_seed(0)
    BlipForImageTextRetrieval(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@contextlib.contextmanager
def benchmark_model(
    cache: str | None = None, *, tiny: bool = False, image_size: int = 384
) -> Iterator[tuple[Path, str]]:
    """The benchmark model folder and a description of it: a BLIP-base-sized model (random weights, ~900 MB on
    disk), or with ``tiny`` a tiny random BLIP that only checks a harness. With ``cache`` it is built once into
    that folder and reused by later runs; otherwise it lives in a temporary folder removed on exit, errors
    included, so no multi-GB model is left behind."""
    from fashion_retrieval.model.tiny import build_tiny_blip

    name = "tiny-blip" if tiny else f"blip-base-sized-{image_size}"
    described = (
        "tiny random BLIP (checks the harness, not speed)"
        if tiny
        else (f"BLIP-base-sized BlipForImageTextRetrieval, random weights, {image_size} px")
    )

    def build(folder: Path) -> Path:
        return build_tiny_blip(folder, seed=0) if tiny else build_base_sized_blip(folder, image_size)

    if cache is not None:
        folder = Path(cache).expanduser() / name
        if not (folder / "config.json").is_file() or not any(folder.glob("model*.safetensors")):
            partial = folder.with_name(f"{name}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            build(partial)  # built aside, then renamed: an interrupted build is never reused
            shutil.rmtree(folder, ignore_errors=True)
            partial.rename(folder)
        yield folder, f"{described}; cached in {folder}"
        return
    with temporary_folder("bench-model-") as work:
        yield build(work / name), described


@contextlib.contextmanager
def temporary_folder(prefix: str) -> Iterator[Path]:
    """A temporary folder removed on exit, errors and Ctrl-C included."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)




def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"benchmark": name, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(), **data}
    path.write_text(json.dumps(data, indent=2))
    print(json.dumps(data, indent=2))
    return path
