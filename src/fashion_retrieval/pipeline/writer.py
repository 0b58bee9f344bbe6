"""The embeddings folder: shards written atomically while running, final files assembled at the end.

Layout of a finished folder:
  image_embeddings.npy, text_embeddings.npy  float32 [N, D]; row i is metadata row i
  metadata.parquet                            id, path, caption and every attribute
  metadata.pkl                                the original toolkit's dict, for drop-in use
  failures.jsonl                              one line per item left out (id, path, reason)
  manifest.json                               model identity, counts, config, versions, timings
While running, ``.partial/`` holds ``run.json`` and one ``shard-NNNNN.npz`` per finished shard.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fashion_retrieval.errors import FashionRetrievalError

STATUS_OK, STATUS_FAILED, STATUS_PLACEHOLDER = 0, 1, 2
FINAL_FILES = (
    "image_embeddings.npy",
    "text_embeddings.npy",
    "metadata.parquet",
    "metadata.pkl",
    "failures.jsonl",
    "manifest.json",
)
PARTIAL = ".partial"
ORIGINAL_KEYS = {  # the original toolkit's metadata.pkl key -> catalogue column
    "image_paths": "path",
    "texts": "caption",
    "image_ids": "id",
    "product_ids": "product_id",
    "genders": "gender",
    "product_types": "product_type",
    "image_types": "image_type",
}


def atomic_save(path: Path, writer) -> None:
    """Write through ``writer(handle)`` to a temporary name, fsync, then rename: readers see the old file or
    the new one, never half of one (a crash or SIGKILL mid-write leaves only the temporary file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        writer(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_save(path, lambda handle: handle.write(data))


@dataclass
class Shard:
    index: int
    item_indices: np.ndarray  # catalogue rows, in order
    image: np.ndarray  # [n, D]; failed rows are zero
    text: np.ndarray  # [n, D] or [n, 0] for image-only catalogues
    status: np.ndarray  # uint8 STATUS_*
    reasons: list[str]


class ShardStore:
    """Finished shards under ``OUT/.partial``; a shard exists whole or not at all."""

    def __init__(self, out: Path) -> None:
        self.folder = out / PARTIAL

    def path(self, index: int) -> Path:
        return self.folder / f"shard-{index:05d}.npz"

    def done(self) -> set[int]:
        if not self.folder.is_dir():
            return set()
        return {int(p.stem.split("-")[1]) for p in self.folder.glob("shard-*.npz")}

    def write(self, shard: Shard) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_save(
            self.path(shard.index),
            lambda handle: np.savez(
                handle,
                items=shard.item_indices,
                image=shard.image,
                text=shard.text,
                status=shard.status,
                reasons=np.asarray(shard.reasons, dtype=object).astype(str),
            ),
        )

    def read(self, index: int) -> Shard:
        with np.load(self.path(index)) as data:
            return Shard(index, data["items"], data["image"], data["text"], data["status"], list(data["reasons"]))

    def read_run(self) -> dict | None:
        path = self.folder / "run.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def write_run(self, run: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.folder / "run.json", json.dumps(run, indent=2).encode())

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def clear_outputs(out: Path) -> None:
    for name in FINAL_FILES:
        (out / name).unlink(missing_ok=True)
    ShardStore(out).remove()


def original_metadata(frame: pd.DataFrame) -> dict[str, list]:
    """The original toolkit's metadata dict; attributes a catalogue lacks are lists of None."""
    return {
        key: frame[column].tolist() if column in frame.columns else [None] * len(frame)
        for key, column in ORIGINAL_KEYS.items()
    }


def write_final(
    out: Path, image: np.ndarray, text: np.ndarray | None, frame: pd.DataFrame, failures: list[dict], manifest: dict
) -> None:
    """Write the final files; manifest.json last, so its presence means the folder is complete."""
    atomic_save(out / "image_embeddings.npy", lambda h: np.save(h, image.astype(np.float32)))
    if text is not None:
        atomic_save(out / "text_embeddings.npy", lambda h: np.save(h, text.astype(np.float32)))
    atomic_save(out / "metadata.parquet", lambda h: frame.to_parquet(h, index=False))
    atomic_write_bytes(out / "metadata.pkl", pickle.dumps(original_metadata(frame)))
    atomic_write_bytes(out / "failures.jsonl", "".join(json.dumps(f) + "\n" for f in failures).encode())
    atomic_write_bytes(out / "manifest.json", json.dumps(manifest, indent=2, default=str).encode())


@dataclass
class EmbeddingSet:
    """An embeddings folder read back."""

    folder: Path
    image_embeddings: np.ndarray
    text_embeddings: np.ndarray | None
    metadata: pd.DataFrame
    manifest: dict
    failures: list[dict]

    @property
    def identity(self) -> dict:
        return self.manifest["model"]

    def __len__(self) -> int:
        return len(self.metadata)


def load_embeddings(folder: str | Path, *, mmap: bool = False, original_pickle: bool = False):
    """Read an embeddings folder. With ``original_pickle=True`` return the original toolkit's triple
    (image_embeddings, text_embeddings, metadata dict from metadata.pkl): unpickling runs code, so only
    for folders you trust."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        partial = (
            " (an unfinished run: re-run the same embed command to finish it)" if (folder / PARTIAL).is_dir() else ""
        )
        raise FashionRetrievalError(f"{folder}: not a finished embeddings folder, no manifest.json{partial}")
    mode = "r" if mmap else None
    image = np.load(folder / "image_embeddings.npy", mmap_mode=mode)
    text_path = folder / "text_embeddings.npy"
    text = np.load(text_path, mmap_mode=mode) if text_path.is_file() else None
    if original_pickle:
        with open(folder / "metadata.pkl", "rb") as handle:
            return image, text, pickle.load(handle)
    failures_path = folder / "failures.jsonl"
    failures = (
        [json.loads(line) for line in failures_path.read_text().splitlines() if line.strip()]
        if failures_path.is_file()
        else []
    )
    return EmbeddingSet(
        folder,
        image,
        text,
        pd.read_parquet(folder / "metadata.parquet"),
        json.loads(manifest_path.read_text()),
        failures,
    )
