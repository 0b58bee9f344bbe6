"""A generated fashion catalogue in DeepFashion-MultiModal's layout, for the offline demo and tests.

Bold garment drawings (distinct silhouettes per garment type), coloured and patterned, worn by a person whose
head shows above them (long hair for women, short for men: the photo shows who wears it, as DeepFashion's do),
on varied backgrounds; captions in DeepFashion's style with varied wording. The same seed gives the same
catalogue, byte for byte.
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

# garment: (DeepFashion product_type, caption phrases)
GARMENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "t-shirt": ("Tees_Tanks", ("short-sleeve T-shirt", "T-shirt with short sleeves", "crew-neck tee")),
    "shirt": ("Shirts_Polos", ("long-sleeve shirt", "button-up shirt", "collared shirt")),
    "dress": ("Dresses", ("sleeveless dress", "flared dress", "knee-length dress")),
    "skirt": ("Skirts", ("A-line skirt", "short skirt", "flared skirt")),
    "trousers": ("Pants", ("long trousers", "pair of long pants", "full-length trousers")),
    "shorts": ("Shorts", ("pair of shorts", "short pants", "casual shorts")),
    "jacket": ("Jackets_Coats", ("open jacket", "long-sleeve jacket", "zip-up coat")),
    "hoodie": ("Sweatshirts_Hoodies", ("hooded sweatshirt", "hoodie", "pullover hoodie")),
}
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (205, 30, 35),
    "blue": (35, 70, 200),
    "green": (30, 150, 60),
    "yellow": (240, 205, 20),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
    "pink": (240, 120, 180),
    "purple": (120, 45, 160),
    "orange": (245, 130, 20),
    "brown": (120, 70, 30),
    "grey": (128, 128, 128),
}
PATTERNS: dict[str, tuple[str, ...]] = {
    "solid": ("pure colour", "solid colour", "plain"),
    "striped": ("striped", "stripe"),
    "dotted": ("dotted", "polka-dot"),
    "plaid": ("plaid", "lattice"),
    "color-block": ("colour block", "color-block"),
}
GENDERS = {
    "WOMEN": ("The lady", "The woman", "She", "This female"),
    "MEN": ("The man", "The gentleman", "He", "This guy"),
}
BACKGROUNDS = [(250, 250, 250), (232, 236, 240), (245, 238, 225), (225, 240, 230), (238, 228, 240), (210, 210, 215)]
COLUMNS = ["image_id", "caption", "path", "gender", "product_type", "product_id", "image_type"]


@dataclass(frozen=True)
class SyntheticItem:
    image_id: str
    garment: str
    color: str
    pattern: str
    gender: str
    background: int
    caption: str


Point = tuple[float, float]
# Outlines as fractions of the frame side, clockwise from the neckline.
_OUTLINES: dict[str, tuple[Point, ...]] = {
    "t-shirt": (
        (0.3, 0.1),
        (0.7, 0.1),
        (0.98, 0.3),
        (0.85, 0.45),
        (0.75, 0.38),
        (0.75, 0.95),
        (0.25, 0.95),
        (0.25, 0.38),
        (0.15, 0.45),
        (0.02, 0.3),
    ),
    "shirt": (
        (0.3, 0.08),
        (0.7, 0.08),
        (0.9, 0.2),
        (0.98, 0.95),
        (0.84, 0.95),
        (0.76, 0.4),
        (0.76, 0.95),
        (0.24, 0.95),
        (0.24, 0.4),
        (0.16, 0.95),
        (0.02, 0.95),
        (0.1, 0.2),
    ),
    "dress": ((0.36, 0.02), (0.64, 0.02), (0.66, 0.38), (0.95, 0.98), (0.05, 0.98), (0.34, 0.38)),
    "skirt": ((0.3, 0.15), (0.7, 0.15), (0.97, 0.85), (0.03, 0.85)),
    "trousers": ((0.22, 0.02), (0.78, 0.02), (0.88, 0.98), (0.57, 0.98), (0.5, 0.35), (0.43, 0.98), (0.12, 0.98)),
    "shorts": ((0.12, 0.2), (0.88, 0.2), (0.98, 0.75), (0.56, 0.75), (0.5, 0.45), (0.44, 0.75), (0.02, 0.75)),
    "jacket": (
        (0.28, 0.05),
        (0.72, 0.05),
        (0.92, 0.2),
        (1.0, 0.98),
        (0.84, 0.98),
        (0.77, 0.45),
        (0.77, 0.98),
        (0.23, 0.98),
        (0.23, 0.45),
        (0.16, 0.98),
        (0.0, 0.98),
        (0.08, 0.2),
    ),
    "hoodie": (
        (0.25, 0.25),
        (0.75, 0.25),
        (0.95, 0.4),
        (0.99, 0.98),
        (0.85, 0.98),
        (0.77, 0.55),
        (0.77, 0.98),
        (0.23, 0.98),
        (0.23, 0.55),
        (0.15, 0.98),
        (0.01, 0.98),
        (0.05, 0.4),
    ),
}


class _Pen:
    """Draws on a mask in coordinates given as fractions of its side."""

    def __init__(self, mask: Image.Image) -> None:
        self.side = mask.width
        self.draw = ImageDraw.Draw(mask)

    def at(self, *points: Point) -> list[Point]:
        return [(x * self.side, y * self.side) for x, y in points]


# Details cut out of (fill=0) or added to (fill=255) a garment's outline, one function per garment family.
def _tee_details(pen: _Pen) -> None:
    pen.draw.ellipse(pen.at((0.4, 0.03), (0.6, 0.17)), fill=0)  # neck hole


def _shirt_details(pen: _Pen) -> None:
    pen.draw.polygon(pen.at((0.38, 0.08), (0.5, 0.22), (0.62, 0.08)), fill=0)  # collar opening
    pen.draw.line(pen.at((0.5, 0.22), (0.5, 0.95)), fill=0, width=max(1, pen.side // 40))  # button placket


def _dress_details(pen: _Pen) -> None:
    pen.draw.ellipse(pen.at((0.42, -0.04), (0.58, 0.1)), fill=0)  # neckline


def _bottoms_details(pen: _Pen) -> None:
    """Skirts, trousers and shorts: the outline alone."""


def _jacket_details(pen: _Pen) -> None:
    pen.draw.polygon(pen.at((0.44, 0.05), (0.56, 0.05), (0.53, 0.98), (0.47, 0.98)), fill=0)  # open front


def _hoodie_details(pen: _Pen) -> None:
    pen.draw.ellipse(pen.at((0.3, 0.0), (0.7, 0.38)), fill=255)  # hood
    pen.draw.ellipse(pen.at((0.4, 0.1), (0.6, 0.3)), fill=0)
    pen.draw.rectangle(pen.at((0.35, 0.7), (0.65, 0.85)), fill=0)  # front pocket


_DETAILS: dict[str, Callable[[_Pen], None]] = {
    "t-shirt": _tee_details,
    "shirt": _shirt_details,
    "dress": _dress_details,
    "skirt": _bottoms_details,
    "trousers": _bottoms_details,
    "shorts": _bottoms_details,
    "jacket": _jacket_details,
    "hoodie": _hoodie_details,
}


def _silhouette(garment: str, s: int) -> Image.Image:
    """A white-on-black mask of the garment filling most of an s x s frame."""
    if garment not in _DETAILS:
        raise ValueError(f"unknown garment {garment!r}")
    mask = Image.new("L", (s, s), 0)
    pen = _Pen(mask)
    pen.draw.polygon(pen.at(*_OUTLINES[garment]), fill=255)
    _DETAILS[garment](pen)
    return mask


def _texture(pattern: str, color: tuple[int, int, int], s: int, rng: random.Random) -> Image.Image:
    accent = tuple(255 - c if sum(color) < 380 else c // 3 for c in color)
    tex = Image.new("RGB", (s, s), color)
    d = ImageDraw.Draw(tex)
    step = max(4, s // rng.choice((6, 8)))
    if pattern == "striped":
        for y in range(0, s, step):
            d.rectangle((0, y, s, y + step // 3), fill=accent)
    elif pattern == "dotted":
        r = max(1, step // 5)
        for y in range(step // 2, s, step):
            for x in range(step // 2, s, step):
                d.ellipse((x - r, y - r, x + r, y + r), fill=accent)
    elif pattern == "plaid":
        w = max(1, step // 6)
        for k in range(0, s, step):
            d.rectangle((k, 0, k + w, s), fill=accent)
            d.rectangle((0, k, s, k + w), fill=accent)
    elif pattern == "color-block":
        d.rectangle((0, s // 2, s, s), fill=accent)
    return tex


SKIN = [(241, 194, 160), (224, 172, 105), (198, 134, 66), (141, 85, 36)]
HAIR = [(35, 25, 20), (90, 55, 30), (200, 160, 90), (140, 60, 30)]
HEAD_BAND = 0.2  # the top share of the frame where the wearer's head is, as in a photo of a person wearing it


def _wearer(image: Image.Image, gender: str, band: int, rng: random.Random) -> ImageDraw.ImageDraw:
    """The wearer's head above the garment: long hair falling to the shoulders for women, short hair for men
    (as DeepFashion's photos show who wears the garment). Hair is drawn first: the garment then covers it."""
    side = image.width
    draw = ImageDraw.Draw(image)
    cx, cy, r = side / 2, band * 0.55, band * 0.42
    hair = HAIR[rng.randrange(len(HAIR))]
    if gender == "WOMEN":
        draw.rounded_rectangle((cx - 1.7 * r, cy - 1.1 * r, cx + 1.7 * r, band + 0.06 * side), radius=r, fill=hair)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=SKIN[rng.randrange(len(SKIN))])
    if gender == "MEN":
        draw.chord((cx - r, cy - 1.15 * r, cx + r, cy + 0.5 * r), 180, 360, fill=hair)
    return draw


