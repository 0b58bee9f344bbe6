"""One searcher over any store: text->image, image->image, image->text, hybrid, filters, ITM rerank.

The searcher encodes queries and executes them (``Query.execute(searcher, ...)``): it is the
``SearchContext`` (``search/context.py``) the queries ask for, so none of them imports this module."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fashion_retrieval.data.images import API_MAX_PIXELS, ImageInput, open_image
from fashion_retrieval.errors import FashionRetrievalError, ModelMismatchError, QueryError, UnsupportedFeatureError
from fashion_retrieval.identity import ModelIdentity, ensure_same_model, reference_or_verified
from fashion_retrieval.ranking import top_k_indices
from fashion_retrieval.search.base import Against, Query, SearchResponse, rescored
from fashion_retrieval.search.caption_edit import CaptionEditor
from fashion_retrieval.search.compose.algebra import DEFAULT_WEIGHTS, ComposeWeights
from fashion_retrieval.search.compose.request import ComposeQuery
from fashion_retrieval.search.queries import Fusion, HybridQuery, ImageQuery, TextQuery, split_rows
from fashion_retrieval.store.base import Filters, Hit, VectorStore

EDITOR_CAPTIONS = 50_000  # captions the caption editor learns from (an even sample beyond that)


def _inline(function, *args):
    return function(*args)


def _backend_option(backend: str) -> str:
    """The ``--backend`` that gives vectors of a recorded backend ("torch/openvino": the towers run apart by
    auto)."""
    return "auto" if "/" in backend else backend


def ensure_comparable_precision(stored: dict | None, query: dict, what: str) -> None:
    """Vectors computed in one precision (or on one backend) may be queried by another only where a parity probe
    showed that each keeps this model's rankings against torch fp32 (recorded by the choice on either side)."""
    if not stored:
        return
    same = stored.get("dtype") == query.get("dtype") and stored.get("backend", "torch") == query.get("backend", "torch")
    if same or (reference_or_verified(stored) and reference_or_verified(query)):
        return

    def name(record: dict) -> str:
        backend = record.get("backend", "torch")
        return str(record.get("dtype")) + ("" if backend == "torch" else f" ({backend})")

    stored_backend = stored.get("backend", "torch")
    raise ModelMismatchError(
        f"{what} holds {name(stored)} vectors and the query model runs in {name(query)}, and no parity check "
        "showed that this model ranks alike in both: pass --dtype "
        f"{'fp32' if stored.get('dtype') == 'float32' else 'auto'}"
        + (f" --backend {_backend_option(stored_backend)}" if stored_backend != query.get("backend", "torch") else "")
        + f", or re-embed in {query.get('dtype')}"
    )


