"""The embedding pipeline: catalogue -> embeddings folder (in this process, or on Ray Data).

Imported lazily: Ray's decoding tasks import ``pipeline.ray_engine`` (and so this package) without torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_dataset_embeddings", "embed_catalog"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from fashion_retrieval.pipeline import embed

        return getattr(embed, name)
    raise AttributeError(f"module 'fashion_retrieval.pipeline' has no attribute {name!r}")
