"""Model loading (every checkpoint format, LoRA merged), precision choice, and the embedding API.

The public names are exported once, by ``fashion_retrieval`` itself."""
