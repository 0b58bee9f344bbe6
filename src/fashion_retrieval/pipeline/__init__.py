"""The embedding pipeline: catalogue -> embeddings folder (in this process, or on Ray Data)."""

from fashion_retrieval.pipeline.embed import create_dataset_embeddings, embed_catalog

__all__ = ["create_dataset_embeddings", "embed_catalog"]
