"""Exported towers (ONNX, OpenVINO IR) of every family, loaded back and compared with the torch path; the parity
gate for bf16 and int8 (a broken quantization refused, the model kept at the higher precision with the reason);
backend selection with and without bf16 units; an export run by plain ONNX Runtime / OpenVINO, as the README shows."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashion_retrieval import FashionEmbeddingModel
from fashion_retrieval.errors import CheckpointError, FashionRetrievalError, UnsupportedFeatureError
from fashion_retrieval.model.backends import Calibration, export
from fashion_retrieval.model.backends.exported import ExportManifest
from fashion_retrieval.model.loading import load_model
from fashion_retrieval.model.tiny_families import build_tiny
from tests.conftest import CAPTIONS
from tests.helpers import SPLIT_SPEEDS, force_backend_speeds

NEEDS_OPEN_CLIP = pytest.mark.skipif(importlib.util.find_spec("open_clip") is None, reason="runs in .venv-open-clip")
FAMILIES = [
    "blip",
    "clip",
    "siglip",
    "chinese_clip",
    pytest.param("open_clip", marks=[NEEDS_OPEN_CLIP, pytest.mark.open_clip]),
]
TEXTS = [*CAPTIONS, "dress", "The lady wears a long black coat with a belt and a white scarf."]
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = build_tiny(family, tmp_path_factory.mktemp(f"backend_{family}"), TEXTS)
        return built[family]

    return get


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(53, 37), (40, 64), (90, 70)]]


@pytest.fixture(scope="module")
def fp32_exports(bases, tmp_path_factory):
    """``export_towers`` of a family's tiny model to fp32 ONNX or OpenVINO, run once per (family, format) in this
    module: the tests that only read an export share it (none writes into the folder)."""
    done: dict[tuple[str, str], tuple[ExportManifest, Path]] = {}

    def get(family: str, fmt: str) -> tuple[ExportManifest, Path]:
        if (family, fmt) not in done:
            out = tmp_path_factory.mktemp(f"export_{family}_{fmt}") / "out"
            manifest = export.export_towers(load_model(bases(family), device="cpu", dtype="fp32"), fmt, "fp32", out)
            done[family, fmt] = manifest, out
        return done[family, fmt]

    return get


@pytest.fixture(scope="module")
def auto_exports(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("auto_exports")


@pytest.fixture
def fresh_decisions(tmp_path, monkeypatch, auto_exports) -> Path:
    """A cache of this test's own, so the backend decision is measured afresh; its exported towers are shared by
    the tests that use this (the same model's export is the same in each, and the decision is what they test)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "fashion_retrieval").mkdir()
    (tmp_path / "fashion_retrieval" / "exports").symlink_to(auto_exports, target_is_directory=True)
    return tmp_path


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
@pytest.mark.parametrize("family", FAMILIES)
def test_export_of_every_family_loads_back_with_the_same_vectors(family, fmt, bases, fp32_exports, images):
    folder = bases(family)
    manifest, out = fp32_exports(family, fmt)
    assert manifest.parity["passed"] and manifest.parity["max_abs_difference"] < 1e-4
    assert manifest.identity["family"] == family and (out / "manifest.json").is_file()
    torch_model = FashionEmbeddingModel(None, folder, device="cpu")
    exported = FashionEmbeddingModel(None, out)  # the export folder as the base: no torch weights
    assert exported.model is None and exported.backend == {"onnx": "onnxruntime", "openvino": "openvino"}[fmt]
    assert exported.identity.key == torch_model.identity.key
    # other batch sizes and caption lengths than the export's example: the axes are dynamic
    np.testing.assert_allclose(
        exported.encode_batch_images(images, batch_size=3), torch_model.encode_batch_images(images), atol=1e-4
    )
    np.testing.assert_allclose(
        exported.encode_batch_texts(TEXTS, batch_size=4), torch_model.encode_batch_texts(TEXTS), atol=1e-4
    )


def test_backend_option_exports_once_then_reuses(bases, images, caplog):
    caplog.set_level(logging.INFO, logger="fashion_retrieval")
    first = FashionEmbeddingModel(None, bases("clip"), device="cpu", backend="openvino", dtype="fp32")
    assert sum("exporting the towers" in r.getMessage() for r in caplog.records) == 1
    second = FashionEmbeddingModel(None, bases("clip"), device="cpu", backend="openvino", dtype="fp32")
    assert sum("exporting the towers" in r.getMessage() for r in caplog.records) == 1  # the cached export
    assert first.exported.folder == second.exported.folder
    record = second.precision.to_dict()
    assert record["backend"] == "openvino" and record["dtype"] == "float32" and record["parity"]["passed"]
    with pytest.raises(UnsupportedFeatureError, match="rerank with --backend torch"):
        second.itm_scores("a dress", images)


def test_loading_openvino_towers_leaves_the_threads_signal_stack_as_it_was(bases):
    """OpenVINO's compile replaces the calling thread's alternate signal stack; a stale one later turned a child's
    SIGCHLD into a SIGSEGV of the whole process (model/backends/signal_stack.py). Ours is put back."""
    from fashion_retrieval.model.backends.signal_stack import current_signal_stack

    def current():
        stack = current_signal_stack()
        assert stack is not None
        return stack.key()

    before = current()
    encoder = FashionEmbeddingModel(None, bases("siglip"), device="cpu", backend="openvino", dtype="fp32")
    assert encoder.exported is not None and encoder.encode_text(TEXTS[0]).shape == (encoder.embed_dim,)
    assert current() == before


def _identity_quantizer(folder, files, images, texts):
    """A 'quantization' that changes nothing: the gate must let it through."""
    return files


def _broken_quantizer(folder, files, images, texts):
    """A deliberately broken quantization: the image tower's graph replaced by one that scrambles its output."""
    import onnx
    from onnx import helper

    path = folder / files["image"]
    model = onnx.load(str(path))
    output = model.graph.output[0].name
    scrambled = output + "_scrambled"
    for node in model.graph.node:
        node.output[:] = [scrambled if o == output else o for o in node.output]
    model.graph.node.append(helper.make_node("Neg", [scrambled], [output]))  # every vector points the other way
    onnx.save(model, str(path))
    return files


def test_int8_gate_refuses_a_broken_quantization_and_keeps_fp32(bases, monkeypatch, caplog, tmp_path):
    calibration = Calibration([], TEXTS, "test")
    monkeypatch.setattr(export, "_calibration_batches", lambda calibration, processors: ([], []))
    monkeypatch.setattr(export, "_quantize_onnx", _broken_quantizer)
    caplog.set_level(logging.INFO, logger="fashion_retrieval")
    encoder = FashionEmbeddingModel(
        None, bases("siglip"), device="cpu", backend="onnxruntime", dtype="int8", calibration=calibration
    )
    assert encoder.precision.name == "float32" and encoder.backend == "onnxruntime"
    assert "int8 changed the probe's vectors or rankings" in encoder.precision.reason
    assert any("staying at a higher precision" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(export, "_quantize_onnx", _identity_quantizer)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # a fresh cache: export again
    kept = FashionEmbeddingModel(
        None, bases("siglip"), device="cpu", backend="onnxruntime", dtype="int8", calibration=calibration
    )
    assert kept.precision.name == "int8" and kept.precision.parity["passed"]


def test_real_int8_quantization_writes_int8_towers_and_measures_them(bases, tmp_path):
    from fashion_retrieval.data.synthetic import make_catalog

    catalog = make_catalog(tmp_path / "cat", n=12, seed=2, image_size=48)
    root = catalog.parent / "selected_images"
    import pandas as pd

    frame = pd.read_csv(catalog)
    calibration = Calibration([str(root / p) for p in frame["path"]], frame["caption"].tolist(), "catalogue")
    loaded = load_model(bases("clip"), device="cpu", dtype="fp32")
    manifest = export.export_towers(loaded, "openvino", "int8", tmp_path / "ov8", calibration)
    xml = (tmp_path / "ov8" / manifest.files["image"]).read_text()
    assert "FakeQuantize" in xml or "FakeConvert" in xml  # NNCF's int8 quantization nodes
    assert manifest.calibration == {"images": 12, "captions": 12, "source": "catalogue"}
    assert {"min_cosine", "discordant_pairs", "passed", "max_abs_difference"} <= set(manifest.parity)
    onnx8 = export.export_towers(loaded, "onnx", "int8", tmp_path / "onnx8", calibration)
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "onnx8" / onnx8.files["text"])).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops


