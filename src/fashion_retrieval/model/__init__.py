"""Model loading (every checkpoint format, LoRA merged) and the embedding API."""

from fashion_retrieval.model.checkpoint import Checkpoint, read_checkpoint
from fashion_retrieval.model.encoder import FashionEmbeddingModel
from fashion_retrieval.model.loading import LoadedModel, load_model

__all__ = ["Checkpoint", "FashionEmbeddingModel", "LoadedModel", "load_model", "read_checkpoint"]
