"""The Ray engine's cluster side: joining or starting Ray, sizing the job to it, watching its object store."""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
from dataclasses import dataclass

from fashion_retrieval.config import EmbedConfig
from fashion_retrieval.errors import FashionRetrievalError

log = logging.getLogger(__name__)

INSTALL = 'pip install "fashion-retrieval[ray]"'
# Settings that change the vectors or where models load from: the driver's value goes to every worker.
FORWARDED_ENV = ("FASHION_RETRIEVAL_DTYPE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME")
MAX_BLOCK_BYTES = 64 << 20
TASKS_IN_FLIGHT_PER_ACTOR = 2  # one encoding, one waiting: no bubble between batches, no pile-up
HINT = "start one there with `ray start --head`, or leave out --ray-address to start a local instance"


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (ray without the data extra lacks it)
    except ImportError as exc:
        raise FashionRetrievalError(f"--engine ray needs Ray Data ({exc.name} is missing): {INSTALL}") from exc
    return ray


def check_reachable(address: str) -> None:
    """Fail in seconds, naming the address, where ``ray.init`` would wait for minutes on a dead one."""
    if address == "auto" or address.startswith("anyscale://"):
        return
    host_port = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise FashionRetrievalError(f"--ray-address {address!r}: use auto, HOST:6379 or ray://HOST:10001")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise FashionRetrievalError(f"--ray-address {address}: no Ray cluster answers there ({exc}); {HINT}") from exc


