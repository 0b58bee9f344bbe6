"""The negative task of ``eval --task compose`` (``evaluate/compose.py``): "X without Y".

X describes a reference on every attribute but one (``ComposeMapping.description``); Y is that attribute's value
most frequent in X's own top 10 (what the user sees and wants gone). Reported per method: the share of the top 10
free of Y, and Recall@10 of the positive part (items matching X) with and without the negative; and how well the
model can see Y at all (a ROC AUC).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fashion_retrieval.evaluate.compose_tasks import attribute_matrix
from fashion_retrieval.ranking import top_k_indices
from fashion_retrieval.search.compose.algebra import MODIFIER, NEGATIVE, ComposeWeights, compose_query, score_without

SUBTRACTS = (0.25, 0.5, 1.0)
PENALTIES = (0.5, 1.0, 2.0, 4.0)


def negative_queries(data, mapping, references, texts, weights, sweeps=True) -> dict:
    """'X without Y' for each reference and each negative attribute (see the module docstring)."""
    values, names = attribute_matrix(data.metadata, mapping), list(mapping.attributes)
    image = data.image_embeddings
    out: dict[str, dict] = {}
    captions = data.metadata["caption"].astype(str).to_numpy()
    variants = _negative_variants(weights, sweeps)
    for attribute in mapping.negative_attributes:
        a = names.index(attribute)
        others = np.delete(np.arange(len(names)), a)
        terms = mapping.attributes[attribute].terms
        xs = [mapping.description(dict(zip(names, values[r], strict=True)), omit=attribute) for r in references]
        x_vecs = texts(xs)
        totals = {name: [] for name in variants}
        chosen = []
        for i, r in enumerate(references):
            y = _most_seen_term(image @ x_vecs[i], r, values[:, a], terms)
            if y is None:
                continue
            chosen.append(y)
            positive = (values[:, others] == values[r, others]).all(axis=1)
            positive[r] = False
            free = values[:, a] != y
            text_vecs = {MODIFIER: x_vecs[i], f"{NEGATIVE}0": texts([terms[y]])[0]}
            for name, w in variants.items():
                top = _top10_without(image, captions, text_vecs, r, terms[y], w)
                totals[name].append(
                    (free[top].mean(), positive[top].any(), (positive & free)[top].any(), positive[top].mean())
                )
        out[attribute] = {
            "queries": len(chosen),
            "separability_auc": _separability(image, values[:, a], chosen, terms, texts),
            "example": f"{xs[0]} | without {terms.get(chosen[0], '')}" if chosen else None,
            **_negative_means(totals),
        }
    return out


def _negative_variants(weights: ComposeWeights, sweeps: bool) -> dict[str, ComposeWeights]:
    """The weights each negative method runs at: none, the default, and (with ``sweeps``) each subtract/penalty."""
    variants = {"no negative": weights.with_(negative_subtract=0.0, negative_penalty=0.0, caption_mentions=False)}
    variants["embedding only (penalty 1.0)"] = weights.with_(caption_mentions=False)
    embedding = weights.with_(caption_mentions=False)  # the sweeps measure the embedding signal alone
    variants.update({f"subtract {s}": embedding.with_(negative_subtract=s, negative_penalty=0.0) for s in SUBTRACTS})
    variants.update({f"penalty {p}": embedding.with_(negative_subtract=0.0, negative_penalty=p) for p in PENALTIES})
    variants.update(
        {
            f"subtract 0.25 + penalty {p}": embedding.with_(negative_subtract=0.25, negative_penalty=p)
            for p in (1.0, 2.0)
        }
    )
    variants["default"] = weights
    if not sweeps:
        variants = {name: variants[name] for name in ("no negative", "default")}
    return variants


def _most_seen_term(scores: np.ndarray, reference: int, column: np.ndarray, terms: Mapping[str, str]) -> str | None:
    """Y: the value (one with a term) most frequent in the top 10 of X, the reference left out; None if none has."""
    scores[reference] = -np.inf
    counts: dict[str, int] = {}
    for v in column[top_k_indices(scores, 10)]:
        if v in terms:
            counts[v] = counts.get(v, 0) + 1
    if not counts:
        return None
    return max(counts, key=lambda v: counts[v])  # max keeps the first-seen value among ties


def _top10_without(
    image: np.ndarray, captions: np.ndarray, text_vecs: dict, reference: int, y_term: str, w: ComposeWeights
) -> np.ndarray:
    """The top 10 rows for 'X without Y' at weights ``w``: a pool by embedding, rescored with the negative."""
    scores = image @ compose_query(None, text_vecs, "text", w)
    scores[reference] = -np.inf
    pool = top_k_indices(scores, w.pool)
    negative = text_vecs[f"{NEGATIVE}0"][None]
    rescored = score_without(image[pool], scores[pool], captions[pool], [y_term], negative, w)
    return pool[top_k_indices(rescored, 10)]


def _negative_means(totals: dict[str, list[tuple]]) -> dict[str, dict[str, float]]:
    """Per method, the mean over queries of (share free of Y, recall, recall free of Y, precision) in the top 10."""
    return {
        name: dict(
            zip(
                ("free_of_y@10", "recall@10", "recall@10_not_y", "precision@10"),
                (round(float(x), 4) for x in np.mean(rows, axis=0)),
                strict=True,
            )
        )
        for name, rows in totals.items()
        if rows
    }


def _separability(image: np.ndarray, column: np.ndarray, chosen: Sequence[str], terms, texts) -> float | None:
    """Mean over the excluded values Y of the ROC AUC with which sim(image, t(Y)) tells items with Y from
    the rest of the gallery: 0.5 means the model cannot see Y at all, and then no negative can remove it."""
    aucs = []
    for y in dict.fromkeys(chosen):
        has = column == y
        if 0 < has.sum() < len(has):
            ranks = np.argsort(np.argsort(image @ texts([terms[y]])[0], kind="stable"), kind="stable") + 1.0
            n_pos = has.sum()
            aucs.append((ranks[has].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(has) - n_pos)))
    return round(float(np.mean(aucs)), 4) if aucs else None


__all__ = ["negative_queries"]
