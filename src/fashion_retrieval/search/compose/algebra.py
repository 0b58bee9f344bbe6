"""Composed and refined queries as algebra over unit vectors: "like this, but in red", "not striped",
"more like these". Pure functions (numpy): no model and no store inside, so the searcher, the API and the
benchmark (``evaluate/compose.py``) share one implementation.

How a searcher uses it, for one request:

1. ``texts = compose_texts(modifier, reference_caption, negatives, editor=editor)`` says which texts
   the request needs (keys ``modifier``, ``reference``, ``composed``, ``negative:0`` ...). The reference
   caption is the item's own caption for a catalogue item; for an uploaded image, pass the caption of its
   nearest catalogue item (an image->caption search, top 1) as an *estimate*; with no caption at all, pass
   None and the composed methods fall back to the weighted sum. ``editor`` is a ``CaptionEditor`` built
   once from the catalogue's captions (``search/caption_edit.py``); without one the modifier is appended.
2. Encode ``list(texts.values())`` in one batch with the model, giving ``text_vecs`` (same keys).
3. ``query = compose_query(image_vec, text_vecs, method, weights)`` (negatives already subtracted),
   search the image vectors for ``weights.pool`` candidates.
4. If there are negatives: ``scores = penalize_negatives(candidate_vecs, scores, negative_vectors(text_vecs),
   weights)`` and re-sort the pool (``ranking.top_k_indices``).
5. Feedback: ``query = rocchio(query, liked_vecs, unliked_vecs, weights)`` with the image vectors of the
   items the user marked, then search again (drop the liked ones from what is shown, they are known).

Defaults (``DEFAULT_WEIGHTS``) were measured on the demo model and catalogue with held-out references
by ``fashion-retrieval eval --task compose`` (``benchmarks/compose.py``, results in
``benchmarks/results/compose.json``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np

from fashion_retrieval.search.caption_edit import CaptionEditor, append_modifier, mentions_any

log = logging.getLogger(__name__)

Method = Literal["image", "text", "sum", "delta", "caption"]
METHODS: tuple[str, ...] = ("image", "text", "sum", "delta", "caption")
MODIFIER, REFERENCE, COMPOSED, NEGATIVE = "modifier", "reference", "composed", "negative:"
NEEDS_IMAGE = frozenset({"image", "sum", "delta"})


@dataclass(frozen=True)
class ComposeWeights:
    """Every weight of the query algebra, with the defaults measured on the demo (see the module docstring).

    method            the composition used when a caller names none
    alpha             weighted sum: the text's share, q = alpha*t(modifier) + (1-alpha)*image
    delta             delta method: q = image + delta*(t(composed) - t(reference))
    negative_subtract q -= negative_subtract * sum_k t(negative_k) before searching (0: off)
    negative_penalty  on the candidate pool: s -= negative_penalty * sum_k excess_k (0: off)
    caption_mentions  on the candidate pool: an item whose caption mentions an excluded term (by word stem,
                      or a pattern synonym: "plain" finds "pure colour") ranks after every item that does not
    pool              candidates fetched before re-scoring negatives
    rocchio_query, rocchio_liked, rocchio_unliked
                      q' = a*q + b*mean(liked) - c*mean(unliked)

    Why these values (demo model, 200 held-out references, 3876 composed queries; Recall@10):
    - delta 1.0 with the caption editor: 0.601 (w 0.75: 0.503, 1.5: 0.598, 2.0: 0.525); the ``caption``
      method scores the same (0.607) but drops what only the picture shows (gender: 0.64 vs 0.88), and the
      delta degrades less with an estimated caption (0.593 vs 0.582): hence ``method="delta"``.
    - alpha 0.5: the weighted sum's best (0.177; 0.4: 0.159, 0.6: 0.148).
    - negative_penalty 1.0, no subtraction: "without <colour>" leaves 0.948 of the top 10 free of it at a
      cost of 2 points of the positive part's Recall@10; subtracting 0.5 clears 0.987 but costs 11 points,
      and a penalty of 2.0 costs 11 points where the model cannot see the attribute (patterns).
    - Rocchio 1 / 1 / 0.5: two liked results lift Recall@10 of the remaining targets 0.545 -> 0.849 (0.880
      with two unliked); larger liked weights gain a little more (2.0: 0.883) but drift from the query the
      user typed; an unliked weight at or above the liked one collapses (0.5 / 1.0: 0.543).
    """

    method: Method = "delta"
    alpha: float = 0.5
    delta: float = 1.0
    negative_subtract: float = 0.0
    negative_penalty: float = 1.0
    pool: int = 200
    rocchio_query: float = 1.0
    rocchio_liked: float = 1.0
    rocchio_unliked: float = 0.5
    caption_mentions: bool = True  # negatives: a candidate whose caption mentions the excluded term sinks

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r}: use one of {', '.join(METHODS)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        for name in (
            "delta",
            "negative_subtract",
            "negative_penalty",
            "rocchio_query",
            "rocchio_liked",
            "rocchio_unliked",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.pool < 1:
            raise ValueError(f"pool must be >= 1, got {self.pool}")

    def with_(self, **changes: object) -> ComposeWeights:
        """A copy with some weights changed (validated)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_WEIGHTS = ComposeWeights()


