"""fashion-retrieval: multimodal fashion search on a fine-tuned BLIP model.

The public API is imported lazily, so ``import fashion_retrieval`` stays light (no torch until used).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fashion_retrieval.version import __version__

_EXPORTS = {
    "FashionEmbeddingModel": "fashion_retrieval.model.encoder",
    "load_model": "fashion_retrieval.model.loading",
    "read_checkpoint": "fashion_retrieval.model.checkpoint",
    "ModelIdentity": "fashion_retrieval.identity",
    "create_dataset_embeddings": "fashion_retrieval.pipeline.embed",
    "embed_catalog": "fashion_retrieval.pipeline.embed",
    "load_embeddings": "fashion_retrieval.embeddings",
    "EmbeddingSet": "fashion_retrieval.embeddings",
    "read_catalog": "fashion_retrieval.data.records",
    "make_catalog": "fashion_retrieval.data.synthetic",
    "open_store": "fashion_retrieval.store",
    "Searcher": "fashion_retrieval.search.searcher",
    "SearchResponse": "fashion_retrieval.search.base",
    "ComposeWeights": "fashion_retrieval.search.compose",
    "open_searcher": "fashion_retrieval.search.searcher",
    "create_app": "fashion_retrieval.serve.app",
    "evaluate_embeddings": "fashion_retrieval.evaluate.evaluate",
    "train": "fashion_retrieval.train.loop",
    "FashionRetrievalError": "fashion_retrieval.errors",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from fashion_retrieval.model.encoder import FashionEmbeddingModel  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fashion_retrieval' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
