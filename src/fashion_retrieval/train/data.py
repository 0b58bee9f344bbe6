"""Training data: (pixels, caption, attribute keys) from a catalogue, decoded once into memory when small.

Unreadable images are handled as the embedding pipeline handles them: ``on_error="skip"`` leaves the item
out and lists it (id, path, reason) in ``failures``; ``"fail"`` raises at the first one.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

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
        group_keys: tuple[str, ...] = (),
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
        self.groups = {name: frame[name].astype(str).tolist() for name in group_keys}  # for GroupedBatches
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


class GroupedBatches(Sampler[list[int]]):
    """Batches drawn from a few values of one attribute at a time, the attribute changing from batch to batch
    (e.g. 4 colours, then 4 garments): the in-batch negatives then share the batch's attribute and differ in the
    others (a red dress beside red shirts and red trousers), the contrasts a fashion search must learn, which
    uniform batches of a large catalogue rarely hold. Deterministic per epoch (``set_epoch``)."""

    def __init__(self, values: dict[str, list[str]], batch_size: int, groups: int = 4, seed: int = 0) -> None:
        self.values, self.batch_size, self.groups, self.seed = values, batch_size, groups, seed
        self.items = len(next(iter(values.values())))
        self.members = {
            name: {v: np.flatnonzero(np.asarray(column) == v) for v in sorted(set(column))}
            for name, column in values.items()
        }
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.items // self.batch_size

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        names = list(self.members)
        for index in range(len(self)):
            members = self.members[names[index % len(names)]]
            chosen = rng.choice(list(members), size=min(self.groups, len(members)), replace=False)
            pool = np.concatenate([members[v] for v in chosen])
            yield rng.choice(pool, size=self.batch_size, replace=len(pool) < self.batch_size).tolist()
