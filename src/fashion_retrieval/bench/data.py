"""Benchmark data: JPEGs at DeepFashion-MultiModal's size with captions of its length, in its CSV layout."""

from __future__ import annotations

import csv
from pathlib import Path

from fashion_retrieval.data.synthetic import render_item, sample_items

DEEPFASHION_SIZE = (750, 1101)


def deepfashion_caption(i: int) -> str:
    """About DeepFashion-MultiModal's caption length (~40 words, 3 sentences)."""
    items = sample_items(3, seed=i)
    return " ".join(x.caption for x in items) + " There is an accessory on her wrist. The outfit is casual."


def make_benchmark_catalog(folder: Path, n: int) -> Path:
    """``n`` JPEGs at DeepFashion's size with DeepFashion-length captions, in its CSV layout."""
    images = folder / "selected_images"
    images.mkdir(parents=True, exist_ok=True)
    with open(folder / "labels_front.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "caption", "path", "gender", "product_type", "product_id", "image_type"])
        for i, item in enumerate(sample_items(n, seed=1)):
            render_item(item, 256, i).resize(DEEPFASHION_SIZE).save(images / f"{i}.jpg", quality=90)
            writer.writerow([f"{i}", deepfashion_caption(i), f"{i}.jpg", item.gender, "x", f"p{i}", "front"])
    return folder / "labels_front.csv"
