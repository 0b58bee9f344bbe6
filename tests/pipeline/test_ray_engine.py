"""The Ray Data engine on a local Ray instance: the in-process engine's folder, bad images, kills of the driver
and of an actor (nothing lost or doubled), sizing, and the CLI's errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from fashion_retrieval import load_embeddings
from fashion_retrieval.config import EmbedConfig, ModelConfig
from fashion_retrieval.data.synthetic import make_catalog
from fashion_retrieval.errors import FashionRetrievalError, ImageError
from fashion_retrieval.pipeline.embed import embed_catalog
from tests.helpers import embed_config
from tests.pipeline.conftest import BAD

ray = pytest.importorskip("ray", reason='the Ray engine needs pip install "fashion-retrieval[ray]"')
pytest.importorskip("ray.data")

from fashion_retrieval.pipeline.ray_cluster import plan_resources  # noqa: E402

# Every Ray test on one worker: one local Ray instance at a time on the machine, started once for the in-process
# tests (a second instance beside it only slows both)
pytestmark = pytest.mark.xdist_group("ray")
ACTOR_TITLE = "MapWorker(MapBatches(EncodeActor))"  # how Ray titles an encoder actor's process
BIG = 120


def _config(catalog, base, out, **kw) -> EmbedConfig:
    return embed_config(catalog, base, out, text_batch_size=kw.pop("text_batch_size", 8), **kw)


def _same_folder(a: Path, b: Path) -> None:
    left, right = load_embeddings(a), load_embeddings(b)
    pd.testing.assert_frame_equal(left.metadata, right.metadata)
    np.testing.assert_allclose(left.image_embeddings, right.image_embeddings, atol=1e-6, rtol=0)
    if left.text_embeddings is not None or right.text_embeddings is not None:
        np.testing.assert_allclose(left.text_embeddings, right.text_embeddings, atol=1e-6, rtol=0)
    assert left.failures == right.failures


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the in-process tests; a CLI run without --ray-address starts its own beside it
    (Ray joins an instance on its own only where `ray start` recorded one)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def big_catalog(tmp_path_factory) -> Path:
    """Enough large images that a run lasts a few seconds: room to kill something mid-run."""
    return make_catalog(tmp_path_factory.mktemp("ray_big"), n=BIG, seed=3, image_size=640)


@pytest.fixture(scope="module")
def big_reference(tmp_path_factory, tiny_base, big_catalog) -> Path:
    """The in-process engine's uninterrupted folder for ``big_catalog`` (shard size changes no output)."""
    out = tmp_path_factory.mktemp("ray_big_reference") / "local"
    embed_catalog(_config(big_catalog, tiny_base, out), progress=False)
    return out


def test_plan_sizes_actors_and_decoding_to_the_cluster():
    cpu = _config("c.csv", "b", "o", batch_size=4, text_batch_size=16)
    plan = plan_resources(cpu, cpus=2, gpus=0, nodes=1, node_cpus=2, pixel_bytes=3 * 384 * 384 * 4, has_text=True)
    # one actor whose threads take both cores; one logical CPU left for decoding, at idle priority
    assert (plan.actors, plan.cpus_per_actor, plan.threads_per_actor, plan.decode_tasks) == (1, 1, 2, 1)
    assert plan.decode_at_idle_priority and plan.rows_per_task == 16  # a caption batch's worth of rows
    assert plan.object_store_budget == 16 * 3 * 384 * 384 * 4 * 4  # 2 per actor + 1 decoding + 1 spare
    gpu = EmbedConfig("c.csv", ModelConfig("b"), batch_size=128, text_batch_size=256, gpus_per_actor=1)
    plan = plan_resources(gpu, cpus=96, gpus=8, nodes=1, node_cpus=96, pixel_bytes=3 * 384 * 384 * 4, has_text=True)
    assert (plan.actors, plan.cpus_per_actor, plan.decode_tasks) == (8, 1, 88) and not plan.decode_at_idle_priority
    assert plan.rows_per_task == 128  # 256 rows would be a 450 MB block: one image batch per task
    with pytest.raises(FashionRetrievalError, match="needs 16 GPUs; the Ray cluster has 8"):
        plan_resources(EmbedConfig("c", ModelConfig("b"), gpus_per_actor=2, actors=8), 96, 8, 1, 96, 1, True)
    with pytest.raises(FashionRetrievalError, match="no CPU for decoding"):
        plan_resources(EmbedConfig("c", ModelConfig("b"), cpus_per_actor=2), 2, 0, 1, 2, 1, True)


