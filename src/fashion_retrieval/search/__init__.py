"""Search over a vector store: text, image, hybrid, composed, filters, ITM rerank; queries as values for batching.

The public names are exported once, by ``fashion_retrieval`` itself."""
