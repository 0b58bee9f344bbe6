"""``FashionEmbeddingModel``: the original toolkit's API over a strictly loaded model of any family (BLIP, CLIP,
SigLIP, Chinese-CLIP, open_clip), LoRA merged."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from fashion_retrieval.config import ModelConfig
from fashion_retrieval.data.images import ImageInput, open_image, placeholder_image
from fashion_retrieval.errors import CheckpointError, ImageError, UnsupportedFeatureError
from fashion_retrieval.identity import ModelIdentity
from fashion_retrieval.model.backends import (
    BackendChoice,
    Calibration,
    ExportedModel,
    is_export,
    open_backend,
    open_export,
    requested_backend,
)
from fashion_retrieval.model.families import FamilyProcessor
from fashion_retrieval.model.features import CheckedFastPath
from fashion_retrieval.model.loading import LoadedModel, load_model, resolve_device
from fashion_retrieval.model.packed_linear import pack_linears
from fashion_retrieval.model.pause_points import pause_points
from fashion_retrieval.model.precision import Precision
from fashion_retrieval.ranking import top_k_indices

log = logging.getLogger(__name__)
_CPU = torch.device("cpu")


def _as_matrix(vectors: np.ndarray) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float32)
    return matrix[None, :] if matrix.ndim == 1 else matrix


class FashionEmbeddingModel:
    """Embed fashion images and captions into one image-text space (BLIP's 256-d by default; the model decides).

    ``model_path`` is the fine-tuned checkpoint (the original ``best_model.pth``, a PEFT adapter,
    a state dict ...) or None when ``processor_path`` already holds the fine-tuned weights;
    ``processor_path`` is the base folder (model config, image processor, tokenizer): BLIP, CLIP, SigLIP,
    Chinese-CLIP in Hugging Face format, or an open_clip checkpoint; the family is read from the folder. It may
    also be a folder written by ``fashion-retrieval export``, which runs on its own runtime without torch weights.
    ``dtype="auto"`` runs bf16 on CPUs with native bf16 units when a parity probe on this model keeps its
    rankings, else fp32 (see ``model/precision.py``). ``fast_cpu`` (on an x86 CPU) runs the Linear layers
    through prepacked oneDNN kernels: the same vectors within rounding, faster; False keeps PyTorch's path.
    ``backend``: torch (default), openvino or onnxruntime (exported towers, made once and cached, used only if
    their parity check passes; ``dtype`` then means fp32, bf16 or int8, int8 calibrated on ``calibration``), or
    auto (per tower, the fastest that passes, measured once per model and machine: ``model/backends/choice.py``).
    """

    def __init__(
        self,
        model_path: str | Path | None,
        processor_path: str | Path,
        device: str | None = None,
        *,
        lora_alpha: float = 32.0,
        dtype: str | None = "auto",
        fast_cpu: bool = True,
        backend: str | None = None,
        calibration: Calibration | None = None,
    ) -> None:
        backend = requested_backend(backend)
        if is_export(processor_path):
            if model_path is not None:
                raise CheckpointError(f"{processor_path} is an export: its towers hold the weights, pass no checkpoint")
            self._init_exported(open_export(processor_path))
            return
        if backend == "auto":
            build = self._builder(model_path, processor_path, lora_alpha, fast_cpu, calibration)
            choice = self._choose_backend(model_path, processor_path, device, lora_alpha, dtype, calibration, build)
            if choice.split:
                self._init_split(build(*choice.image), build(*choice.text))
                return
            backend, dtype = choice.image
        if backend == "torch":
            loaded = load_model(processor_path, model_path, lora_alpha=lora_alpha, device=device, dtype=dtype)
            self._init_from(loaded, fast_cpu)
            return
        if resolve_device(device).type != "cpu":
            raise CheckpointError(f"--backend {backend} runs on the CPU: use --backend torch on {device}")
        exported = open_backend(
            str(processor_path), model_path, backend, dtype or "auto", lora_alpha=lora_alpha, calibration=calibration
        )
        self._init_exported(exported)

    @staticmethod
    def _builder(
        model_path, processor_path, lora_alpha, fast_cpu, calibration
    ) -> Callable[[str, str], FashionEmbeddingModel]:
        """(backend, dtype) -> this model on the CPU on that backend: ``auto``'s candidates and towers."""

        def build(backend: str, dtype: str) -> FashionEmbeddingModel:
            return FashionEmbeddingModel(
                model_path, processor_path, "cpu", lora_alpha=lora_alpha, dtype=dtype, fast_cpu=fast_cpu,
                backend=backend, calibration=calibration,
            )  # fmt: skip

        return build

    @classmethod
    def _choose_backend(
        cls, model_path, processor_path, device, lora_alpha, dtype, calibration, build
    ) -> BackendChoice:
        """``backend="auto"``: torch off the CPU; on it, the candidate (or pair of candidates, one per tower) that
        takes the fewest seconds per image and caption while keeping the rankings."""
        if resolve_device(device).type != "cpu":
            log.info("backend auto: torch (exported towers run on the CPU; this model runs on %s)", device)
            return BackendChoice(("torch", dtype), ("torch", dtype))
        from fashion_retrieval.model.backends.choice import choose_backend
        from fashion_retrieval.model.loading import describe_model

        def apart(choice: BackendChoice) -> FashionEmbeddingModel:
            encoder = cls.__new__(cls)
            encoder._init_split(build(*choice.image), build(*choice.text))
            return encoder

        def candidate(backend: str) -> FashionEmbeddingModel:
            return build(backend, dtype)  # each candidate at the requested dtype (auto: its own choice)

        identity_key = describe_model(processor_path, model_path, lora_alpha=lora_alpha).identity.key
        return choose_backend(identity_key, candidate, apart, dtype=dtype or "auto", calibration=calibration)

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, *, fast_cpu: bool = True) -> FashionEmbeddingModel:
        self = cls.__new__(cls)
        self._init_from(loaded, fast_cpu)
        return self

    def _init_split(self, image_side: FashionEmbeddingModel, text_side: FashionEmbeddingModel) -> None:
        """The towers on two backends (``auto`` found each fastest on a different one): images go to
        ``image_side``, captions to ``text_side``; the torch side, if any, provides ``model`` (matching head,
        pause points)."""
        torch_side = image_side if image_side.model is not None else text_side
        processors = FamilyProcessor(text_side.text_tokenizer, image_side.preprocess)
        self._init_common(image_side.family, processors, image_side.identity, _CPU)
        self.loaded, self.exported = torch_side.loaded, None
        self.model, self.processor = torch_side.model, torch_side.processor
        self.packed_layers = torch_side.packed_layers
        self._image_side, self._text_side = image_side, text_side
        image, text = image_side.precision, text_side.precision
        reason = (
            f"auto: images on {image.backend} {image.name} ({image.reason}); "
            f"captions on {text.backend} {text.name} ({text.reason})"
        )
        self._precision = Precision.per_tower(image, text, reason)
        log.info("model %s (%s) on the CPU, %s", self.identity.key, self.family.label, reason)

    def _init_common(self, family, processors, identity, device: torch.device) -> None:
        self.family = family
        self.text_tokenizer = processors.tokenizer
        self.preprocess = processors.preprocess
        self.identity = identity
        self.device = device
        self._image_side = self._text_side = self  # another encoder per tower when they run apart (_init_split)
        self._normalize: tuple[torch.Tensor, torch.Tensor] | None = None
        self.max_text_length = self.text_tokenizer.max_length

    def _init_from(self, loaded: LoadedModel, fast_cpu: bool) -> None:
        self._init_common(loaded.family, loaded.processors, loaded.identity, loaded.device)
        self.loaded, self.exported = loaded, None
        self.model = loaded.model
        self.processor = loaded.processor  # transformers' processor (None for open_clip checkpoints)
        self._precision = loaded.precision
        family = loaded.family
        self._text_features = CheckedFastPath(family.fast_text_features(), family.text_features)
        self._image_features = CheckedFastPath(family.fast_image_features(), family.image_features)
        # On CPU: Linear layers through prepacked oneDNN kernels (fp32: up to 2x MKL's speed on AMD CPUs).
        self.packed_layers = pack_linears(self.model) if fast_cpu and self.device.type == "cpu" else 0
        if self.packed_layers:
            log.info("%d Linear layers run through prepacked oneDNN kernels", self.packed_layers)

    def _init_exported(self, exported: ExportedModel) -> None:
        """Exported towers on their runtime instead of a torch model (no ``model``, no ``processor``)."""
        manifest = exported.manifest
        self._init_common(exported.family, exported.processors, ModelIdentity.from_dict(manifest.identity), _CPU)
        self.loaded, self.exported = None, exported
        self.model = self.processor = None
        self.packed_layers = 0
        self._precision = Precision(
            torch.float32, exported.reason, manifest.parity, backend=exported.backend, compute=manifest.precision
        )
        log.info("model %s (%s) on %s, %s", self.identity.key, self.family.label, exported.backend, exported.reason)

    @property
    def embed_dim(self) -> int:
        return self.identity.embed_dim

    @property
    def has_itm(self) -> bool:
        """Whether the model has an image-text matching head (BLIP), which ``itm_scores`` and reranking need
        (exported towers hold no such head: a rerank runs on the torch backend)."""
        return self.family.has_itm and self.model is not None

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the towers are fed (exported towers take fp32 and compute in ``precision``)."""
        return self._precision.dtype

    @property
    def precision(self) -> Precision:
        """The dtype (and backend) the model runs in and why."""
        return self._precision

    @property
    def backend(self) -> str:
        return self._precision.backend

    def fast_paths(self) -> dict[str, bool | None]:
        """Which checked fast paths are in use (None: not checked yet, before the first batch)."""
        if self._image_side is not self:
            return {"images": self._image_side.fast_paths(), "captions": self._text_side.fast_paths()}
        if self.exported is not None:
            return {"backend": self.backend, "precision": self._precision.name}
        return {
            "text_cls_only": self._text_features.verified,
            "image_fused_cls_only": self._image_features.verified,
            "packed_linear_layers": self.packed_layers,
        }

    @property
    def can_pause(self) -> bool:
        """Whether ``pausable`` has points to pause an image forward at (the long one: a torch image tower; not
        an exported one)."""
        return self._image_side.model is not None

    @contextlib.contextmanager
    def pausable(self, callback: Callable[[], None]) -> Iterator[bool]:
        """Within the block, the model's forwards call ``callback()`` between their layers (same thread; see
        ``model/pause_points.py``): a long forward can let short, urgent work run first. Yields whether it can
        (exported towers run in one runtime call: no points, the block runs as it is)."""
        if not self.can_pause:
            yield False
            return
        with pause_points(self.model, callback) as points:
            yield points > 0

    # -- tensors in, vectors out -------------------------------------------------------------
    @torch.inference_mode()
    def encode_pixels(self, pixel_values: np.ndarray | torch.Tensor) -> np.ndarray:
        """Embed preprocessed images [N, 3, H, W]; float32 [N, D], L2-normalised."""
        if self._image_side is not self:
            return self._image_side.encode_pixels(pixel_values)
        if self.exported is not None:
            return self.exported.towers.images(torch.as_tensor(pixel_values, dtype=torch.float32).numpy())
        pixels = torch.as_tensor(pixel_values).to(self.device, dtype=self.dtype, non_blocking=True)
        return self._image_features(self.model, pixels).cpu().numpy()

    @torch.inference_mode()
    def encode_uint8(self, pixels: np.ndarray | torch.Tensor) -> np.ndarray:
        """Embed resized, not yet normalised images uint8 [N, H, W, 3] (``ImagePreprocessor.resize``): the batch
        is normalised here in one vectorised pass, then embedded. float32 [N, D], L2-normalised."""
        if self._normalize is None:
            scale, shift = (torch.from_numpy(v).view(1, 3, 1, 1) for v in self.preprocess.scale_and_shift())
            self._normalize = (scale, shift)
        scale, shift = self._normalize
        batch = torch.as_tensor(pixels).permute(0, 3, 1, 2).to(torch.float32)
        return self.encode_pixels((batch * scale - shift).contiguous())

    @torch.inference_mode()
    def encode_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> np.ndarray:
        if self._text_side is not self:
            return self._text_side.encode_tokens(input_ids, attention_mask)
        if self.exported is not None:
            return self.exported.towers.texts(input_ids.numpy(), attention_mask.numpy())
        feats = self._text_features(self.model, input_ids.to(self.device), attention_mask.to(self.device))
        return feats.cpu().numpy()

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.text_tokenizer(texts)

    def itm_scores(self, text: str, images: Sequence[ImageInput]) -> np.ndarray:
        """Probability that each image matches ``text`` by the model's image-text matching head (BLIP's); a
        family without one, or exported towers, raise ``UnsupportedFeatureError`` naming why."""
        if self.model is None:
            raise UnsupportedFeatureError(
                f"exported towers ({self.backend}) hold no image-text matching head: rerank with --backend torch"
            )
        return self.family.itm_scores(self, text, images)

    # -- the original toolkit's API -----------------------------------------------------------
    def encode_image(self, image: ImageInput) -> np.ndarray:
        """One image (path, bytes or PIL image) -> float32 (D,). Raises ImageError naming a bad file."""
        return self.encode_pixels(self.preprocess(open_image(image))[None])[0]

    def encode_text(self, text: str) -> np.ndarray:
        """One caption -> float32 (D,)."""
        return self.encode_batch_texts([text])[0]

    def encode_batch_images(
        self, image_paths: Sequence[ImageInput], batch_size: int = 16, *, on_error: str = "fail"
    ) -> np.ndarray:
        """Images -> float32 (N, D), in order. ``on_error="placeholder"`` embeds a black image instead
        of raising for an unreadable file (the original toolkit's behaviour)."""
        if on_error not in ("fail", "placeholder"):
            raise ValueError("on_error must be 'fail' or 'placeholder'")
        out = np.zeros((len(image_paths), self.embed_dim), dtype=np.float32)
        for start in range(0, len(image_paths), batch_size):
            batch = []
            for source in image_paths[start : start + batch_size]:
                try:
                    image = open_image(source)
                except ImageError:
                    if on_error == "fail":
                        raise
                    image = placeholder_image()
                batch.append(self.preprocess(image))
            if batch:
                out[start : start + len(batch)] = self.encode_pixels(np.stack(batch))
        return out

    def encode_batch_texts(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Captions -> float32 (N, D), in order. Batches are formed by token length (less padding)."""
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), self.embed_dim), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort(self.text_tokenizer.lengths(texts), kind="stable")
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            tokens = self.tokenize([texts[i] for i in index])
            out[index] = self.encode_tokens(tokens["input_ids"], tokens["attention_mask"])
        return out

    @staticmethod
    def compute_similarity(image_embedding: np.ndarray, text_embedding: np.ndarray) -> float | np.ndarray:
        """Cosine similarity; a float for two vectors, a matrix [N, M] for two batches."""
        a, b = _as_matrix(image_embedding), _as_matrix(text_embedding)
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        scores = a @ b.T
        return float(scores[0, 0]) if scores.size == 1 else scores

    def find_similar_images(
        self, query_text: str, image_embeddings: np.ndarray, image_paths: Sequence[str], top_k: int = 5
    ) -> list[tuple[str, float]]:
        """The ``top_k`` images closest to ``query_text``: [(path, score)], best first."""
        scores = _as_matrix(image_embeddings) @ self.encode_text(query_text)
        return [(image_paths[i], float(scores[i])) for i in top_k_indices(scores, top_k)]

    def find_similar_texts(
        self, query_image: ImageInput, text_embeddings: np.ndarray, texts: Sequence[str], top_k: int = 5
    ) -> list[tuple[str, float]]:
        """The ``top_k`` captions closest to ``query_image``: [(text, score)], best first."""
        scores = _as_matrix(text_embeddings) @ self.encode_image(query_image)
        return [(texts[i], float(scores[i])) for i in top_k_indices(scores, top_k)]


def load_encoder(model: ModelConfig, calibration: Calibration | None = None, **options) -> FashionEmbeddingModel:
    """The encoder a ``ModelConfig`` names (every command builds its model here)."""
    return FashionEmbeddingModel(
        model.checkpoint,
        model.base,
        model.device,
        lora_alpha=model.lora_alpha,
        dtype=model.dtype,
        backend=model.backend,
        calibration=calibration,
        **options,
    )
