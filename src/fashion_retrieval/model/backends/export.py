"""Export a loaded model's towers to ONNX or OpenVINO IR, in fp32, bf16 or int8, with the parity measured on export.

- ONNX: ``torch.onnx.export`` (its dynamo exporter), dynamic batch and caption length. int8: ONNX Runtime's static
  quantization (QDQ, per-channel weights), calibrated on the user's images and captions.
- OpenVINO: ``openvino.convert_model`` from the torch towers (dynamic shapes). bf16 is the fp32 graph run with
  OpenVINO's bf16 inference precision (on CPUs with bf16 units); int8 is NNCF's post-training quantization,
  calibrated on the user's images and captions.

Parity: the exported towers, on their runtime, encode the fixed probe (``precision.probe_inputs``) and are compared
with the torch fp32 path: largest component difference, smallest cosine to the fp32 twin, probe ranking pairs
flipped. ``passed`` says whether the precision keeps the rankings (the bounds below).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fashion_retrieval.data.images import open_image
from fashion_retrieval.errors import CheckpointError, ImageError
from fashion_retrieval.files import atomic_write_bytes
from fashion_retrieval.model.backends.exported import (
    FORMATS,
    PRECISIONS,
    ExportedTowers,
    ExportManifest,
    preprocessing_fields,
    save_tokenizer,
)
from fashion_retrieval.model.backends.signal_stack import keep_signal_stack
from fashion_retrieval.model.backends.towers import IMAGE_INPUTS, TEXT_INPUTS, ImageTower, TextTower
from fashion_retrieval.model.precision import PARITY_COSINE, compare_vectors, cpu_bf16_units, probe_inputs

log = logging.getLogger(__name__)

# What each precision must keep of the fp32 vectors on the probe (and no probe ranking pair may flip):
# fp32 on another runtime differs by kernel order only (~1e-6); bf16 as torch's bf16 (model/precision.py);
# int8 rounds activations too: an angle of 8 degrees at most, then the retrieval benchmark decides
# (benchmarks/precision.py: held-out Recall@10 and attribute precision@10 within 0.01 of fp32).
MIN_COSINE = {"fp32": 0.99999, "bf16": PARITY_COSINE, "int8": 0.99}
CALIBRATION_BATCH = 8


@dataclass(frozen=True)
class Calibration:
    """A sample of the user's own catalogue for int8: image files and captions."""

    images: Sequence[str]
    captions: Sequence[str]
    source: str = ""

    def describe(self) -> dict:
        return {"images": len(self.images), "captions": len(self.captions), "source": self.source}


def _versions() -> dict:
    import importlib.metadata

    versions = {"torch": torch.__version__}
    for name in ("onnx", "onnxruntime", "openvino", "nncf", "transformers"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _example(processors) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    pixels, tokens = probe_inputs(processors)
    return pixels[:2], {k: v[:2] for k, v in tokens.items()}


def _export_onnx(image: ImageTower, text: TextTower, processors, folder: Path) -> dict:
    """torch.onnx's TorchScript exporter (opset 17, dynamic batch and length): ~0.5 s for a tiny model where the
    dynamo exporter takes ~15 s, the same vectors; the dynamo exporter where the other is gone or fails."""
    pixels, tokens = _example(processors)
    towers = (
        ("image", image, (pixels,), IMAGE_INPUTS, {"pixel_values": {0: "batch"}}),
        (
            "text",
            text,
            (tokens["input_ids"], tokens["attention_mask"]),
            TEXT_INPUTS,
            {"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"}},
        ),
    )
    for name, tower, args, inputs, axes in towers:
        path, output = folder / f"{name}.onnx", f"{name}_vector"
        try:
            torch.onnx.export(
                tower,
                args,
                str(path),
                dynamo=False,
                opset_version=17,
                input_names=list(inputs),
                output_names=[output],
                dynamic_axes={**axes, output: {0: "batch"}},
            )
        except Exception as exc:  # noqa: BLE001 - another torch: the exporter it recommends
            log.info("TorchScript ONNX export failed (%s): using the dynamo exporter", str(exc).splitlines()[0][:200])
            dims = {"batch": torch.export.Dim("batch", min=1, max=4096), "length": torch.export.Dim("length", min=2)}
            shapes = tuple({axis: dims[label] for axis, label in a.items()} for a in axes.values())
            program = torch.onnx.export(
                tower, args, dynamo=True, dynamic_shapes=shapes, input_names=list(inputs), output_names=[output]
            )
            program.save(str(path))
    return {"image": "image.onnx", "text": "text.onnx"}