class Searcher:
    """Encodes queries with the model the store was built with, and searches the store."""

    def __init__(self, store: VectorStore, encoder) -> None:
        recorded = store.identity()
        if recorded:
            ensure_same_model(recorded, encoder.identity, store.description)
        ensure_comparable_precision(store.precision(), encoder.precision.to_dict(), store.description)
        self.store = store
        self.encoder = encoder
        # One model, many callers (the serving engine's worker, reranks, Python threads): one at a time.
        self.model_lock = threading.RLock()
        self._editor: CaptionEditor | None = None
        self._editor_lock = threading.Lock()
        # How model work asked for while a query runs (a composed caption, a rerank) is done: inline by default;
        # a serving engine routes it to its model thread (torch is slow when several threads each run it).
        self.on_model = _inline
        self.max_pixels = API_MAX_PIXELS

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
        backend: str | None = None,
        calibrate: int = 0,
    ) -> Searcher:
        """Load the query model from the store's recorded identity unless given, then check they agree. An int8
        backend is calibrated on ``calibrate`` of the store's own items (images and captions)."""
        from fashion_retrieval.model.encoder import FashionEmbeddingModel

        recorded = store.identity() or {}
        base = base or recorded.get("base")
        if not base:
            raise FashionRetrievalError(f"{store.description} records no model: pass --base (and --checkpoint)")
        if checkpoint is None and recorded.get("base") == base:
            checkpoint = recorded.get("checkpoint")
        alpha = lora_alpha if lora_alpha is not None else (recorded.get("lora_alpha") or 32.0)
        calibration = store_calibration(store, calibrate or (300 if dtype == "int8" else 0))
        encoder = FashionEmbeddingModel(
            checkpoint, base, device, lora_alpha=alpha, dtype=dtype, backend=backend, calibration=calibration
        )
        return cls(store, encoder)

    @property
    def identity(self) -> ModelIdentity:
        return self.encoder.identity

    # -- encoding: one batch for the texts of many queries, one for their images -------------------
    def prepare_image(self, image: ImageInput) -> np.ndarray:
        """Decode and preprocess a query image ([3, H, W] float32); raises ImageError naming a bad one."""
        return self.encoder.preprocess(open_image(image, max_pixels=self.max_pixels, reduce_to=self.input_size))

    @property
    def input_size(self) -> tuple[int, int]:
        return self.encoder.preprocess.width, self.encoder.preprocess.height

    def encode_queries(self, queries: Sequence[Query]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(text vectors, image vectors) per query, computed in one text batch and one image batch."""
        texts = [t for q in queries for t in q.texts()]
        pixels = [p for q in queries for p in q.pixels()]
        dim = self.encoder.embed_dim
        with self.model_lock:
            # identical texts (a popular query sent by many clients at once) are encoded once
            unique = list(dict.fromkeys(texts))
            encoded = self.encoder.encode_batch_texts(unique, batch_size=max(1, len(unique))) if unique else None
            text_vectors = (
                encoded[[unique.index(t) for t in texts]] if encoded is not None else np.zeros((0, dim), np.float32)
            )
            image_vectors = self.encoder.encode_pixels(np.stack(pixels)) if pixels else np.zeros((0, dim), np.float32)
        text_parts = split_rows(text_vectors, [len(q.texts()) for q in queries])
        image_parts = split_rows(image_vectors, [len(q.pixels()) for q in queries])
        return list(zip(text_parts, image_parts, strict=True))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """A few texts a query composes while it runs (e.g. an edited caption), under the model lock."""
        return self.on_model(self._encode_texts, list(texts))

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        with self.model_lock:
            return self.encoder.encode_batch_texts(texts, batch_size=max(1, len(texts)))

    def caption_editor(self) -> CaptionEditor:
        """The caption editor learned from this catalogue's captions, built once on first use."""
        with self._editor_lock:
            if self._editor is None:
                self._editor = CaptionEditor.from_captions(self.store.captions(EDITOR_CAPTIONS))
            return self._editor

    def check(self, query: Query) -> None:
        """Refuse, before any work, what this model cannot do for ``query`` (a rerank needs an image-text matching
        head, which only BLIP has): the serving engine calls this before queueing, so one such query never fails
        a batch of others."""
        if getattr(query, "rerank", 0) and not self.encoder.has_itm:
            if self.encoder.family.has_itm:  # a BLIP on exported towers: the head stays in torch
                raise UnsupportedFeatureError(
                    f"the exported towers ({self.encoder.backend}) hold no image-text matching head: rerank with "
                    "--backend torch, or search without rerank"
                )
            raise UnsupportedFeatureError(
                f"this model ({self.identity.family}) has no image-text matching head: rerank needs a BLIP "
                "retrieval model; search without rerank"
            )

    def run(self, query: Query) -> SearchResponse:
        """Encode what ``query`` needs and search: the same two steps the serving engine runs for a batch."""
        self.check(query)
        ((texts, images),) = self.encode_queries([query])
        return query.execute(self, texts, images)

    # -- the query types --------------------------------------------------------------------------
    def text(
        self,
        query: str,
        *,
        top_k: int = 10,
        filters: Filters | None = None,
        against: Against = "image",
        rerank: int = 0,
        minus: Sequence[str] = (),
    ) -> SearchResponse:
        """Text -> images (``against="image"``) or -> captions (``against="text"``); ``minus`` texts are
        excluded ("a dress", minus=["stripes"]: striped dresses sink to the bottom)."""
        return self.run(TextQuery(query, top_k, filters, against, rerank, minus))

    def image(
        self, image: ImageInput, *, top_k: int = 10, filters: Filters | None = None, against: Against = "image"
    ) -> SearchResponse:
        """Image -> images (``against="image"``) or image -> captions (``against="text"``)."""
        query = ImageQuery(np.zeros(0), top_k, filters, against)  # checks the options before decoding
        query.image = self.prepare_image(image)
        return self.run(query)

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
        query = HybridQuery(text, np.zeros(0), alpha, fusion, top_k, filters, against, rerank)
        query.image = self.prepare_image(image)
        return self.run(query)

    def compose(
        self,
        modifier: str | None = None,
        *,
        item: str | None = None,
        image: ImageInput | None = None,
        minus: Sequence[str] = (),
        like: Sequence[str] = (),
        unlike: Sequence[str] = (),
        method: str | None = None,
        weights: ComposeWeights | None = None,
        top_k: int = 10,
        filters: Filters | None = None,
    ) -> SearchResponse:
        """Refine: start from a catalogue ``item`` or an ``image``, change it by ``modifier`` ("in red"),
        exclude ``minus`` texts ("stripes"), and move toward ``like`` / away from ``unlike`` item ids.

        ``method``: delta (default: the image moved by the caption's change), caption, sum, image, text;
        ``weights``: ``search.compose.ComposeWeights`` (defaults measured by ``eval --task compose``)."""
        if image is not None and item is not None:
            raise QueryError("give a reference item or a reference image, not both")
        pixels = self.prepare_image(image) if image is not None else None
        weights = weights or DEFAULT_WEIGHTS
        return self.run(ComposeQuery(modifier, item, pixels, minus, like, unlike, method, weights, top_k, filters))

    # -- helpers -----------------------------------------------------------------------------
    def _itm_scores(self, text: str, paths: list[str]) -> np.ndarray:
        with self.model_lock:
            return self.encoder.itm_scores(text, paths)

    def rerank(self, text: str, hits: list[Hit]) -> tuple[list[Hit], dict]:
        """Rescore with the ITM head (precise, slow) the candidates ITC retrieval found (fast, broad)."""
        if not hits:
            return hits, {"reranked": 0}
        scores = self.on_model(self._itm_scores, text, [h.path for h in hits])
        reranked = [
            rescored(hits[i], float(scores[i]), itc_score=f"{hits[i].score:.6f}")
            for i in top_k_indices(scores, len(hits))
        ]
        return reranked, {"reranked": len(hits)}


def store_calibration(store: VectorStore, items: int):
    """An int8 calibration sample from a store: its first ``items`` items' images (where this machine has them)
    and captions. None when ``items`` is 0."""
    if not items:
        return None
    from fashion_retrieval.model.backends import Calibration

    hits = store.get(store.some_ids(items))
    paths = [h.path for h in hits if h.path and Path(h.path).is_file()]
    return Calibration(paths, [h.caption for h in hits if h.caption], source=f"{store.description} ({len(hits)} items)")


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
    backend: str | None = None,
    calibrate: int = 0,
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
        return Searcher.open(
            store,
            base=base,
            checkpoint=checkpoint,
            lora_alpha=lora_alpha,
            device=device,
            dtype=dtype,
            backend=backend,
            calibrate=calibrate,
        )
    except Exception:
        store.close()
        raise
