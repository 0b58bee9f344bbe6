"""Search over a vector store: text, image, hybrid, filters, ITM rerank; queries as values for batching."""

from fashion_retrieval.search.fusion import rrf
from fashion_retrieval.search.queries import HybridQuery, ImageQuery, Query, SearchResponse, TextQuery
from fashion_retrieval.search.searcher import Searcher, open_searcher

__all__ = ["HybridQuery", "ImageQuery", "Query", "SearchResponse", "Searcher", "TextQuery", "open_searcher", "rrf"]
