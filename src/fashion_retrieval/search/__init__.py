"""Search over a vector store: text, image, hybrid, filters, ITM rerank."""

from fashion_retrieval.search.fusion import rrf
from fashion_retrieval.search.searcher import Searcher, SearchResponse, open_searcher

__all__ = ["SearchResponse", "Searcher", "open_searcher", "rrf"]
