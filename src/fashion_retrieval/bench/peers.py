"""Peers of the encoder, as baselines in the same run: ``torch.compile`` of the plain model, and the vision
tower exported to ONNX and run by ONNX Runtime or OpenVINO. Each peer runs the same batches as the pipeline
(``throughput.Workload``); one that cannot be installed, compiled or exported here is reported with the
reason, never silently left out. Not used by the library."""

from __future__ import annotations

import copy
import importlib.metadata
import logging
import time
from pathlib import Path

import numpy as np
import torch

from fashion_retrieval.bench.throughput import CaptionBatch, max_difference, timed_rate
from fashion_retrieval.model.backends.signal_stack import keep_signal_stack
from fashion_retrieval.model.features import image_features, text_features

log = logging.getLogger(__name__)

# fp32 vectors from another runtime: the same graph with other kernels (fusions, summation order) moves
# unit vectors by ~1e-6..1e-5; a wrong export moves them by far more. bf16 arithmetic: ~1e-2.
TOLERANCE = {"fp32": 1e-4, "bf16": 3e-2}


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


class CompiledPeer:
    """``torch.compile`` (inductor) of the plain model's image and text functions.

    ``prepare`` compiles: one pass over every batch, timed on its own (``compile_seconds``: compilation plus one
    run; caption batches of new lengths recompile, then shapes go dynamic). Rates come from later passes only."""

    def __init__(self, model) -> None:
        self.model = model
        self.image = torch.compile(lambda x: image_features(model, x))
        self.text = torch.compile(lambda ids, mask: text_features(model, ids, mask))
        self.compile_seconds: dict[str, float] = {}
        self.errors: dict[str, str] = {}
        self.difference: dict[str, float] = {}

    @torch.inference_mode()
    def prepare(self, pixels: list[torch.Tensor], captions: list[CaptionBatch]) -> None:
        for kind, run, batches, plain in (
            ("images", self._images, pixels, lambda x: image_features(self.model, x)),
            ("captions", self._captions, captions, lambda b: text_features(self.model, b.input_ids, b.attention_mask)),
        ):
            start = time.perf_counter()
            try:
                got = [run(b).float().cpu().numpy() for b in batches]
            except Exception as exc:  # noqa: BLE001 - inductor's errors are many kinds; report, do not crash
                self.errors[kind] = _error(exc)
                log.warning("torch.compile failed for %s: %s", kind, self.errors[kind])
                continue
            self.compile_seconds[kind] = round(time.perf_counter() - start, 2)
            want = [plain(b).float().cpu().numpy() for b in batches]
            self.difference[kind] = max(max_difference(g, w) for g, w in zip(got, want, strict=True))

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        return self.image(x)

    def _captions(self, b: CaptionBatch) -> torch.Tensor:
        return self.text(b.input_ids, b.attention_mask)

    def images_per_second(self, pixels: list[torch.Tensor]) -> float | None:
        if "images" in self.errors:
            return None
        return timed_rate(pixels[0].device, self._images, pixels, sum(len(b) for b in pixels))[0]

    def captions_per_second(self, captions: list[CaptionBatch]) -> float | None:
        if "captions" in self.errors:
            return None
        rows = sum(len(b.rows) for b in captions)
        return timed_rate(captions[0].input_ids.device, self._captions, captions, rows)[0]

    def describe(self) -> dict:
        return {
            "backend": "inductor",
            "compile_seconds": self.compile_seconds,  # compilation + one pass, excluded from the rates
            "max_difference_vs_plain": self.difference,
            **({"errors": self.errors} if self.errors else {}),
        }


class VisionTower(torch.nn.Module):
    """BLIP's image embedding as one module (vision model -> CLS -> vision_proj -> L2 norm), for export."""

    def __init__(self, model) -> None:
        super().__init__()
        self.vision_model = model.vision_model
        self.vision_proj = model.vision_proj

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return image_features(self, pixel_values)


def fp32_vision_tower(model) -> VisionTower:
    """A float32 copy of the model's vision tower (only the vision weights are copied)."""
    return copy.deepcopy(VisionTower(model)).float().eval()


def export_vision_onnx(tower: VisionTower, example: torch.Tensor, path: Path) -> dict:
    """The fp32 vision tower as an ONNX file with a dynamic batch axis: torch.onnx's dynamo exporter first,
    then the TorchScript one. Returns how it was exported (or raises with both errors)."""
    example = example.float()
    if len(example) < 2:  # a batch of 1 would specialise the batch axis to 1
        example = example.repeat(2, 1, 1, 1)
    start = time.perf_counter()
    try:
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.onnx.export(
            tower,
            (example,),
            dynamo=True,
            dynamic_shapes=({0: batch},),
            input_names=["pixel_values"],
            verbose=False,
        )
        program.save(str(path))
        how = {"exporter": "dynamo", "opset": int(program.model.opset_imports.get("", 0))}
    except Exception as exc:  # noqa: BLE001 - fall back to the other exporter, keep the reason
        dynamo_error = f"dynamo exporter: {_error(exc)}"
        try:
            torch.onnx.export(
                tower,
                (example,),
                str(path),
                dynamo=False,
                opset_version=17,
                input_names=["pixel_values"],
                output_names=["embedding"],
                dynamic_axes={"pixel_values": {0: "batch"}, "embedding": {0: "batch"}},
            )
            how = {"exporter": "torchscript", "opset": 17, "dynamo_error": dynamo_error}
        except Exception as exc2:  # noqa: BLE001
            raise RuntimeError(f"{dynamo_error}; torchscript exporter: {_error(exc2)}") from exc2
    how["export_seconds"] = round(time.perf_counter() - start, 2)
    return how