def test_decoding_workers_do_not_import_torch():
    probe = "import sys, fashion_retrieval.pipeline.ray_workers; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "False\n"


def _cli(catalog, base, out, *extra) -> list[str]:
    return [
        sys.executable, "-m", "fashion_retrieval", "embed", str(catalog), "--base", str(base), "--out", str(out),
        "--batch-size", "2", "--shard-size", "4", "--device", "cpu", "--engine", "ray", "--json", *extra,
    ]  # fmt: skip


def test_bad_ray_address_is_one_line_naming_it(tiny_base, messy_catalog, tmp_path):
    result = subprocess.run(
        _cli(messy_catalog, tiny_base, tmp_path / "e", "--ray-address", "127.0.0.1:1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "127.0.0.1:1" in error[0] and "ray start --head" in error[0], result.stderr


@pytest.mark.slow
def test_driver_sigkill_then_rerun_resumes_and_equals_uninterrupted(
    local_ray, tiny_base, big_catalog, big_reference, tmp_path
):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cut = tmp_path / "cut"
    driver = subprocess.Popen(
        _cli(big_catalog, tiny_base, cut), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    partial, deadline = cut / ".partial", time.time() + 120
    while time.time() < deadline and len(list(partial.glob("shard-*.npz"))) < 3:
        time.sleep(0.005)
    ray_processes = {p: _title(p) for p in psutil.Process(driver.pid).children(recursive=True)}
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    done_before = len(list(partial.glob("shard-*.npz")))
    assert 3 <= done_before < BIG // 4 and not (cut / "manifest.json").exists()
    # the local Ray instance the driver started goes with it (fate sharing): no worker is left holding a
    # model; Ray's two agent processes notice their raylet's death on their own, a minute or so later
    workers = [p for p, title in ray_processes.items() if "Agent" not in title]
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert any(ACTOR_TITLE in ray_processes[p] for p in gone) and not alive, [ray_processes[p] for p in alive]
    # the rerun joins a running cluster by address (--ray-address), here this process's local instance
    address = local_ray.get_runtime_context().gcs_address
    rerun = subprocess.run(
        _cli(big_catalog, tiny_base, cut, "--ray-address", address), env=env, capture_output=True, text=True, check=True
    )
    summary = json.loads(rerun.stdout)
    assert summary["resumed_shards"] >= done_before and summary["embedded"] == BIG
    assert summary["engine"] == "ray" and summary["computed"] == BIG - 4 * summary["resumed_shards"]
    _same_folder(big_reference, cut)


def test_another_model_family_gives_the_local_engines_folder(local_ray, tmp_path):
    """The driver reads the family's tokenizer and preprocessing from the folder (SigLIP pads captions to 64
    tokens); the actors load the model: same vectors as in-process. (CLIP, which resizes the short side and crops,
    runs through Ray in the exported-backend test below.)"""
    from fashion_retrieval.model.tiny_families import build_tiny

    family = "siglip"
    catalog = make_catalog(tmp_path / "cat", n=20, seed=5, image_size=40)
    base = build_tiny(family, tmp_path / "base", pd.read_csv(catalog)["caption"])
    embed_catalog(_config(catalog, base, tmp_path / "local"), progress=False)
    summary = embed_catalog(_config(catalog, base, tmp_path / "ray", engine="ray"), progress=False)
    assert summary["engine"] == "ray" and summary["embedded"] == 20
    _same_folder(tmp_path / "local", tmp_path / "ray")
    assert load_embeddings(tmp_path / "ray").identity["family"] == family


def test_same_folder_as_local_engine_with_bad_images(local_ray, tiny_base, messy_catalog, tmp_path):
    embed_catalog(_config(messy_catalog, tiny_base, tmp_path / "local"), progress=False)
    summary = embed_catalog(_config(messy_catalog, tiny_base, tmp_path / "ray", engine="ray"), progress=False)
    assert (summary["items"], summary["failed"], summary["engine"]) == (40, len(BAD), "ray")
    _same_folder(tmp_path / "local", tmp_path / "ray")
    failures = {f["id"]: f["reason"] for f in load_embeddings(tmp_path / "ray").failures}
    for key, reason in BAD.items():
        assert reason in failures[f"odd-{key}"]
    manifest = load_embeddings(tmp_path / "ray").manifest
    engine = manifest["engine"]
    assert (engine["name"], engine["ray_version"], engine["actors"], engine["devices"]) == (
        "ray",
        ray.__version__,
        1,
        ["cpu"],
    )
    assert engine["actor_restarts_observed"] == 0 and engine["object_store_peak_bytes"] > 0
    # the workers saw the tests' FASHION_RETRIEVAL_DTYPE=fp32 (inherited from this process)
    assert manifest["precision"]["dtype"] == "float32" and "FASHION_RETRIEVAL_DTYPE" in manifest["precision"]["reason"]
    assert summary["stage_seconds"]["startup"] > 0 and summary["images_per_second"] > 0
    assert not (tmp_path / "ray" / ".partial").exists()


def test_placeholder_and_fail_modes_as_local(local_ray, tiny_base, messy_catalog, tmp_path):
    for out, engine in (("local", "local"), ("ray", "ray")):
        config = _config(messy_catalog, tiny_base, tmp_path / out, engine=engine, on_error="placeholder")
        summary = embed_catalog(config, progress=False)
        assert (summary["embedded"], summary["placeholders"], summary["failed"]) == (40, len(BAD), 0)
    _same_folder(tmp_path / "local", tmp_path / "ray")
    assert load_embeddings(tmp_path / "ray").metadata["placeholder"].sum() == len(BAD)
    with pytest.raises(ImageError, match="missing.jpg: file not found"):
        embed_catalog(_config(messy_catalog, tiny_base, tmp_path / "f", engine="ray", on_error="fail"), progress=False)
    assert not (tmp_path / "f" / "manifest.json").exists()


def test_an_exported_backend_gives_the_in_process_engines_folder(local_ray, tmp_path):
    """``--backend openvino`` through Ray, on a CLIP model (the driver resizes the short side and crops, as the
    folder says): the same folder and vectors as the in-process engine on that backend."""
    from fashion_retrieval.model.tiny_families import build_tiny

    catalog = make_catalog(tmp_path / "cat", n=20, seed=9, image_size=48)
    base = build_tiny("clip", tmp_path / "base", pd.read_csv(catalog)["caption"])
    openvino = ModelConfig(str(base), device="cpu", backend="openvino")
    local = embed_catalog(replace(_config(catalog, base, tmp_path / "local"), model=openvino), progress=False)
    config = replace(_config(catalog, base, tmp_path / "ray", engine="ray"), model=openvino)
    summary = embed_catalog(config, progress=False)
    assert summary["engine"] == "ray" and summary["embedded"] == local["embedded"] == 20
    _same_folder(tmp_path / "local", tmp_path / "ray")
    ray_folder = load_embeddings(tmp_path / "ray")
    assert ray_folder.manifest["precision"]["backend"] == "openvino" and ray_folder.identity["family"] == "clip"


def _title(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _kill_first_actor_after_a_shard(partial: Path, killed: list[int]) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and not list(partial.glob("shard-*.npz")):
        time.sleep(0.005)
    for process in psutil.Process().children(recursive=True):
        try:
            if ACTOR_TITLE in " ".join(process.cmdline()):
                process.send_signal(signal.SIGKILL)
                killed.append(process.pid)
                return
        except psutil.Error:
            continue


@pytest.mark.slow
def test_actor_killed_mid_run_is_restarted_and_nothing_is_lost_or_doubled(
    local_ray, tiny_base, big_catalog, big_reference, tmp_path
):
    killed: list[int] = []
    killer = threading.Thread(target=_kill_first_actor_after_a_shard, args=(tmp_path / "ray" / ".partial", killed))
    killer.start()
    summary = embed_catalog(_config(big_catalog, tiny_base, tmp_path / "ray", engine="ray"), progress=False)
    killer.join()
    assert len(killed) == 1 and summary["embedded"] == summary["computed"] == BIG
    engine = load_embeddings(tmp_path / "ray").manifest["engine"]
    pids = [a["pid"] for a in engine["actor_processes"]]
    assert killed[0] in pids and len(pids) == 2 and engine["actor_restarts_observed"] == 1
    _same_folder(big_reference, tmp_path / "ray")
