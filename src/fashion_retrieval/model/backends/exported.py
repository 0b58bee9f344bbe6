"""An exported model folder: the two towers as ONNX or OpenVINO IR files, the tokenizer, and ``manifest.json``
(the model identity, the exact preprocessing, the precision, and the parity measured on export).

The folder is self-describing, so it runs without this package: ONNX Runtime or OpenVINO for the towers,
transformers' tokenizer for captions, and the preprocessing written out in the manifest (README: "Exported
towers"). This module reads it back into runtimes this package runs (``ExportedTowers``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fashion_retrieval.data.images import ImagePreprocessor
from fashion_retrieval.errors import CheckpointError
from fashion_retrieval.model.backends.signal_stack import keep_signal_stack
from fashion_retrieval.model.families.base import FamilyProcessor, TextSpec, TextTokenizer

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMATS = {"onnx": ".onnx", "openvino": ".xml"}
RUNTIME_OF = {"onnx": "onnxruntime", "openvino": "openvino"}
PRECISIONS = ("fp32", "bf16", "int8")
TOKENIZER_DIR = "tokenizer"
OPEN_CLIP_TOKENIZER = "open_clip"  # open_clip's own BPE tokenizer: not a transformers one, read from the base


@dataclass(frozen=True)
class ExportManifest:
    format: str
    precision: str
    identity: dict
    family: str
    preprocessing: dict  # ImagePreprocessor's fields
    text: dict  # TextSpec's fields and where the tokenizer is
    parity: dict
    files: dict
    versions: dict
    calibration: dict | None = None
    created: str = ""

    def to_json(self) -> str:
        return json.dumps({"fashion_retrieval_export": 1, **asdict(self)}, indent=2)

    @classmethod
    def read(cls, folder: Path) -> ExportManifest:
        path = folder / MANIFEST
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{folder}: no readable {MANIFEST} (not a fashion-retrieval export)") from exc
        if not isinstance(data, dict) or data.pop("fashion_retrieval_export", None) != 1:
            raise CheckpointError(f"{path}: not a fashion-retrieval export manifest")
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})

    def preprocessor(self) -> ImagePreprocessor:
        fields = dict(self.preprocessing)
        fields["mean"], fields["std"] = tuple(fields["mean"]), tuple(fields["std"])
        return ImagePreprocessor(**fields)


def is_export(folder: str | Path) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def preprocessing_fields(preprocess: ImagePreprocessor) -> dict:
    fields = asdict(preprocess)
    fields["mean"], fields["std"] = list(preprocess.mean), list(preprocess.std)
    fields.pop("jpeg_draft", None)
    return fields


def save_tokenizer(processors: FamilyProcessor, family: str, folder: Path) -> dict:
    """The tokenizer beside the towers (transformers' files), and its settings for the manifest."""
    spec = asdict(processors.tokenizer.spec)
    if family == "open_clip" and not hasattr(processors.tokenizer.tokenizer, "save_pretrained"):
        return {**spec, "tokenizer": OPEN_CLIP_TOKENIZER}
    processors.tokenizer.tokenizer.save_pretrained(folder / TOKENIZER_DIR)
    return {**spec, "tokenizer": TOKENIZER_DIR}


def load_processors(folder: Path, manifest: ExportManifest) -> FamilyProcessor:
    """Tokenizer and image preprocessing of an export, as the encoder uses them."""
    text = dict(manifest.text)
    where = text.pop("tokenizer")
    spec = TextSpec(**text)
    if where == OPEN_CLIP_TOKENIZER:
        from fashion_retrieval.model.families.open_clip import OpenClipTextTokenizer, import_open_clip

        base = manifest.identity["base"]
        tokenizer = OpenClipTextTokenizer(import_open_clip().get_tokenizer(f"local-dir:{base}"), spec)
    else:
        from transformers import AutoTokenizer

        tokenizer = TextTokenizer(AutoTokenizer.from_pretrained(folder / where), spec)
    return FamilyProcessor(tokenizer, manifest.preprocessor())


class ExportedTowers:
    """The two towers of an export on their runtime (ONNX Runtime or OpenVINO, on the CPU)."""

    def __init__(self, folder: Path, manifest: ExportManifest, threads: int | None = None) -> None:
        self.folder, self.manifest = folder, manifest
        self.threads = threads or int(os.environ.get("OMP_NUM_THREADS", 0)) or (os.cpu_count() or 1)
        self.runtime = RUNTIME_OF[manifest.format]
        self.info: dict[str, Any] = {"runtime": self.runtime, "threads": self.threads}
        try:
            if manifest.format == "onnx":
                self._image, self._text = self._onnxruntime("image"), self._onnxruntime("text")
            else:
                self._image, self._text = self._openvino("image"), self._openvino("text")
        except ImportError as exc:
            raise CheckpointError(
                f"{folder} is a {manifest.format} export and {self.runtime} cannot be imported ({exc}): "
                f"pip install {self.runtime}"
            ) from exc

    def _onnxruntime(self, tower: str):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = self.folder / self.manifest.files[tower]
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        self.info["version"] = ort.__version__
        return lambda feeds: session.run(None, {n: feeds[n] for n in names})[0]

    def _openvino(self, tower: str):
        import openvino as ov

        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY"}
        # bf16 where asked; fp32 exports in fp32 (OpenVINO would compute them in bf16 on CPUs with bf16 units);
        # int8 exports leave the rest of the graph to OpenVINO's choice, which their parity check measured.
        hint = {"fp32": "f32", "bf16": "bf16"}.get(self.manifest.precision)
        if hint:
            config["INFERENCE_PRECISION_HINT"] = hint
        with keep_signal_stack():
            compiled = ov.Core().compile_model(str(self.folder / self.manifest.files[tower]), "CPU", config)
        names = [p.get_any_name() for p in compiled.inputs]
        request = compiled.create_infer_request()
        output = compiled.output(0)
        used = compiled.get_property("INFERENCE_PRECISION_HINT")
        self.info |= {"version": ov.__version__, f"{tower}_inference_precision": str(used)}
        return lambda feeds: np.asarray(request.infer({n: feeds[n] for n in names})[output])

    def images(self, pixels: np.ndarray) -> np.ndarray:
        """float32 [N, 3, H, W] -> float32 [N, D], L2-normalised."""
        return np.asarray(self._image({"pixel_values": np.ascontiguousarray(pixels, np.float32)}), np.float32)

    def texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": np.asarray(input_ids, np.int64), "attention_mask": np.asarray(attention_mask, np.int64)}
        return np.asarray(self._text(feeds), np.float32)


__all__ = [
    "FORMATS",
    "MANIFEST",
    "PRECISIONS",
    "RUNTIME_OF",
    "ExportManifest",
    "ExportedTowers",
    "is_export",
    "load_processors",
    "preprocessing_fields",
    "save_tokenizer",
]
