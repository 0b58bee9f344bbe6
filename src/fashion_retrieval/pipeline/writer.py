"""The pipeline's resumable state: finished shards under ``OUT/.partial``, each written atomically.

``.partial/`` holds ``run.json`` (what the run is: model, catalogue, settings) and one ``shard-NNNNN.npz``
per finished shard; the final folder (see ``fashion_retrieval.embeddings``) is assembled from them.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fashion_retrieval.embeddings import FINAL_FILES, PARTIAL
from fashion_retrieval.files import atomic_save, atomic_write_bytes

log = logging.getLogger(__name__)

STATUS_OK, STATUS_FAILED, STATUS_PLACEHOLDER = 0, 1, 2


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

    def read(self, index: int, expected_items: np.ndarray) -> Shard:
        """Read shard ``index`` back, checking it holds exactly the catalogue rows it should."""
        with np.load(self.path(index)) as data:
            shard = Shard(index, data["items"], data["image"], data["text"], data["status"], list(data["reasons"]))
        rows = len(shard.item_indices)
        consistent = (
            np.array_equal(shard.item_indices, expected_items)
            and shard.image.shape[0] == rows
            and shard.status.shape[0] == rows
            and len(shard.reasons) == rows
            and shard.text.shape[0] == rows
        )
        if not consistent:
            raise ValueError(f"{self.path(index)} does not hold catalogue rows {expected_items[:1]}..")
        return shard

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
