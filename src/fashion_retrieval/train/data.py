"""Training data: (pixels, caption, attribute keys) from a catalogue, decoded once into memory when small.

Unreadable images are handled as the embedding pipeline handles them: ``on_error="skip"`` leaves the item
out and lists it (id, path, reason) in ``failures``; ``"fail"`` raises at the first one.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import Dataset

from fashion_retrieval.data.images import ImagePreprocessor, open_image
from fashion_retrieval.data.records import Catalog
from fashion_retrieval.errors import ImageError

log = logging.getLogger(__name__)

CACHE_LIMIT_BYTES = 2 * 1024**3


class PairDataset(Dataset):
    def __init__(
        self,
        catalog: Catalog,
        rows: np.ndarray,
        preprocess: ImagePreprocessor,
        full_keys: list[str],
        partial_keys: list[str],
        on_error: str = "skip",
    ) -> None:
        frame = catalog.frame.iloc[rows].reset_index(drop=True)
        self.preprocess = preprocess
        item_bytes = 3 * preprocess.height * preprocess.width * 4
        cache = len(frame) * item_bytes <= CACHE_LIMIT_BYTES
        # Every image is decoded once up front (kept when the set fits in memory), so a bad file is found
        # before training starts, not in the middle of an epoch.
        pixels, keep, self.failures = [], [], []
        for i, path in enumerate(frame["path"]):
            try:
                image = open_image(path)
            except ImageError as exc:
                if on_error == "fail":
                    raise
                self.failures.append({"id": frame.at[i, "id"], "path": path, "reason": str(exc)})
                continue
            keep.append(i)
            if cache:
                pixels.append(preprocess(image))
        if self.failures:
            log.warning("%d of %d training images are unreadable and left out", len(self.failures), len(frame))
        frame = frame.iloc[keep].reset_index(drop=True)
        self.paths = frame["path"].tolist()
        self.captions = frame["caption"].tolist()
        self.ids = frame["id"].tolist()
        self.full = [tuple(r) for r in frame[full_keys].itertuples(index=False)] if full_keys else None
        self.partial = [tuple(r) for r in frame[partial_keys].itertuples(index=False)] if partial_keys else None
        self.cache: torch.Tensor | None = torch.from_numpy(np.stack(pixels)) if cache and pixels else None

    def _load(self, index: int) -> np.ndarray:
        return self.preprocess(open_image(self.paths[index]))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        pixels = self.cache[index] if self.cache is not None else torch.from_numpy(self._load(index))
        return index, pixels

    def collate(self, rows):
        indices, pixels = zip(*rows, strict=True)
        indices = list(indices)
        return {
            "indices": indices,
            "pixels": torch.stack(pixels),
            "captions": [self.captions[i] for i in indices],
            "full": [self.full[i] for i in indices] if self.full else None,
            "partial": [self.partial[i] for i in indices] if self.partial else None,
        }
