"""The embeddings folder: a format of its own, written by the pipeline and read by store, evaluate, train and serve.

Layout of a finished folder:
  image_embeddings.npy, text_embeddings.npy  float32 [N, D]; row i is metadata row i
  metadata.parquet                            id, path, caption and every attribute
  metadata.pkl                                the original toolkit's dict, for drop-in use
  failures.jsonl                              one line per item left out (id, path, reason)
  manifest.json                               model identity, dtype, counts, config, versions, timings
``manifest.json`` is written last: its presence means the folder is complete.
"""

from __future__ import annotations

import json
import pickle
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fashion_retrieval.errors import FashionRetrievalError
from fashion_retrieval.files import atomic_save, atomic_write_bytes
from fashion_retrieval.version import __version__

MANIFEST_FORMAT = "fashion-retrieval/embeddings@1"
FINAL_FILES = (
    "image_embeddings.npy",
    "text_embeddings.npy",
    "metadata.parquet",
    "metadata.pkl",
    "failures.jsonl",
    "manifest.json",
)
PARTIAL = ".partial"  # the pipeline's resumable shards live here while a run is unfinished
ORIGINAL_KEYS = {  # the original toolkit's metadata.pkl key -> catalogue column
    "image_paths": "path",
    "texts": "caption",
    "image_ids": "id",
    "product_ids": "product_id",
    "genders": "gender",
    "product_types": "product_type",
    "image_types": "image_type",
}


def original_metadata(frame: pd.DataFrame) -> dict[str, list]:
    """The original toolkit's metadata dict; attributes a catalogue lacks are lists of None."""
    return {
        key: frame[column].tolist() if column in frame.columns else [None] * len(frame)
        for key, column in ORIGINAL_KEYS.items()
    }


def library_versions() -> dict[str, str]:
    """Versions of what decides the vectors, for the manifest (torch and transformers only if loaded)."""
    import sys

    versions = {"fashion_retrieval": __version__, "numpy": np.__version__, "python": platform.python_version()}
    for name in ("torch", "transformers"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = module.__version__
    return versions


def write_embeddings(
    out: Path, image: np.ndarray, text: np.ndarray | None, frame: pd.DataFrame, failures: list[dict], manifest: dict
) -> None:
    """Write a finished folder; manifest.json last, so its presence means the folder is complete."""
    atomic_save(out / "image_embeddings.npy", lambda h: np.save(h, image.astype(np.float32)))
    if text is not None:
        atomic_save(out / "text_embeddings.npy", lambda h: np.save(h, text.astype(np.float32)))
    atomic_save(out / "metadata.parquet", lambda h: frame.to_parquet(h, index=False))
    atomic_write_bytes(out / "metadata.pkl", pickle.dumps(original_metadata(frame)))
    atomic_write_bytes(out / "failures.jsonl", "".join(json.dumps(f) + "\n" for f in failures).encode())
    manifest = {"format": MANIFEST_FORMAT, **manifest}
    atomic_write_bytes(out / "manifest.json", json.dumps(manifest, indent=2, default=str).encode())


def read_manifest(folder: Path) -> dict | None:
    path = Path(folder) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else None


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

    @property
    def attributes(self) -> list[str]:
        return [c for c in self.metadata.columns if c not in ("id", "caption", "path", "placeholder")]

    def __len__(self) -> int:
        return len(self.metadata)


def load_embeddings(folder: str | Path, *, mmap: bool = False, original_pickle: bool = False):
    """Read an embeddings folder. With ``original_pickle=True`` return the original toolkit's triple
    (image_embeddings, text_embeddings, metadata dict from metadata.pkl): unpickling runs code, so only
    for folders you trust."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
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
    return EmbeddingSet(folder, image, text, pd.read_parquet(folder / "metadata.parquet"), manifest, failures)


__all__ = [
    "FINAL_FILES",
    "EmbeddingSet",
    "library_versions",
    "load_embeddings",
    "original_metadata",
    "read_manifest",
    "write_embeddings",
]
