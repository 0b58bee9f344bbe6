"""One searcher over any store: text->image, image->image, image->text, hybrid, filters, ITM rerank."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from fashion_retrieval.data.images import ImageInput
from fashion_retrieval.errors import FashionRetrievalError, ModelMismatchError, QueryError
from fashion_retrieval.identity import ModelIdentity, ensure_same_model
from fashion_retrieval.ranking import top_k_indices
from fashion_retrieval.search.fusion import rrf
from fashion_retrieval.store.base import Filters, Hit, VectorStore

Against = Literal["image", "text"]
Fusion = Literal["weighted", "rrf"]
MAX_TOP_K = 1000
CANDIDATES = 100  # per list, for RRF and for weighted fusion across two vector fields


@dataclass
class SearchResponse:
    query: dict
    results: list[Hit]
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "query": self.query,
            "results": [h.to_dict() for h in self.results],
            "seconds": self.seconds,
            **self.extra,
        }


def ensure_comparable_precision(stored: dict | None, query: dict, what: str) -> None:
    """Vectors computed in one dtype may be queried in another only where a parity probe showed that this
    model keeps its rankings across the two (recorded by the automatic choice on either side)."""
    if not stored or stored.get("dtype") == query.get("dtype"):
        return
    dtypes = {stored.get("dtype"), query.get("dtype")}
    verified = dtypes == {"float32", "bfloat16"} and any((p.get("parity") or {}).get("passed") for p in (stored, query))
    if not verified:
        raise ModelMismatchError(
            f"{what} holds {stored.get('dtype')} vectors and the query model runs in {query.get('dtype')}, and no "
            "parity check showed that this model ranks alike in both: pass --dtype "
            f"{'fp32' if stored.get('dtype') == 'float32' else 'auto'}, or re-embed in {query.get('dtype')}"
        )


def _check_top_k(top_k: int) -> int:
    if not 1 <= int(top_k) <= MAX_TOP_K:
        raise QueryError(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
    return int(top_k)


class Searcher:
    """Encodes queries with the model the store was built with, and searches the store."""

    def __init__(self, store: VectorStore, encoder) -> None:
        recorded = store.identity()
        if recorded:
            ensure_same_model(recorded, encoder.identity, store.description)
        ensure_comparable_precision(store.precision(), encoder.precision.to_dict(), store.description)
        self.store = store
        self.encoder = encoder

    @classmethod
    def open(
        cls,
        store: VectorStore,
        *,
        base: str | None = None,
        checkpoint: str | None = None,
        lora_alpha: float | None = None,
        device: str | None = "auto",
        dtype: str | None = "auto",
    ) -> Searcher:
        """Load the query model from the store's recorded identity unless given, then check they agree."""
        from fashion_retrieval.model.encoder import FashionEmbeddingModel

        recorded = store.identity() or {}
        base = base or recorded.get("base")
        if not base:
            raise FashionRetrievalError(f"{store.description} records no model: pass --base (and --checkpoint)")
        if checkpoint is None and recorded.get("base") == base:
            checkpoint = recorded.get("checkpoint")
        alpha = lora_alpha if lora_alpha is not None else (recorded.get("lora_alpha") or 32.0)
        encoder = FashionEmbeddingModel(checkpoint, base, device, lora_alpha=alpha, dtype=dtype)
        return cls(store, encoder)

    @property
    def identity(self) -> ModelIdentity:
        return self.encoder.identity

    # -- queries -----------------------------------------------------------------------------
    def text(
        self,
        query: str,
        *,
        top_k: int = 10,
        filters: Filters | None = None,
        against: Against = "image",
        rerank: int = 0,
    ) -> SearchResponse:
        """Text -> images (``against="image"``) or -> captions (``against="text"``)."""
        start = time.perf_counter()
        query = self._clean_text(query)
        top_k = _check_top_k(top_k)
        vector = self.encoder.encode_text(query)
        hits = self.store.search(vector, against, max(top_k, rerank), filters)[0]
        extra = {}
        if rerank:
            hits, extra = self._rerank(query, hits)
        return self._respond(
            {
                "type": "text",
                "text": query,
                "against": against,
                "top_k": top_k,
                "filters": dict(filters or {}),
                "rerank": rerank,
            },
            hits[:top_k],
            start,
            extra,
        )

    def image(
        self, image: ImageInput, *, top_k: int = 10, filters: Filters | None = None, against: Against = "image"
    ) -> SearchResponse:
        """Image -> images (``against="image"``) or image -> captions (``against="text"``)."""
        start = time.perf_counter()
        top_k = _check_top_k(top_k)
        vector = self.encoder.encode_image(image)
        hits = self.store.search(vector, against, top_k, filters)[0]
        return self._respond(
            {"type": "image", "against": against, "top_k": top_k, "filters": dict(filters or {})}, hits, start
        )

    def hybrid(
        self,
        text: str,
        image: ImageInput,
        *,
        alpha: float = 0.5,
        fusion: Fusion = "weighted",
        top_k: int = 10,
        filters: Filters | None = None,
        against: Against = "image",
        rerank: int = 0,
    ) -> SearchResponse:
        """Text and image together: ``alpha`` weighs the text (1 = text only, 0 = image only)."""
        start = time.perf_counter()
        text = self._clean_text(text)
        top_k = _check_top_k(top_k)
        if not 0.0 <= alpha <= 1.0:
            raise QueryError(f"alpha must be between 0 and 1, got {alpha}")
        if fusion not in ("weighted", "rrf"):
            raise QueryError(f"fusion must be 'weighted' or 'rrf', got {fusion!r}")
        text_vec, image_vec = self.encoder.encode_text(text), self.encoder.encode_image(image)
        want = max(top_k, rerank)
        if fusion == "rrf":
            pool = max(want, CANDIDATES)
            lists = [
                self.store.search(text_vec, against, pool, filters)[0],
                self.store.search(image_vec, "image", pool, filters)[0],
            ]
            hits = rrf(lists, weights=[alpha, 1.0 - alpha])[:want]
        elif against == "image":
            # Both parts score the same vectors, so alpha*(t.v) + (1-alpha)*(i.v) = (alpha*t + (1-alpha)*i).v:
            # one exact search with the combined query.
            hits = self.store.search(alpha * text_vec + (1.0 - alpha) * image_vec, "image", want, filters)[0]
        else:
            hits = self._weighted_two_fields(text_vec, image_vec, alpha, want, filters)
        extra = {}
        if rerank:
            hits, extra = self._rerank(text, hits)
        query = {
            "type": "hybrid",
            "text": text,
            "alpha": alpha,
            "fusion": fusion,
            "against": against,
            "top_k": top_k,
            "filters": dict(filters or {}),
            "rerank": rerank,
        }
        return self._respond(query, hits[:top_k], start, extra)

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _clean_text(text: str) -> str:
        if not isinstance(text, str) or not text.strip():
            raise QueryError("the text query is empty: type what you are looking for")
        return text.strip()

    def _weighted_two_fields(self, text_vec, image_vec, alpha, want, filters) -> list[Hit]:
        """Weighted fusion of captions (text field) and images: candidates from both, then exact scores."""
        pool = max(want, CANDIDATES)
        candidates: dict[str, Hit] = {}
        for hit in (
            self.store.search(text_vec, "text", pool, filters)[0]
            + self.store.search(image_vec, "image", pool, filters)[0]
        ):
            candidates.setdefault(hit.id, hit)
        ids = list(candidates)
        if not ids:
            return []
        scores = alpha * (self.store.vectors(ids, "text") @ text_vec) + (1.0 - alpha) * (
            self.store.vectors(ids, "image") @ image_vec
        )
        order = top_k_indices(scores, want)
        return [
            Hit(
                ids[i],
                float(scores[i]),
                candidates[ids[i]].caption,
                candidates[ids[i]].path,
                candidates[ids[i]].attributes,
            )
            for i in order
        ]

    def _rerank(self, text: str, hits: list[Hit]) -> tuple[list[Hit], dict]:
        """Rescore with the ITM head (precise, slow) the candidates ITC retrieval found (fast, broad)."""
        from fashion_retrieval.model.rerank import itm_scores

        if not hits:
            return hits, {"reranked": 0}
        scores = itm_scores(self.encoder, text, [h.path for h in hits])
        order = top_k_indices(scores, len(hits))
        reranked = [
            Hit(
                hits[i].id,
                float(scores[i]),
                hits[i].caption,
                hits[i].path,
                {**hits[i].attributes, "itc_score": f"{hits[i].score:.6f}"},
            )
            for i in order
        ]
        return reranked, {"reranked": len(hits)}

    @staticmethod
    def _respond(query: dict, hits: list[Hit], start: float, extra: dict | None = None) -> SearchResponse:
        return SearchResponse(query, hits, round(time.perf_counter() - start, 4), extra or {})


def open_searcher(
    *,
    db: str | None = None,
    uri: str | None = None,
    token: str | None = None,
    collection: str | None = None,
    embeddings: str | None = None,
    use_faiss: bool = False,
    ef: int | None = None,
    nprobe: int | None = None,
    base: str | None = None,
    checkpoint: str | None = None,
    lora_alpha: float | None = None,
    device: str | None = "auto",
    dtype: str | None = "auto",
) -> Searcher:
    """Open the named store (embeddings folder > ``uri`` > ``db``) and its query model; the store is closed
    again if the model cannot be loaded."""
    from fashion_retrieval.store import open_store

    store = open_store(
        db=db,
        uri=uri,
        token=token,
        collection=collection,
        embeddings=embeddings,
        use_faiss=use_faiss or None,
        ef=ef,
        nprobe=nprobe,
    )
    try:
        return Searcher.open(store, base=base, checkpoint=checkpoint, lora_alpha=lora_alpha, device=device, dtype=dtype)
    except Exception:
        store.close()
        raise
