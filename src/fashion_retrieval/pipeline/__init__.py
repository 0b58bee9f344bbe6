"""The embedding pipeline: catalogue -> embeddings folder (in this process, or on Ray Data).

Nothing is imported here: Ray's decoding tasks import ``pipeline.ray_engine`` (and so this package) without
torch. The public names are exported once, by ``fashion_retrieval`` itself."""