def render_item(item: SyntheticItem, size: int, seed: int) -> Image.Image:
    """The garment (coloured, patterned) worn by a person whose head shows above it, on a plain background."""
    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), BACKGROUNDS[item.background])
    band = round(size * HEAD_BAND)
    body = size - band
    texture = _texture(item.pattern, COLORS[item.color], body, rng)
    _wearer(image, item.gender, band, rng)
    image.paste(texture, ((size - body) // 2, band), mask=_silhouette(item.garment, body))
    return image


def _caption(rng: random.Random, garment: str, color: str, pattern: str, gender: str) -> str:
    subject = rng.choice(GENDERS[gender])
    verb = (
        "wears"
        if subject in ("The lady", "The woman", "The man", "The gentleman")
        else rng.choice(("wears", "is wearing", "has on"))
    )
    phrase = rng.choice(GARMENTS[garment][1])
    pattern_word = rng.choice(PATTERNS[pattern])
    templates = (
        "{s} {v} a {c} {g} with {p} patterns.",
        "{s} {v} a {g} in {c}, with {p} patterns.",
        "{s} {v} a {p} {c} {g}.",
        "{s} {v} a {c} {g}. The {g} has {p} patterns.",
    )
    if pattern == "solid":
        templates = ("{s} {v} a {c} {g} in {p}.", "{s} {v} a {p} {c} {g}.", "{s} {v} a {g} in {c}.")
    text = rng.choice(templates).format(s=subject, v=verb, c=color, g=phrase, p=pattern_word)
    return re.sub(r"\ba ([aeiouAEIOU])", r"an \1", text)


def _kinds(rng: random.Random) -> Iterator[tuple[str, str, str]]:
    """(garment, gender, colour) in rounds that each hold every combination once, in a shuffled order: every kind
    of item is about equally common. Independent draws left some kinds rare (4 men's black trousers in 2,000
    items beside 31 brown dresses), too few to learn or to fill a top 3."""
    # skirts and dresses are women's in this catalogue, as in DeepFashion
    kinds = [
        (garment, gender, color)
        for garment in GARMENTS
        for gender in GENDERS
        if not (gender == "MEN" and garment in ("dress", "skirt"))
        for color in COLORS
    ]
    while True:
        rng.shuffle(kinds)
        yield from kinds


def sample_items(n: int, seed: int = 0) -> list[SyntheticItem]:
    rng = random.Random(seed)
    items = []
    for i, (garment, gender, color) in zip(range(n), _kinds(rng), strict=False):  # the kinds never run out
        pattern = rng.choice(list(PATTERNS))
        product_type = GARMENTS[garment][0]
        image_id = f"{gender}-{product_type}-id_{i:08d}-01_1_front.jpg"
        items.append(
            SyntheticItem(
                image_id,
                garment,
                color,
                pattern,
                gender,
                rng.randrange(len(BACKGROUNDS)),
                _caption(rng, garment, color, pattern, gender),
            )
        )
    return items


def make_catalog(out: str | Path, n: int = 2000, seed: int = 0, image_size: int = 128) -> Path:
    """Write ``labels_front.csv`` and ``selected_images/`` under ``out``; returns the CSV path.

    Besides DeepFashion's columns the CSV has ``color`` and ``pattern`` (used for attribute metrics).
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    out = Path(out)
    images = out / "selected_images"
    images.mkdir(parents=True, exist_ok=True)
    items = sample_items(n, seed)
    csv_path = out / "labels_front.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*COLUMNS, "garment", "color", "pattern"])
        for i, item in enumerate(items):
            target = images / item.image_id
            if not target.exists():
                render_item(item, image_size, seed * 1_000_003 + i).save(target, "JPEG", quality=90)
            product_id = item.image_id.split("-")[2]
            writer.writerow(
                [
                    item.image_id,
                    item.caption,
                    item.image_id,
                    item.gender,
                    GARMENTS[item.garment][0],
                    product_id,
                    "front",
                    item.garment,
                    item.color,
                    item.pattern,
                ]
            )
    return csv_path
