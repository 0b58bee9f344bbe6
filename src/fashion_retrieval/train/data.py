"""Training data: (pixels, caption, attribute keys) from a catalogue, decoded once into memory when small."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from fashion_retrieval.data.images import ImagePreprocessor, open_image
from fashion_retrieval.data.records import Catalog

CACHE_LIMIT_BYTES = 2 * 1024**3


class PairDataset(Dataset):
    def __init__(
        self,
        catalog: Catalog,
        rows: np.ndarray,
        preprocess: ImagePreprocessor,
        full_keys: list[str],
        partial_keys: list[str],
    ) -> None:
        frame = catalog.frame.iloc[rows].reset_index(drop=True)
        self.paths = frame["path"].tolist()
        self.captions = frame["caption"].tolist()
        self.ids = frame["id"].tolist()
        self.full = [tuple(r) for r in frame[full_keys].itertuples(index=False)] if full_keys else None
        self.partial = [tuple(r) for r in frame[partial_keys].itertuples(index=False)] if partial_keys else None
        self.preprocess = preprocess
        item_bytes = 3 * preprocess.height * preprocess.width * 4
        self.cache: torch.Tensor | None = None
        if len(self.paths) * item_bytes <= CACHE_LIMIT_BYTES:
            self.cache = torch.from_numpy(np.stack([self._load(i) for i in range(len(self.paths))]))

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
