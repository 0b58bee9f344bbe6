"""Catalogue readers: DeepFashion-MultiModal CSV, any CSV/Parquet/JSONL with a column mapping, an image folder.

Everything is validated before any model work: missing columns, duplicate ids, empty captions and an
empty catalogue are one clear error each, with counts and the first offending rows.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fashion_retrieval.errors import CatalogError
from fashion_retrieval.files import sha256_of

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
DEFAULT_IMAGES_FOLDER = "selected_images"
SHOWN = 5


@dataclass(frozen=True)
class ColumnMap:
    """Which catalogue columns hold the id, the image path and the caption (DeepFashion's by default)."""

    id: str = "image_id"
    image: str = "path"
    text: str | None = "caption"


@dataclass
class Catalog:
    """Items with normalised columns ``id``, ``path`` (resolved), ``caption`` plus every attribute."""

    frame: pd.DataFrame
    source: str
    images_root: str | None
    attributes: list[str]
    fingerprint: str

    @property
    def has_text(self) -> bool:
        return bool(self.frame["caption"].astype(bool).any())

    def __len__(self) -> int:
        return len(self.frame)

    def head(self, limit: int | None) -> Catalog:
        if limit is None or limit >= len(self.frame):
            return self
        digest = hashlib.sha256(f"{self.fingerprint}:{limit}".encode()).hexdigest()
        return Catalog(
            self.frame.iloc[:limit].reset_index(drop=True), self.source, self.images_root, self.attributes, digest
        )


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
        if suffix == ".parquet":
            return pd.read_parquet(path).astype(str)
        if suffix in (".jsonl", ".ndjson"):
            return pd.read_json(path, lines=True, dtype=False).astype(str)
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        raise CatalogError(f"{path}: cannot read the table ({str(exc).splitlines()[0]})") from exc
    raise CatalogError(
        f"{path}: unknown catalogue type {suffix!r}: use .csv, .tsv, .parquet, .jsonl or an image folder"
    )


def _rows(frame: pd.DataFrame, mask: pd.Series, column: str) -> str:
    bad = frame.index[mask]
    shown = ", ".join(f"row {i + 2}: {frame.at[i, column]!r}" for i in bad[:SHOWN])  # +2: header, 1-based
    return f"{len(bad)} rows ({shown}{', ...' if len(bad) > SHOWN else ''})"


def images_fingerprint(paths: list[str]) -> str:
    """A digest of each image file's size and modification time (not its bytes: a stat per file is cheap,
    reading a million images is not), so that a replaced image changes the catalogue's fingerprint."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}:missing\n".encode())
    return digest.hexdigest()


def read_table_catalog(path: Path, columns: ColumnMap, images_dir: str | Path | None) -> Catalog:
    frame = _read_table(path)
    if frame.empty:
        raise CatalogError(f"{path}: the catalogue has no rows")
    required = [c for c in (columns.id, columns.image, columns.text) if c]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise CatalogError(
            f"{path}: missing column(s) {', '.join(missing)}; it has {', '.join(map(str, frame.columns))}. "
            "Map yours with --id-col, --image-col and --text-col."
        )
    frame = frame.reset_index(drop=True)
    ids = frame[columns.id].astype(str).str.strip()
    empty_ids = ids == ""
    if empty_ids.any():
        raise CatalogError(f"{path}: empty {columns.id} in {_rows(frame, empty_ids, columns.id)}")
    dupes = ids.duplicated(keep=False)
    if dupes.any():
        raise CatalogError(f"{path}: duplicate {columns.id} in {_rows(frame, dupes, columns.id)}; ids must be unique")
    if columns.text:
        captions = frame[columns.text].astype(str).str.strip()
        empty = (captions == "") | (captions.str.lower() == "nan")
        if empty.any():
            raise CatalogError(f"{path}: empty {columns.text} in {_rows(frame, empty, columns.id)}")
    else:
        captions = pd.Series([""] * len(frame))
    root = Path(images_dir) if images_dir else path.parent / DEFAULT_IMAGES_FOLDER
    if not images_dir and not root.is_dir():
        root = path.parent
    raw_paths = frame[columns.image].astype(str)
    paths = [p if Path(p).is_absolute() else str(root / p) for p in raw_paths]
    attributes = [c for c in frame.columns if c not in {columns.id, columns.image, columns.text}]
    normalised = pd.DataFrame({"id": ids, "path": paths, "caption": captions})
    for column in attributes:
        normalised[column] = frame[column].astype(str)
    table = sha256_of(path)
    fingerprint = hashlib.sha256(f"{table}:{columns}:{root}:{images_fingerprint(paths)}".encode()).hexdigest()
    return Catalog(normalised, str(path), str(root), attributes, fingerprint)


def read_image_folder(folder: Path) -> Catalog:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CatalogError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
    ids = [p.relative_to(folder).as_posix() for p in files]
    paths = [str(p) for p in files]
    frame = pd.DataFrame({"id": ids, "path": paths, "caption": [""] * len(files)})
    return Catalog(frame, str(folder), str(folder), [], images_fingerprint(paths))


def read_catalog(
    source: str | Path,
    *,
    images_dir: str | Path | None = None,
    columns: ColumnMap | None = None,
) -> Catalog:
    """Read a catalogue file (CSV/TSV/Parquet/JSONL) or an image folder, validated."""
    path = Path(source).expanduser()
    if not path.exists():
        raise CatalogError(f"catalogue {path} does not exist")
    if path.is_dir():
        return read_image_folder(path)
    return read_table_catalog(path, columns or ColumnMap(), images_dir)