def connect(ray, address: str | None) -> tuple[bool, str]:
    """Join ``address`` or start a local instance (unless this process already has Ray); (connected here, where)."""
    if ray.is_initialized():
        where = "this process's Ray (already initialised)"
        if address:
            log.warning("--ray-address %s not joined: this process is already connected to Ray", address)
        log.info("Ray %s: %s", ray.__version__, where)
        return False, where
    if address:
        check_reachable(address)
    # A local instance's workers inherit this process's environment; a cluster's get these settings with the
    # job (a runtime_env costs every worker start, so only where it is needed).
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ} if address else {}
    try:
        _init(ray, address, env)
    except (ConnectionError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if address:
            message = f"--ray-address {address}: cannot join a Ray cluster ({reason}); {HINT}"
            raise FashionRetrievalError(message) from exc
        raise FashionRetrievalError(f"cannot start a local Ray instance: {reason}") from exc
    where = address or "a local Ray instance started for this run"
    log.info("Ray %s: %s", ray.__version__, where)
    return True, where


def _init(ray, address: str | None, env: dict) -> None:
    runtime_env = {"env_vars": env} if env else None
    options = dict(include_dashboard=False, logging_level=logging.WARNING, runtime_env=runtime_env)
    try:
        ray.init(address=address, **options)
    except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception when its raylet is slow to register
        # Ray waits a fixed 30 s for a local raylet to register; a machine whose cores are all busy (a test suite,
        # another job) can miss that once. Start the local instance again, once; a cluster's failure stands.
        if address or "timed out during startup" not in str(exc):
            raise
        log.warning("the local Ray instance was slow to start (%s): starting it again", str(exc).split(".")[0])
        ray.shutdown()
        ray.init(address=address, **options)


@dataclass(frozen=True)
class RayPlan:
    """How the job uses the cluster, and why (logged and recorded in the manifest)."""

    actors: int
    gpus_per_actor: float
    cpus_per_actor: float  # logical CPUs Ray reserves per actor
    threads_per_actor: int  # torch threads in each actor
    decode_tasks: int  # decoding tasks at once
    decode_at_idle_priority: bool  # decoding shares the model's cores: run it in their idle time
    rows_per_task: int
    object_store_budget: int  # bytes of decoded images in flight, at most
    why: str


def plan_resources(
    config: EmbedConfig, cpus: float, gpus: float, nodes: int, node_cpus: float, pixel_bytes: int, has_text: bool
) -> RayPlan:
    """Actors, CPUs and GPUs for a cluster with ``cpus``/``gpus`` in all over ``nodes`` nodes (the smallest with
    ``node_cpus`` CPUs), for images of ``pixel_bytes`` once preprocessed (and captions with ``has_text``)."""
    batch, text_batch = config.batch_size or 1, config.text_batch_size or 1
    gpu = config.gpus_per_actor > 0
    if gpu:
        if gpus < config.gpus_per_actor:
            raise FashionRetrievalError(
                f"--gpus-per-actor {config.gpus_per_actor:g}: the Ray cluster has {gpus:g} GPUs; "
                "use fewer, or leave it at 0 to encode on CPUs"
            )
        actors = config.actors or max(1, int(gpus // config.gpus_per_actor))
        why = "one actor per GPU" if config.actors is None else "--actors"
        actor_cpus = config.cpus_per_actor or 1.0
        threads = max(1, int(actor_cpus))
    else:
        actors = config.actors or 1
        why = (
            "a CPU model uses every core of its node (--actors N for more nodes)"
            if config.actors is None
            else "--actors"
        )
        per_node = math.ceil(actors / max(1, nodes))
        share = max(1, int(node_cpus // per_node))
        # The model's threads take the whole share; Ray's logical CPUs leave one per node for decoding, which
        # runs at idle priority in the model's gaps, as the in-process engine's workers do.
        actor_cpus = config.cpus_per_actor or float(max(1, share - 1))
        threads = max(1, int(config.cpus_per_actor)) if config.cpus_per_actor else share
    needed_gpus = actors * config.gpus_per_actor
    if needed_gpus > gpus + 1e-9:
        raise FashionRetrievalError(
            f"--actors {actors} x --gpus-per-actor {config.gpus_per_actor:g} needs {needed_gpus:g} GPUs; "
            f"the Ray cluster has {gpus:g}"
        )
    free_cpus = cpus - actors * actor_cpus
    if free_cpus < 1:
        raise FashionRetrievalError(
            f"{actors} actor(s) x {actor_cpus:g} CPUs leave no CPU for decoding images on a Ray cluster of "
            f"{cpus:g} CPUs: lower --cpus-per-actor or --actors"
        )
    # Captions are encoded with the images of the same rows: a task holds a caption batch's worth of rows.
    steps = math.ceil(text_batch / batch) if has_text else 1
    steps = max(1, min(steps, MAX_BLOCK_BYTES // max(1, batch * pixel_bytes)))
    rows = batch * steps
    decode_tasks = max(1, int(free_cpus))
    budget = rows * pixel_bytes * (actors * TASKS_IN_FLIGHT_PER_ACTOR + decode_tasks + 1)
    return RayPlan(actors, config.gpus_per_actor, actor_cpus, threads, decode_tasks, not gpu, rows, budget, why)


class StoreWatcher:
    """Samples the cluster's object-store use while the job runs (peak and spilled bytes, for the manifest).

    Uses Ray's internal memory API; where that is missing (another Ray version, Ray Client) it records None."""

    def __init__(self, ray, record: dict, period: float = 0.5) -> None:
        self.ray, self.record, self.period = ray, record, period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ray-object-store-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            from ray._private.internal_api import get_memory_info_reply, get_state_from_address

            state = get_state_from_address(self.ray.get_runtime_context().gcs_address)
        except Exception as exc:  # noqa: BLE001 - an optional measurement must never fail the job
            log.debug("object-store use not measured: %s", exc)
            return
        while True:
            try:
                stats = get_memory_info_reply(state, timeout_seconds=5).store_stats
                used = int(stats.object_store_bytes_used)
                self.record["peak_bytes"] = max(self.record["peak_bytes"] or 0, used)
                self.record["spilled_bytes"] = int(stats.spilled_bytes_total)
            except Exception as exc:  # noqa: BLE001
                log.debug("object-store sample failed: %s", exc)
            if self._stop.wait(self.period):
                return