def _export_openvino(image: ImageTower, text: TextTower, processors, folder: Path) -> dict:
    """OpenVINO IR converted from the ONNX export (the same traced graph for both formats; ~1.5 s where
    ``openvino.convert_model`` on the torch module takes 3-6 s for a tiny model)."""
    import openvino as ov

    onnx_files = _export_onnx(image, text, processors, folder)
    for name, onnx_file in onnx_files.items():
        model = ov.convert_model(folder / onnx_file)
        for port in model.inputs:  # an input may carry internal aliases too: keep only its own name
            port.get_tensor().set_names({n for n in port.get_names() if n in IMAGE_INPUTS + TEXT_INPUTS})
        ov.save_model(model, folder / f"{name}.xml", compress_to_fp16=False)
        del model
        (folder / onnx_file).unlink()
    return {"image": "image.xml", "text": "text.xml"}


def _calibration_batches(calibration: Calibration, processors) -> tuple[list[np.ndarray], list[dict]]:
    """Preprocessed image batches and tokenised caption batches of the calibration sample (unreadable images
    are skipped: a catalogue may hold some)."""
    pixels = []
    for path in calibration.images:
        try:
            pixels.append(processors.preprocess(open_image(path)))
        except ImageError as exc:
            log.debug("calibration: %s", exc)
    if not pixels or not calibration.captions:
        raise CheckpointError("int8 calibration needs readable images and captions from the catalogue (--calibrate N)")
    images = [np.stack(pixels[s : s + CALIBRATION_BATCH]) for s in range(0, len(pixels), CALIBRATION_BATCH)]
    texts = []
    for start in range(0, len(calibration.captions), CALIBRATION_BATCH):
        tokens = processors.tokenizer(list(calibration.captions[start : start + CALIBRATION_BATCH]))
        texts.append({k: v.numpy() for k, v in tokens.items()})
    return images, texts


def _quantize_openvino(folder: Path, files: dict, images: list, texts: list) -> dict:
    """int8 towers beside the fp32 ones, which are then removed (the fp32 weights are memory-mapped while
    quantizing: overwriting them in place would pull the pages from under the process)."""
    import nncf
    import openvino as ov

    core = ov.Core()
    quantized_files = {}
    for name, data in (("image", [{"pixel_values": b} for b in images]), ("text", texts)):
        model = core.read_model(folder / files[name])
        names = [p.get_any_name() for p in model.inputs]
        dataset = nncf.Dataset(data, lambda item, names=names: {n: item[n] for n in names})
        # subset_size counts dataset items: batches here
        with keep_signal_stack():  # it compiles the model to collect statistics
            quantized = nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(data))
        quantized_files[name] = f"{name}_int8.xml"
        ov.save_model(quantized, folder / quantized_files[name], compress_to_fp16=False)
        del model, quantized
        for suffix in (".xml", ".bin"):
            (folder / files[name]).with_suffix(suffix).unlink()
    return quantized_files


def _quantize_onnx(folder: Path, files: dict, images: list, texts: list) -> dict:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, items: list[dict], names: list[str]) -> None:
            self.items = iter([{n: item[n] for n in names} for item in items])

        def get_next(self):
            return next(self.items, None)

    for name, data in (("image", [{"pixel_values": b} for b in images]), ("text", texts)):
        path = folder / files[name]
        names = [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
        prepared = path.with_suffix(".prep.onnx")
        quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(path),
            Reader(data, names),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm", "Conv"],
        )
        prepared.unlink(missing_ok=True)
    return files


