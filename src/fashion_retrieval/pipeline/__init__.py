"""The embedding pipeline and the embeddings folder it writes."""

from fashion_retrieval.pipeline.embed import create_dataset_embeddings, embed_catalog
from fashion_retrieval.pipeline.writer import EmbeddingSet, load_embeddings

__all__ = ["EmbeddingSet", "create_dataset_embeddings", "embed_catalog", "load_embeddings"]
