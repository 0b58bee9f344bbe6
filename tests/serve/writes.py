"""Helpers the write tests share: distinct item images, item lines in the batch format, and the admin headers."""

from __future__ import annotations

import base64
import io
import json

from PIL import Image

ADMIN, READER = "admin-key", "reader-key"
ADMIN_HEADERS = {"X-API-Key": ADMIN}
NDJSON = {"Content-Type": "application/x-ndjson", **ADMIN_HEADERS}


def item_image(seed: int, size: int = 48) -> bytes:
    """A JPEG unlike the catalogue's drawn garments and unlike the other seeds' (a seeded noise pattern)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def upsert_line(item_id: str, seed: int, caption: str | None = None, **attributes: str) -> str:
    return json.dumps(
        {
            "id": item_id,
            "caption": caption or f"a catalogue item number {seed}",
            "attributes": attributes,
            "image_base64": base64.b64encode(item_image(seed)).decode(),
        }
    )


def form(item_id: str | None, seed: int, caption: str, **attributes: str) -> dict:
    """The multipart parts of POST /api/items (or PUT without an id)."""
    data = {"caption": caption, "attributes": json.dumps(attributes)}
    if item_id is not None:
        data["id"] = item_id
    return {"files": {"image": ("item.jpg", item_image(seed), "image/jpeg")}, "data": data}


def results(text: str) -> tuple[list[dict], dict]:
    """A batch answer: its result lines and its summary."""
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    return lines[:-1], lines[-1]["summary"]
