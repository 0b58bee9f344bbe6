from __future__ import annotations

import csv
from pathlib import Path

import pytest
from PIL import Image

from fashion_retrieval.data.synthetic import make_catalog
from tests.helpers import write_image

BAD = {
    "missing": "file not found",
    "empty": "not an image",
    "truncated": "broken or truncated",
    "notimage": "not an image",
    "bomb": "decompression bomb",
}
ODD = ("cmyk", "gray", "rgba", "tiny", "wide")


def add_odd_and_bad_images(csv_path: Path) -> None:
    """Append rows whose images are broken in each way, and odd-but-valid ones, to a DeepFashion CSV."""
    images = csv_path.parent / "selected_images"
    write_image(images / "cmyk.jpg", (10, 200, 90), mode="CMYK")
    write_image(images / "gray.png", (120, 120, 120), mode="L", fmt="PNG")
    Image.new("RGBA", (50, 60), (200, 0, 0, 128)).save(images / "rgba.png")
    Image.new("RGB", (1, 1), (0, 0, 255)).save(images / "tiny.png")
    write_image(images / "wide.jpg", (0, 90, 0), size=(2000, 20))
    (images / "empty.jpg").write_bytes(b"")
    good = (images / "cmyk.jpg").read_bytes()
    big = write_image(images / "big.jpg", (30, 30, 30), size=(300, 300)).read_bytes()
    (images / "truncated.jpg").write_bytes(big[: len(big) // 3])
    (images / "notimage.jpg").write_text("<html>not an image</html>")
    Image.new("1", (12000, 12000)).save(images / "bomb.png")  # 144 Mpx, tiny on disk
    assert good
    names = {
        "cmyk": "cmyk.jpg",
        "gray": "gray.png",
        "rgba": "rgba.png",
        "tiny": "tiny.png",
        "wide": "wide.jpg",
        "missing": "missing.jpg",
        "empty": "empty.jpg",
        "truncated": "truncated.jpg",
        "notimage": "notimage.jpg",
        "bomb": "bomb.png",
    }
    with open(csv_path, "a", newline="") as handle:
        writer = csv.writer(handle)
        for key, name in names.items():
            writer.writerow(
                [
                    f"odd-{key}",
                    f"The lady wears a {key} red dress.",
                    name,
                    "WOMEN",
                    "Dresses",
                    f"id_{key}",
                    "front",
                    "dress",
                    "red",
                    "solid",
                ]
            )


@pytest.fixture(scope="session")
def messy_catalog(tmp_path_factory) -> Path:
    csv_path = make_catalog(tmp_path_factory.mktemp("messy"), n=30, seed=1, image_size=48)
    add_odd_and_bad_images(csv_path)
    return csv_path
