"""Composed and refined search: "like this, but in red", "not striped", "more like these".

``algebra`` is the query algebra over unit vectors (pure numpy: weights, composition, negatives, feedback),
shared by the searcher, the API and the benchmark; ``request`` is the ``ComposeQuery`` search request that
applies it to a store. The public names of both are re-exported here.
"""

from fashion_retrieval.search.compose.algebra import (
    COMPOSED,
    DEFAULT_WEIGHTS,
    METHODS,
    MODIFIER,
    NEGATIVE,
    REFERENCE,
    ComposeWeights,
    Method,
    compose_query,
    compose_texts,
    negative_vectors,
    normalize,
    penalize_negatives,
    rocchio,
    score_without,
)
from fashion_retrieval.search.compose.request import ComposeQuery, exclude_negatives

__all__ = [
    "COMPOSED",
    "DEFAULT_WEIGHTS",
    "METHODS",
    "MODIFIER",
    "NEGATIVE",
    "REFERENCE",
    "ComposeQuery",
    "ComposeWeights",
    "Method",
    "compose_query",
    "compose_texts",
    "exclude_negatives",
    "negative_vectors",
    "normalize",
    "penalize_negatives",
    "rocchio",
    "score_without",
]
