"""``fashion-retrieval eval --task compose``: an offline benchmark of composed and refined queries.

Over an embeddings folder of a catalogue with attributes, and the model that made it (to encode the
modifier texts), it measures the query algebra of ``search/compose/algebra.py`` on three tasks:

- **composed**: triplets (reference item, modifier changing one attribute, targets; ``compose_tasks.py``).
  Recall@K (a target in the top K) per changed attribute and overall, for the image alone, the modifier
  alone, the weighted sum at its best alpha, and the new methods (delta and caption, with the caption
  rewritten by the catalogue-learned editor, appended without it, or estimated for an uploaded image).
  The reference item itself is left out of each ranking: the user has it already.
- **negatives**: "X without Y": X describes a reference on every attribute but one (``ComposeMapping.
  description``), Y is that attribute's value most frequent in X's own top 10 (what the user sees and
  wants gone). Share of the top 10 free of Y, and Recall@10 of the positive part (items matching X) with
  and without the negative, per method.
- **feedback**: after the default composed query, the user marks the first 2 targets of its top 50 as
  liked (and the first 2 non-targets of its top 10 as unliked); Recall@10 of the remaining targets before
  and after one Rocchio step, with every judged item left out of both rankings (residual ranking).

Every reported figure at the weights it names; a sweep of each weight is in ``sweep``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from fashion_retrieval.embeddings import EmbeddingSet, load_embeddings
from fashion_retrieval.errors import FashionRetrievalError
from fashion_retrieval.evaluate.compose_negatives import negative_queries
from fashion_retrieval.evaluate.compose_tasks import (
    ComposeMapping,
    Triplet,
    build_triplets,
    first_target_ranks,
    synthetic_mapping,
)
from fashion_retrieval.evaluate.evaluate import EvalConfig, query_rows
from fashion_retrieval.ranking import top_k_indices
from fashion_retrieval.search.caption_edit import CaptionEditor, append_modifier
from fashion_retrieval.search.compose.algebra import (
    COMPOSED,
    DEFAULT_WEIGHTS,
    MODIFIER,
    REFERENCE,
    ComposeWeights,
    compose_query,
    rocchio,
)

log = logging.getLogger(__name__)
CHUNK = 512
ALPHAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DELTAS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
LIKED = (0.5, 1.0, 1.5, 2.0, 3.0)
UNLIKED = (0.0, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class ComposeEvalConfig:
    embeddings: str
    base: str | None = None  # None: the model recorded in the embeddings folder
    checkpoint: str | None = None
    lora_alpha: float | None = None
    device: str = "auto"
    query_ids: str | None = None  # file of ids: only these items are references (held-out)
    mapping: str | None = None  # JSON (ComposeMapping.from_json); None: the synthetic catalogue's
    references: int | None = None  # sample at most N references
    seed: int = 0
    ks: tuple[int, ...] = (10, 50)
    marked: int = 2  # feedback: liked results marked in the first query's top ``depth``
    depth: int = 50
    sweeps: bool = True  # False: only the defaults and the baselines (the demo's quick look)

    def to_dict(self) -> dict:
        return asdict(self)


def _load_encoder(config: ComposeEvalConfig, data: EmbeddingSet):
    from fashion_retrieval.identity import ensure_same_model
    from fashion_retrieval.model.encoder import FashionEmbeddingModel

    recorded = data.identity or {}
    base = config.base or recorded.get("base")
    if not base:
        raise FashionRetrievalError(f"{data.folder} records no model: pass --base (and --checkpoint)")
    checkpoint = config.checkpoint
    if checkpoint is None and recorded.get("base") == base:
        checkpoint = recorded.get("checkpoint")
    alpha = config.lora_alpha if config.lora_alpha is not None else (recorded.get("lora_alpha") or 32.0)
    encoder = FashionEmbeddingModel(checkpoint, base, config.device, lora_alpha=alpha)
    ensure_same_model(recorded, encoder.identity, str(data.folder))
    return encoder


class _Texts:
    """Encodes each distinct text once, in batches, and hands back vectors in the order asked."""

    def __init__(self, encode: Callable[[list[str]], np.ndarray]) -> None:
        self.encode, self.vectors = encode, {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if new:
            self.vectors.update(zip(new, self.encode(new), strict=True))
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32)


def _recall(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    return {f"recall@{k}": round(float(np.mean(ranks <= k)), 4) for k in ks}


def _summary(ranks: np.ndarray, triplets: Sequence[Triplet], ks: Sequence[int]) -> dict:
    by = np.array([t.attribute for t in triplets])
    return {
        **_recall(ranks, ks),
        "by_attribute": {
            a: {**_recall(ranks[by == a], ks), "triplets": int((by == a).sum())} for a in dict.fromkeys(by)
        },
    }


def _ranks(queries: np.ndarray, gallery: np.ndarray, triplets: Sequence[Triplet]) -> np.ndarray:
    out = []
    for start in range(0, len(triplets), CHUNK):
        chunk = triplets[start : start + CHUNK]
        scores = queries[start : start + CHUNK] @ gallery.T
        out.append(first_target_ranks(scores, chunk, [np.array([t.reference]) for t in chunk]))
    return np.concatenate(out) if out else np.zeros(0)


def _composed(data, triplets, texts, editor, weights, ks, sweeps=True) -> tuple[dict, dict, dict[str, np.ndarray]]:
    """Every method on the triplets; returns (methods, sweep, the vectors the other tasks reuse)."""
    image, captions, caption_vecs = data.image_embeddings, data.metadata["caption"], data.text_embeddings
    refs = np.array([t.reference for t in triplets])
    vecs = {MODIFIER: texts([t.modifier for t in triplets])}
    image_vecs = image[refs]
    methods: dict[str, dict] = {}
    sweep: dict[str, dict] = {}

    def score(query: np.ndarray) -> dict:
        return _summary(_ranks(query, image, triplets), triplets, ks)

    methods["image only"] = score(compose_query(image_vecs, {}, "image"))
    methods["text only"] = score(compose_query(None, vecs, "text"))
    alphas = ALPHAS if sweeps else (weights.alpha,)
    sums = {a: score(compose_query(image_vecs, vecs, "sum", weights.with_(alpha=a))) for a in alphas}
    best_alpha = max(alphas, key=lambda a: (sums[a]["recall@10"], -abs(a - 0.5)))
    methods[f"weighted sum (alpha {best_alpha})"] = sums[best_alpha]
    sweep["sum alpha -> recall@10"] = {str(a): s["recall@10"] for a, s in sums.items()}
    if caption_vecs is None:
        log.warning("%s has no captions: only the image, text and weighted-sum methods run", data.folder)
        return methods, sweep, {"query": compose_query(image_vecs, vecs, "sum", weights.with_(alpha=best_alpha))}
    own = caption_vecs[refs]
    # an uploaded image has no caption: estimate it as the nearest *other* item's caption (image -> caption)
    nearest = np.empty(len(refs), dtype=np.int64)
    for start in range(0, len(refs), CHUNK):
        scores = image_vecs[start : start + CHUNK] @ caption_vecs.T
        scores[np.arange(len(scores)), refs[start : start + CHUNK]] = -np.inf
        nearest[start : start + CHUNK] = top_k_indices(scores, 1)[:, 0]
    variants = {
        "appended": (own, [append_modifier(captions[t.reference], t.modifier) for t in triplets]),
        "edited": (own, [editor.edit(captions[t.reference], t.modifier).text for t in triplets]),
        "estimated caption, edited": (
            caption_vecs[nearest],
            [editor.edit(captions[n], t.modifier).text for n, t in zip(nearest, triplets, strict=True)],
        ),
    }
    edited_share = np.mean([not editor.edit(captions[t.reference], t.modifier).appended for t in triplets])
    log.info("caption editor substituted every modifier word in %.0f%% of the triplets", 100 * edited_share)
    kept = {}
    for label, (reference, composed) in variants.items():
        if not sweeps and label != "edited":
            continue
        v = {**vecs, REFERENCE: reference, COMPOSED: texts(composed)}
        methods[f"delta ({label}, w {weights.delta})"] = score(compose_query(image_vecs, v, "delta", weights))
        methods[f"caption ({label})"] = score(compose_query(image_vecs, v, "caption", weights))
        sweep[f"delta ({label}) w -> recall@10"] = {
            str(w): score(compose_query(image_vecs, v, "delta", weights.with_(delta=w)))["recall@10"]
            for w in (DELTAS if sweeps else ())
        }
        kept[label] = v
    default = compose_query(image_vecs, kept["edited"], weights.method, weights)
    return methods, sweep, {"query": default, "edited_share": np.array(edited_share)}


def _feedback(data, triplets, first_query, weights, config: ComposeEvalConfig) -> dict:
    """One round of Rocchio feedback on the default composed query (residual ranking)."""
    image = data.image_embeddings
    rows, judged, liked, unliked = [], [], [], []
    for i, t in enumerate(triplets):
        scores = image @ first_query[i]
        scores[t.reference] = -np.inf
        top = top_k_indices(scores, config.depth)
        is_target = np.isin(top, t.targets)
        marked = top[is_target][: config.marked]
        rejected = top[:10][~is_target[:10]][:2]
        if len(marked) and len(np.setdiff1d(t.targets, marked)):
            rows.append(i)
            liked.append(marked)
            unliked.append(rejected)
            judged.append(np.concatenate([[t.reference], marked, rejected]))
    subset = [triplets[i] for i in rows]

    def recall10(queries: list[np.ndarray]) -> float:
        if not queries:
            return float("nan")
        scores = np.stack(queries) @ image.T
        return round(float(np.mean(first_target_ranks(scores, subset, judged) <= 10)), 4)

    before = recall10([first_query[i] for i in rows])
    sweep = {}
    for b in LIKED if config.sweeps else ():
        for c in UNLIKED:
            w = weights.with_(rocchio_liked=b, rocchio_unliked=c)
            qs = [
                rocchio(first_query[i], image[lk], image[un], w) for i, lk, un in zip(rows, liked, unliked, strict=True)
            ]
            sweep[f"liked {b}, unliked {c}"] = recall10(qs)
    liked_only = [rocchio(first_query[i], image[lk], None, weights) for i, lk in zip(rows, liked, strict=True)]
    both = [
        rocchio(first_query[i], image[lk], image[un], weights) for i, lk, un in zip(rows, liked, unliked, strict=True)
    ]
    return {
        "queries": len(rows),
        "marked_liked": config.marked,
        "recall@10_before": before,
        "recall@10_after_liked": recall10(liked_only),
        "recall@10_after_liked_and_unliked": recall10(both),
        "sweep recall@10": sweep,
    }


def evaluate_compose(config: ComposeEvalConfig, *, encoder=None, weights: ComposeWeights = DEFAULT_WEIGHTS) -> dict:
    """Run the three tasks; ``encoder`` (a FashionEmbeddingModel) saves loading the model again."""
    data = load_embeddings(config.embeddings)
    mapping = ComposeMapping.from_json(config.mapping) if config.mapping else synthetic_mapping()
    references = query_rows(
        data, EvalConfig(config.embeddings, queries=config.references, seed=config.seed, query_ids=config.query_ids)
    )
    triplets = build_triplets(data.metadata, mapping, references)
    if not triplets:
        raise FashionRetrievalError(f"{config.embeddings}: no reference has a target for any modifier")
    encoder = encoder or _load_encoder(config, data)
    texts = _Texts(lambda batch: encoder.encode_batch_texts(batch, batch_size=256))
    editor = CaptionEditor.from_captions(data.metadata["caption"]) if data.text_embeddings is not None else None
    methods, sweep, kept = _composed(data, triplets, texts, editor, weights, config.ks, config.sweeps)
    baselines = [m for m in methods if m.startswith(("image only", "text only", "weighted sum"))]
    new = [m for m in methods if m not in baselines]
    best_baseline = max(baselines, key=lambda m: methods[m]["recall@10"])
    best_new = max(new, key=lambda m: methods[m]["recall@10"]) if new else None
    report = {
        "task": "compose",
        "embeddings": str(data.folder),
        "model": data.identity.get("key"),
        "query_dtype": str(getattr(encoder, "dtype", "")).replace("torch.", ""),
        "references": len(references),
        "triplets": len(triplets),
        "gallery": len(data),
        "methods": methods,
        "best_baseline": best_baseline,
        "best_new_method": best_new,
        "gain_recall@10": round(methods[best_new]["recall@10"] - methods[best_baseline]["recall@10"], 4)
        if best_new
        else None,
        "caption_edit_share": round(float(kept.get("edited_share", np.nan)), 4),
        "negatives": negative_queries(data, mapping, references, texts, weights, config.sweeps),
        "feedback": _feedback(data, triplets, kept["query"], weights, config),
        "weights": weights.to_dict(),
        "sweep": sweep,
        "mapping": mapping.to_dict(),
        "config": config.to_dict(),
    }
    return report


def format_compose_report(report: dict) -> str:
    """The report as the plain-text table the CLI prints."""
    lines = [
        f"{report['triplets']} composed queries from {report['references']} references, gallery {report['gallery']}"
    ]
    attributes = list(next(iter(report["methods"].values()))["by_attribute"])
    lines.append(f"  {'method':<42} {'R@10':>6} {'R@50':>6}  " + "  ".join(f"{a[:8]:>8}" for a in attributes))
    for name, m in report["methods"].items():
        per = "  ".join(f"{m['by_attribute'].get(a, {}).get('recall@10', float('nan')):>8.3f}" for a in attributes)
        lines.append(f"  {name:<42} {m['recall@10']:>6.3f} {m.get('recall@50', float('nan')):>6.3f}  {per}")
    lines.append(
        f"  best new method {report['best_new_method']!r} vs best baseline {report['best_baseline']!r}: "
        f"{report['gain_recall@10']:+.3f} Recall@10"
    )
    for attribute, neg in report["negatives"].items():
        lines.append(
            f"negatives on {attribute} ({neg['queries']} queries, e.g. {neg['example']!r}; "
            f"separability AUC {neg['separability_auc']}):"
        )
        for name, m in neg.items():
            if isinstance(m, dict):
                lines.append(
                    f"  {name:<28} free of Y@10 {m['free_of_y@10']:.3f}  R@10 {m['recall@10']:.3f}  "
                    f"R@10 (not Y) {m['recall@10_not_y']:.3f}  P@10 {m['precision@10']:.3f}"
                )
    fb = report["feedback"]
    lines.append(
        f"feedback ({fb['queries']} queries, {fb['marked_liked']} liked): Recall@10 "
        f"{fb['recall@10_before']:.3f} -> {fb['recall@10_after_liked']:.3f} "
        f"(with 2 unliked {fb['recall@10_after_liked_and_unliked']:.3f})"
    )
    return "\n".join(lines)


__all__ = ["ComposeEvalConfig", "evaluate_compose", "format_compose_report"]
