"""What an embedding engine is asked to compute: the job description both engines share.

The runner (``embed.py``) builds an ``EmbedJob`` from the catalogue, the settings and the shards still to do;
an engine (in-process in ``embed.py``, or ``ray_engine.py``) turns it into finished shards. Neither engine
imports the other, nor the runner: they meet here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from fashion_retrieval.config import EmbedConfig
    from fashion_retrieval.data.records import Catalog
    from fashion_retrieval.model.backends import Calibration


def shard_layout(items: int, shard_size: int) -> dict[int, np.ndarray]:
    """Shard id -> the catalogue rows it holds: ``shard_size`` consecutive rows each, the last one shorter."""
    count = (items + shard_size - 1) // shard_size
    return {k: np.arange(k * shard_size, min(items, (k + 1) * shard_size)) for k in range(count)}


def calibration_sample(catalog: Catalog, items: int, seed: int = 0) -> Calibration:
    """An int8 calibration sample of the catalogue being embedded: ``items`` rows drawn with a fixed seed (their
    image files and captions), so a re-run calibrates, and so exports, alike."""
    from fashion_retrieval.model.backends import Calibration

    frame = catalog.frame
    rows = np.sort(np.random.default_rng(seed).permutation(len(frame))[:items])
    captions = frame["caption"].iloc[rows].tolist() if catalog.has_text else []
    return Calibration(frame["path"].iloc[rows].tolist(), captions, source=f"{catalog.source} ({len(rows)} items)")


@dataclass
class EmbedJob:
    """What an engine needs to compute shards: the catalogue, the settings and the shard layout."""

    config: EmbedConfig
    catalog: Catalog
    shard_rows: dict[int, np.ndarray]  # shard id -> catalogue rows (``shard_layout``)
    todo: list[int]  # shard ids still to compute, ascending
    embed_dim: int

    @property
    def captions(self) -> list[str]:
        return self.catalog.frame["caption"].tolist() if self.catalog.has_text else []


__all__ = ["EmbedJob", "calibration_sample", "shard_layout"]