@torch.inference_mode()
def measure_parity(loaded, folder: Path, manifest: ExportManifest) -> dict:
    """The exported towers against the torch fp32 path on the fixed probe."""
    family, model = loaded.family, loaded.model
    pixels, tokens = probe_inputs(loaded.processors)
    reference = (
        family.image_features(model, pixels.float()).numpy(),
        family.text_features(model, tokens["input_ids"], tokens["attention_mask"]).numpy(),
    )
    towers = ExportedTowers(folder, manifest)
    ids, mask = tokens["input_ids"].numpy(), tokens["attention_mask"].numpy()
    candidate = (towers.images(pixels.numpy()), towers.texts(ids, mask))
    figures = compare_vectors(reference, candidate)
    bound = MIN_COSINE[manifest.precision]
    figures |= {"min_cosine_bound": bound, "passed": figures["min_cosine"] >= bound and not figures["discordant_pairs"]}
    figures["runtime"] = towers.info
    return figures


def _check(fmt: str, precision: str, calibration: Calibration | None) -> None:
    if fmt not in FORMATS:
        raise CheckpointError(f"--format {fmt!r}: use onnx or openvino")
    if precision not in PRECISIONS:
        raise CheckpointError(f"--dtype {precision!r} for an export: use fp32, bf16 or int8")
    if precision == "bf16" and fmt == "onnx":
        raise CheckpointError("bf16 runs on OpenVINO (--format openvino); ONNX Runtime on CPU runs fp32 or int8")
    if precision == "int8" and calibration is None:
        raise CheckpointError("an int8 export is calibrated on your catalogue: pass a catalogue and --calibrate N")
    if precision == "bf16" and cpu_bf16_units() is None:
        log.warning("this CPU has no native bf16 units: OpenVINO will emulate bf16 (slow); export fp32 or int8")


def export_towers(
    loaded, fmt: str, precision: str, out: str | Path, calibration: Calibration | None = None
) -> ExportManifest:
    """Write ``loaded``'s towers as ``fmt`` in ``precision`` into ``out`` (replaced whole: written beside it, then
    renamed), with the manifest and the parity measured; returns the manifest."""
    _check(fmt, precision, calibration)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if loaded.dtype != torch.float32:
        raise ValueError("export from a model loaded in fp32 (load_model(..., dtype='fp32'))")
    model = loaded.model.eval()
    image, text = ImageTower(loaded.family, model).eval(), TextTower(loaded.family, model).eval()
    with _staging(out) as folder:
        files = (_export_onnx if fmt == "onnx" else _export_openvino)(image, text, loaded.processors, folder)
        if precision == "int8":
            images, texts = _calibration_batches(calibration, loaded.processors)
            files = (_quantize_onnx if fmt == "onnx" else _quantize_openvino)(folder, files, images, texts)
        manifest = ExportManifest(
            format=fmt,
            precision=precision,
            identity=loaded.identity.to_dict(),
            family=loaded.family.name,
            preprocessing=preprocessing_fields(loaded.preprocess),
            text=save_tokenizer(loaded.processors, loaded.family.name, folder),
            parity={},
            files=files,
            versions=_versions(),
            calibration=calibration.describe() if calibration else None,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        parity = measure_parity(loaded, folder, manifest)
        manifest = ExportManifest(**{**manifest.__dict__, "parity": parity})
        atomic_write_bytes(folder / "manifest.json", manifest.to_json().encode())
    log.info(
        "exported %s towers as %s %s into %s in %.1f s: min cosine %.5f to fp32, %d probe ranking pairs flipped (%s)",
        loaded.family.label,
        fmt,
        precision,
        out,
        time.perf_counter() - started,
        parity["min_cosine"],
        parity["discordant_pairs"],
        "passed" if parity["passed"] else "FAILED the gate",
    )
    return manifest


class _staging:
    """A temporary folder beside ``out`` that replaces ``out`` when the block succeeds (removed otherwise)."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def __enter__(self) -> Path:
        self.folder = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", dir=self.out.parent))
        return self.folder

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            return
        if self.out.exists():
            shutil.rmtree(self.out)
        self.folder.rename(self.out)


__all__ = ["MIN_COSINE", "Calibration", "export_towers", "measure_parity"]