class OnnxVisionPeer:
    """The exported vision tower on ONNX Runtime (CPU) or OpenVINO (CPU), fp32 input; vectors compared with
    the plain fp32 model's on the same batch. ``error`` says why it could not run."""

    def __init__(self, runtime: str, path: Path | None, threads: int, export_error: str | None = None) -> None:
        self.runtime = runtime
        self.error = export_error
        self.info: dict = {}
        self.run = None
        if self.error is not None or path is None:
            return
        try:
            if runtime == "onnxruntime":
                self._onnxruntime(path, threads)
            else:
                self._openvino(path, threads)
        except ImportError as exc:
            package = "onnxruntime" if runtime == "onnxruntime" else "openvino"
            self.error = f"not installed ({_error(exc)}): pip install {package}"
        except Exception as exc:  # noqa: BLE001 - a runtime that cannot load the model: say why
            self.error = _error(exc)

    def _onnxruntime(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        self.run = lambda x: session.run(None, {name: x})[0]
        self.info = {"version": ort.__version__, "providers": session.get_providers(), "threads": threads}

    def _openvino(self, path: Path, threads: int) -> None:
        import openvino as ov

        config = {"INFERENCE_NUM_THREADS": threads}
        if self.runtime == "openvino_f32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        with keep_signal_stack():
            compiled = ov.Core().compile_model(str(path), "CPU", config)
        request = compiled.create_infer_request()
        self.run = lambda x: np.asarray(request.infer({0: x})[compiled.output(0)])
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        # OpenVINO's CPU plugin computes in bf16 by default on CPUs with native bf16 units: say which it used
        self.info = {
            "version": importlib.metadata.version("openvino"),
            "inference_precision": hint.to_string() if hasattr(hint, "to_string") else str(hint),
            "threads": threads,
        }

    def check(self, pixels: list[torch.Tensor], reference: list[np.ndarray]) -> None:
        """Vectors against the plain fp32 model's on the same batches (max absolute difference)."""
        if self.run is None:
            return
        try:
            got = [self.run(b.float().numpy()) for b in pixels]
        except Exception as exc:  # noqa: BLE001
            self.error, self.run = _error(exc), None
            return
        difference = max(max_difference(g, r) for g, r in zip(got, reference, strict=True))
        precision = "bf16" if self.info.get("inference_precision") in ("bf16", "f16") else "fp32"
        self.info |= {
            "max_difference_vs_plain_fp32": difference,
            "tolerance": TOLERANCE[precision],
            "within_tolerance": difference <= TOLERANCE[precision],
        }

    def images_per_second(self, pixels: list[torch.Tensor]) -> float | None:
        if self.run is None:
            return None
        arrays = [b.float().numpy() for b in pixels]
        return timed_rate(torch.device("cpu"), self.run, arrays, sum(len(a) for a in arrays))[0]

    def describe(self) -> dict:
        return {"runtime": self.runtime, **self.info, **({"error": self.error} if self.error else {})}


def onnx_peers(model, pixels: list[torch.Tensor], folder: Path, threads: int) -> tuple[list[OnnxVisionPeer], dict]:
    """Export the model's vision tower in fp32 once (into ``folder``), load it in ONNX Runtime and OpenVINO,
    and check their vectors against the fp32 tower's on the same batches."""
    path = folder / "vision.onnx"
    tower = fp32_vision_tower(model)
    try:
        import onnx  # noqa: F401 - the exporters need it

        export, error = export_vision_onnx(tower, pixels[0], path), None
        export["file_mb"] = round(sum(p.stat().st_size for p in folder.glob("vision.onnx*")) / 2**20, 1)
    except ImportError as exc:
        export, error = {}, f"torch.onnx needs the onnx package ({_error(exc)}): pip install onnx onnxscript"
    except Exception as exc:  # noqa: BLE001
        export, error = {}, f"export failed: {_error(exc)}"
    with torch.inference_mode():
        reference = [tower(b.float()).numpy() for b in pixels]
    del tower
    peers = [OnnxVisionPeer(runtime, path, threads, error) for runtime in ("onnxruntime", "openvino")]
    if peers[1].info.get("inference_precision") not in (None, "f32"):  # and OpenVINO in fp32, like for like
        peers.append(OnnxVisionPeer("openvino_f32", path, threads, error))
    for peer in peers:
        peer.check(pixels, reference)
    return peers, export


__all__ = ["CompiledPeer", "OnnxVisionPeer", "VisionTower", "export_vision_onnx", "fp32_vision_tower", "onnx_peers"]