def normalize(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise along the last axis (float32); a zero vector stays zero instead of becoming NaN."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norm = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norm > 0, norm, 1.0)


def compose_texts(
    modifier: str | None = None,
    reference_caption: str | None = None,
    negatives: Sequence[str] = (),
    *,
    editor: CaptionEditor | None = None,
) -> dict[str, str]:
    """The texts a request needs encoded, by role.

    ``modifier``: what to change ("in red") or, for a plain text search, the query itself.
    ``reference``: the reference item's caption (known for catalogue items, estimated for uploads).
    ``composed``: the caption of the wanted item: the reference caption rewritten by the modifier
    (``editor``: "a blue dress" + "in red" -> "a red dress"), or the reference caption with the modifier
    appended when there is no editor. Only present when both a modifier and a reference caption are.
    ``negative:i``: each negative text as given ("stripes").
    """
    texts: dict[str, str] = {}
    modifier = (modifier or "").strip()
    reference = (reference_caption or "").strip()
    if modifier:
        texts[MODIFIER] = modifier
    if reference:
        texts[REFERENCE] = reference
    if modifier and reference:
        texts[COMPOSED] = editor.edit(reference, modifier).text if editor else append_modifier(reference, modifier)
    for i, negative in enumerate(n.strip() for n in negatives if n and n.strip()):
        texts[f"{NEGATIVE}{i}"] = negative
    return texts


def negative_vectors(text_vecs: Mapping[str, np.ndarray]) -> np.ndarray:
    """The negatives' vectors as a [K, D] matrix (K may be 0), in their ``negative:i`` order."""
    keys = sorted((k for k in text_vecs if k.startswith(NEGATIVE)), key=lambda k: int(k[len(NEGATIVE) :]))
    if not keys:
        dim = next(iter(text_vecs.values())).shape[-1] if text_vecs else 0
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack([np.asarray(text_vecs[k], dtype=np.float32) for k in keys])


def compose_query(
    image_vec: np.ndarray | None,
    text_vecs: Mapping[str, np.ndarray],
    method: Method | None = None,
    weights: ComposeWeights = DEFAULT_WEIGHTS,
) -> np.ndarray:
    """The unit query vector for ``method`` (``weights.method`` when None). Vectors may carry leading batch
    axes ([D] or [Q, D]); the result has the same shape.

    - ``image``:   q = v                        (the reference image alone)
    - ``text``:    q = t(m)                     (the modifier alone; a plain text search)
    - ``sum``:     q = alpha t(m) + (1 - alpha) v          (the baseline: today's hybrid)
    - ``delta``:   q = v + w (t(c) - t(r))      c = composed caption, r = reference caption. The text
                   difference is the direction in which the modifier changes the reference's description;
                   adding it to the image keeps everything the caption does not say (the picture's look)
                   and moves only what the modifier changes. Needs a reference caption; without one it
                   falls back to ``sum``.
    - ``caption``: q = t(c)                     (search with the wanted item's caption, as training-free
                   methods with a language model do; falls back to ``sum`` without a reference caption)

    Then, with negatives: q = q - negative_subtract * sum_k t(n_k). The result is L2-normalised.
    """
    method = method or weights.method
    if method not in METHODS:
        raise ValueError(f"method {method!r}: use one of {', '.join(METHODS)}")
    if method in ("delta", "caption") and (COMPOSED not in text_vecs or REFERENCE not in text_vecs):
        log.debug("%s needs a reference caption; using the weighted sum", method)
        method = "sum"
    if method in NEEDS_IMAGE and image_vec is None:
        if MODIFIER not in text_vecs:
            raise ValueError(f"method {method!r} needs a reference image")
        log.debug("%s without an image: searching with the modifier alone", method)
        method = "text"
    if method != "image" and MODIFIER not in text_vecs:
        raise ValueError(f"method {method!r} needs a modifier text")
    if method == "image":
        query = np.asarray(image_vec, dtype=np.float32)
    elif method == "text":
        query = np.asarray(text_vecs[MODIFIER], dtype=np.float32)
    elif method == "sum":
        query = weights.alpha * np.asarray(text_vecs[MODIFIER]) + (1 - weights.alpha) * np.asarray(image_vec)
    elif method == "delta":
        direction = np.asarray(text_vecs[COMPOSED]) - np.asarray(text_vecs[REFERENCE])
        query = np.asarray(image_vec) + weights.delta * direction
    else:
        query = np.asarray(text_vecs[COMPOSED], dtype=np.float32)
    negatives = negative_vectors(text_vecs)
    if weights.negative_subtract and len(negatives):
        query = normalize(query) - weights.negative_subtract * negatives.sum(axis=0)
    return normalize(query)


def penalize_negatives(
    candidate_vectors: np.ndarray,
    scores: np.ndarray,
    negative_vecs: np.ndarray,
    weights: ComposeWeights = DEFAULT_WEIGHTS,
) -> np.ndarray:
    """Re-score a candidate pool: s_i' = s_i - lambda * sum_k max(0, c_i . n_k - mean_j(c_j . n_k)).

    ``candidate_vectors`` [N, D] are the pool's image vectors, ``scores`` [N] their query scores,
    ``negative_vecs`` [K, D] the negatives' text vectors. The raw similarity of an image to a short text
    is shifted by the modality gap and by whatever the whole pool shares (every candidate of "a red dress"
    is a dress), so only the *excess* over the pool's own mean marks an item as having what is excluded.
    Items at or below the mean keep their score, which keeps the positive part's ranking intact; items far
    above it sink. A pool of one has no excess. Returns new scores (float32), the input is not changed.
    """
    scores = np.asarray(scores, dtype=np.float32)
    candidate_vectors = np.asarray(candidate_vectors, dtype=np.float32)
    negative_vecs = np.asarray(negative_vecs, dtype=np.float32).reshape(-1, candidate_vectors.shape[-1])
    if not weights.negative_penalty or not len(negative_vecs) or not len(scores):
        return scores.copy()
    similarity = candidate_vectors @ negative_vecs.T  # [N, K]
    excess = np.maximum(similarity - similarity.mean(axis=0, keepdims=True), 0.0)
    return (scores - weights.negative_penalty * excess.sum(axis=1)).astype(np.float32)


MENTION_PENALTY = 10.0  # larger than any cosine gap: an item described with the excluded term ranks after all others


def score_without(
    candidate_vectors: np.ndarray,
    scores: np.ndarray,
    captions: Sequence[str],
    negatives: Sequence[str],
    negative_vecs: np.ndarray,
    weights: ComposeWeights = DEFAULT_WEIGHTS,
) -> np.ndarray:
    """The pool's scores for "... without <negatives>": the embedding penalty (``penalize_negatives``) and,
    with ``weights.caption_mentions``, a candidate whose caption mentions a negative (by word stem:
    "stripes" finds "striped", "dots" finds "polka-dot"; or by a pattern synonym: "plain" finds "pure
    colour", "checked" finds "lattice") sinks below all that do not. The caption is the
    stronger signal where the model cannot see the attribute (patterns, on the demo model); the embedding
    catches what captions leave unsaid."""
    scores = penalize_negatives(candidate_vectors, scores, negative_vecs, weights)
    if weights.caption_mentions and len(negatives):
        described = np.array([mentions_any(c, negatives) for c in captions], dtype=bool)
        scores = scores - MENTION_PENALTY * described
    return scores.astype(np.float32)


def rocchio(
    query: np.ndarray,
    liked: np.ndarray | None = None,
    unliked: np.ndarray | None = None,
    weights: ComposeWeights = DEFAULT_WEIGHTS,
) -> np.ndarray:
    """Relevance feedback (Rocchio 1971): q' = normalize(a q + b mean(liked) - c mean(unliked)).

    ``liked``/``unliked`` are [L, D] image vectors of results the user marked "more like this" / "less like
    this" (either may be empty or None). The centroid of the liked items pulls the query toward what the
    user recognised as right, including what neither the picture nor the words said; the unliked centroid
    pushes away, with a smaller weight because one bad result says less about the target than a good one.
    """
    query = normalize(query)
    moved = weights.rocchio_query * query
    for vectors, sign, weight in ((liked, 1.0, weights.rocchio_liked), (unliked, -1.0, weights.rocchio_unliked)):
        if vectors is not None and len(vectors) and weight:
            moved = moved + sign * weight * normalize(np.asarray(vectors).reshape(-1, query.shape[-1])).mean(axis=0)
    return normalize(moved)


__all__ = [
    "COMPOSED",
    "DEFAULT_WEIGHTS",
    "METHODS",
    "MODIFIER",
    "NEGATIVE",
    "REFERENCE",
    "ComposeWeights",
    "Method",
    "compose_query",
    "compose_texts",
    "negative_vectors",
    "normalize",
    "penalize_negatives",
    "rocchio",
    "score_without",
]
