"""``fashion-retrieval eval``: retrieval quality of an embeddings folder (Recall@K, MRR, ranks, breakdowns)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fashion_retrieval.embeddings import EmbeddingSet, load_embeddings
from fashion_retrieval.errors import FashionRetrievalError
from fashion_retrieval.evaluate.metrics import recall_report, retrieval_ranks, summarize
from fashion_retrieval.ranking import top_k_indices

BREAKDOWN_MAX_VALUES = 50


@dataclass(frozen=True)
class EvalConfig:
    embeddings: str
    ks: tuple[int, ...] = (1, 5, 10)
    relevance: str = "pair"  # or "attributes:gender,product_type"
    protocol: str = "full"  # or "marqo"
    queries: int | None = None
    seed: int = 0
    query_ids: str | None = None  # a file with one id per line: only these items are queries
    precision_attributes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


def relevance_keys(data: EmbeddingSet, relevance: str) -> list:
    """The key whose equality makes a gallery item relevant to a query: its id, or attribute values."""
    meta = data.metadata
    if relevance == "pair":
        return meta["id"].tolist()
    name, _, fields = relevance.partition(":")
    attributes = [f for f in fields.split(",") if f]
    if name != "attributes" or not attributes:
        raise FashionRetrievalError(f"--relevance {relevance!r}: use pair or attributes:field1,field2")
    missing = [a for a in attributes if a not in meta.columns]
    if missing:
        raise FashionRetrievalError(
            f"--relevance: unknown attribute(s) {', '.join(missing)}; "
            f"known: {', '.join(c for c in meta.columns if c not in ('path', 'caption'))}"
        )
    return [tuple(r) for r in meta[attributes].astype(str).itertuples(index=False)]


def query_rows(data: EmbeddingSet, config: EvalConfig) -> np.ndarray:
    rows = np.arange(len(data))
    if config.query_ids:
        wanted = {line.strip() for line in Path(config.query_ids).read_text().splitlines() if line.strip()}
        rows = np.flatnonzero(data.metadata["id"].isin(wanted).to_numpy())
        if not len(rows):
            raise FashionRetrievalError(f"{config.query_ids}: none of its ids are in {data.folder}")
    limit = config.queries or (2000 if config.protocol == "marqo" else None)
    if config.protocol not in ("full", "marqo"):
        raise FashionRetrievalError(f"--protocol {config.protocol!r}: use full or marqo")
    if limit and limit < len(rows):
        rows = np.sort(np.random.default_rng(config.seed).choice(rows, size=limit, replace=False))
    return rows


def attribute_precision(data: EmbeddingSet, rows: np.ndarray, attributes: Sequence[str], k: int = 10) -> float:
    """Mean share of each text query's top-k images whose ``attributes`` all equal the query item's."""
    meta = data.metadata
    keys = np.array(["\x1f".join(r) for r in meta[list(attributes)].astype(str).itertuples(index=False)])
    scores = data.text_embeddings[rows] @ data.image_embeddings.T
    top = top_k_indices(scores, k)
    return float(np.mean(keys[top] == keys[rows][:, None]))


def evaluate_embeddings(config: EvalConfig) -> dict:
    data = load_embeddings(config.embeddings)
    if data.text_embeddings is None:
        raise FashionRetrievalError(f"{config.embeddings} has no caption embeddings (an image-only catalogue)")
    keys = relevance_keys(data, config.relevance)
    rows = query_rows(data, config)
    report = recall_report(data.image_embeddings, data.text_embeddings, keys, config.ks, rows)
    ranks = report.pop("_ranks")
    report.update(
        {
            "relevance": config.relevance,
            "protocol": config.protocol,
            "embeddings": str(data.folder),
            "model": data.identity.get("key"),
        }
    )
    breakdown: dict[str, dict[str, dict]] = {}
    meta = data.metadata.iloc[rows].reset_index(drop=True)
    for attribute in [c for c in meta.columns if c not in ("id", "path", "caption", "placeholder")]:
        values = meta[attribute].astype(str)
        if 1 < values.nunique() <= BREAKDOWN_MAX_VALUES:
            breakdown[attribute] = {
                value: {
                    **summarize(ranks["text_to_image"][(values == value).to_numpy()], config.ks),
                    "queries": int((values == value).sum()),
                }
                for value in sorted(values.unique())
            }
    report["breakdown_text_to_image"] = breakdown
    if config.precision_attributes:
        name = "attribute_precision@10[" + ",".join(config.precision_attributes) + "]"
        report[name] = attribute_precision(data, rows, config.precision_attributes)
    return report


__all__ = ["EvalConfig", "evaluate_embeddings", "retrieval_ranks"]