@pytest.mark.parametrize("units", [None, "AVX512-BF16"])
def test_openvino_precision_follows_the_cpus_bf16_units(units, bases, monkeypatch):
    from fashion_retrieval.model import backends

    monkeypatch.delenv("FASHION_RETRIEVAL_DTYPE")
    monkeypatch.setattr(backends, "cpu_bf16_units", lambda: units)
    tried = []
    real = backends._exported

    def spy(base, checkpoint, backend, precision, **kw):
        tried.append(precision)
        return real(base, checkpoint, backend, precision, **kw)

    monkeypatch.setattr(backends, "_exported", spy)
    FashionEmbeddingModel(None, bases("siglip"), device="cpu", backend="openvino")
    assert tried[0] == ("bf16" if units else "fp32") and "int8" not in tried  # no int8 without a calibration


def test_auto_keeps_the_fewest_seconds_per_item_and_caches_the_choice(bases, monkeypatch, fresh_decisions, caplog):
    from fashion_retrieval.model.backends import choice

    caplog.set_level(logging.INFO, logger="fashion_retrieval")
    encoder = FashionEmbeddingModel(None, bases("blip"), device="cpu", backend="auto")
    record = json.loads((fresh_decisions / "fashion_retrieval" / "backend.json").read_text())
    (decision,) = record.values()
    timed = {b: f for b, f in decision["figures"].items() if "error" not in f and b != "apart"}
    assert set(timed) == set(choice.CANDIDATES)
    single = min(timed, key=lambda b: timed[b]["seconds_per_item"])
    apart = decision["figures"].get("apart")
    by_tower = {rate: max(timed, key=lambda b: timed[b][rate]) for rate in ("images_per_second", "captions_per_second")}
    assert (apart is not None) == (len(set(by_tower.values())) == 2)  # timed apart only where the towers differ
    if apart is not None and apart["seconds_per_item"] < (1 - choice.SPLIT_MARGIN) * timed[single]["seconds_per_item"]:
        assert (decision["image"]["backend"], decision["text"]["backend"]) == tuple(by_tower.values())
        assert encoder.backend == "/".join(by_tower.values())
    else:
        assert decision["image"]["backend"] == decision["text"]["backend"] == single == encoder.backend
    assert any("backend auto: images on" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(choice, "_seconds_per_item", lambda encoder: pytest.fail("measured again"))
    assert FashionEmbeddingModel(None, bases("blip"), device="cpu", backend="auto").backend == encoder.backend


def test_towers_run_apart_only_when_that_beats_one_backend_per_item(bases, monkeypatch, fresh_decisions):
    """torch is fastest on images and OpenVINO on captions, but the pair taking turns measures slower per item
    than torch alone (as two runtimes on the same cores can): auto keeps torch for both towers."""
    force_backend_speeds(monkeypatch, {**SPLIT_SPEEDS, "torch/openvino": (9.0, 9.0)})
    encoder = FashionEmbeddingModel(None, bases("blip"), device="cpu", backend="auto", dtype="fp32")
    assert encoder.backend == "torch" and encoder.model is not None
    (decision,) = json.loads((fresh_decisions / "fashion_retrieval" / "backend.json").read_text()).values()
    assert decision["figures"]["apart"]["seconds_per_item"] > decision["figures"]["torch"]["seconds_per_item"]


def test_auto_runs_each_tower_on_its_fastest_backend(bases, images, monkeypatch, fresh_decisions):
    """Figures where torch wins on images and OpenVINO on captions: one encoder, the image tower on torch, the text
    tower on OpenVINO, each giving its own backend's vectors; the record names both and passes the parity rule."""
    from fashion_retrieval.search.searcher import ensure_comparable_precision

    force_backend_speeds(monkeypatch)
    base = bases("blip")
    split = FashionEmbeddingModel(None, base, device="cpu", backend="auto", dtype="fp32")
    on_torch = FashionEmbeddingModel(None, base, device="cpu", dtype="fp32")
    on_openvino = FashionEmbeddingModel(None, base, device="cpu", backend="openvino", dtype="fp32")
    np.testing.assert_array_equal(split.encode_batch_images(images), on_torch.encode_batch_images(images))
    np.testing.assert_array_equal(split.encode_batch_texts(TEXTS), on_openvino.encode_batch_texts(TEXTS))
    record = split.precision.to_dict()
    assert record["backend"] == "torch/openvino" and record["dtype"] == "float32" and record["parity"]["passed"]
    assert record["towers"]["text"]["backend"] == "openvino" and "backend" not in record["towers"]["image"]
    assert split.has_itm and split.can_pause  # the torch side brings the matching head and the pause points
    assert split.itm_scores(TEXTS[0], images).shape == (len(images),)
    ensure_comparable_precision(on_torch.precision.to_dict(), record, "a torch fp32 collection")  # no error


def test_bad_backend_requests_are_one_line_errors(bases):
    with pytest.raises(CheckpointError, match="unknown backend 'tensorrt'"):
        FashionEmbeddingModel(None, bases("clip"), device="cpu", backend="tensorrt")
    with pytest.raises(CheckpointError, match="bf16 runs on OpenVINO"):
        export.export_towers(load_model(bases("clip"), device="cpu", dtype="fp32"), "onnx", "bf16", "/tmp/x")
    with pytest.raises(CheckpointError, match="calibrated on your catalogue"):
        FashionEmbeddingModel(None, bases("clip"), device="cpu", backend="openvino", dtype="int8")
    with pytest.raises(FashionRetrievalError, match=r"no backend could run this model \(torch: unknown dtype 'int8'"):
        FashionEmbeddingModel(None, bases("clip"), device="cpu", backend="auto", dtype="int8")
    with pytest.raises(CheckpointError, match="--dtype fp16 on onnxruntime"):
        FashionEmbeddingModel(None, bases("clip"), device="cpu", backend="onnxruntime", dtype="fp16")


def _readme_snippet() -> str:
    text = README.read_text()
    found = re.search(r"<!-- plain-runtime -->\s*```python\n(.*?)```", text, re.S)
    assert found, "README.md lost its plain-runtime example"
    return found.group(1)


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_the_readmes_plain_runtime_lines_run_without_this_package(fmt, bases, fp32_exports, images, tmp_path):
    folder = bases("clip")
    _, exported = fp32_exports("clip", fmt)
    image = tmp_path / "query.jpg"
    images[2].save(image)
    program = (
        "import sys\nsys.modules['fashion_retrieval'] = None  # this package may not be used\n"
        + _readme_snippet().replace("exported/", f"{exported}/").replace("query.jpg", str(image))
        + "\nimport json; print(json.dumps({'image': image_vector.tolist(), 'text': text_vector.tolist()}))\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    vectors = json.loads(result.stdout.strip().splitlines()[-1])
    encoder = FashionEmbeddingModel(None, folder, device="cpu")
    np.testing.assert_allclose(vectors["image"], encoder.encode_image(image), atol=1e-4)
    np.testing.assert_allclose(vectors["text"], encoder.encode_text(TEXTS[0]), atol=1e-4)


def test_manifest_records_the_exact_preprocessing(bases, fp32_exports):
    folder = bases("clip")
    manifest, out = fp32_exports("clip", "openvino")
    read = ExportManifest.read(out)
    assert read.preprocessor() == FashionEmbeddingModel(None, folder, device="cpu").preprocess
    assert read.text["tokenizer"] == "tokenizer" and read.text["max_length"] == 77 and manifest.versions["openvino"]
