"""The embedding job on Ray Data: decoding tasks on CPUs -> a pool of encoder actors -> shards on the driver.

The stages are the in-process engine's (``decode.decode_item`` per image, ``stages.encode_images`` per batch,
``stages.assemble_shards`` on the driver), so the folder is the same: the runner in ``embed.py`` still owns
it (lock, finished shards skipped, atomic shard writes, assembly). Only vectors travel back (2 x 256 floats
per item), so only the driver writes ``--out``; every node must read the images. Each row travels with the
caption of a row of its shard in the in-process engine's caption order (by token length), so an actor encodes
the same caption batches as the in-process engine does.

Memory: the rows to do are cut into tasks of ``rows_per_task`` consecutive rows, one decoded block each (at
most ~64 MB unless one image batch is larger); each actor holds at most two blocks (one encoding, one
prefetched), decoding runs at most ``decode_tasks`` at once, and Ray Data's object-store budget for the job is
the sum of those, so decoded images cannot pile up when decoding outruns the encoders.

Failures: Ray Data restarts a dead actor and resends its batches (``max_restarts=-1``,
``max_task_retries=-1``, its defaults, kept) and retries dead decoding tasks; ``assemble_shards`` keeps a
row delivered twice once and refuses a shard with a row missing. A killed driver loses at most the shards
not yet written: the same command continues.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from fashion_retrieval.config import EmbedConfig
from fashion_retrieval.data.images import ImagePreprocessor
from fashion_retrieval.errors import FashionRetrievalError, ImageError
from fashion_retrieval.pipeline.job import calibration_sample
from fashion_retrieval.pipeline.ray_cluster import (
    TASKS_IN_FLIGHT_PER_ACTOR,
    RayPlan,
    StoreWatcher,
    check_reachable,
    connect,
    import_ray,
    plan_resources,
)
from fashion_retrieval.pipeline.ray_workers import EncodeActor, decode_rows
from fashion_retrieval.pipeline.writer import STATUS_FAILED

if TYPE_CHECKING:
    from fashion_retrieval.identity import ModelIdentity
    from fashion_retrieval.pipeline.job import EmbedJob
    from fashion_retrieval.pipeline.stages import ImageBatch

log = logging.getLogger(__name__)

MAX_INPUT_BLOCKS = 1000
DECODE_WORKER_BYTES = 192 << 20  # a decoding worker's own heap (Python, Ray, Arrow, PIL): ~110 MB measured


class RayEngine:
    """Computes the shards of an ``EmbedJob`` on Ray Data (see the module doc); the runner writes them."""

    def __init__(self, config: EmbedConfig) -> None:
        self.config = config
        self.ray = import_ray()
        self._identity: ModelIdentity | None = None
        self._preprocess: ImagePreprocessor | None = None
        self._tokenizer = None  # the model's caption tokenizer (for length-sorted caption batches)
        self._plan: RayPlan | None = None
        self._owns_ray = False
        self._address = ""
        self._pixel_bytes = 0
        self._actors: dict[str, dict] = {}  # "host:pid" -> what the actor reported when ready
        self._restarts = 0
        self._seconds = {"wait": 0.0, "startup": 0.0, "image": 0.0, "text": 0.0, "decode": 0.0}
        self._store = {"peak_bytes": None, "spilled_bytes": None}
        if config.ray_address and not self.ray.is_initialized():
            # a cluster nobody answers for is one line at once, not after the model's description (transformers)
            check_reachable(config.ray_address)

    # -- what the runner asks before the run ------------------------------------------------------
    def identity(self) -> ModelIdentity:
        """The model's identity from its files: the driver never loads the weights."""
        if self._identity is None:
            from fashion_retrieval.model.loading import describe_model

            m = self.config.model
            description = describe_model(m.base, m.checkpoint, lora_alpha=m.lora_alpha)
            self._identity, self._tokenizer = description.identity, description.processors.tokenizer
            self._preprocess = replace(description.processors.preprocess, jpeg_draft=self.config.jpeg_draft)
        return self._identity

    def device_type(self) -> str:
        """Where the actors encode: on GPUs when they get some (picks the batch sizes)."""
        device = (self.config.model.device or "auto").split(":")[0]
        if device == "cuda" and self.config.gpus_per_actor <= 0:
            raise FashionRetrievalError("--device cuda with --engine ray: give the actors GPUs with --gpus-per-actor 1")
        if device != "auto":
            return device
        return "cuda" if self.config.gpus_per_actor > 0 else "cpu"

    # -- the run ----------------------------------------------------------------------------------
    def _connect(self) -> None:
        self._owns_ray, self._address = connect(self.ray, self.config.ray_address)

    def _make_plan(self, job: EmbedJob) -> RayPlan:
        ray = self.ray
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        totals = ray.cluster_resources()
        node_cpus = min((n["Resources"].get("CPU", 0.0) for n in nodes if n["Resources"].get("CPU")), default=1.0)
        preprocess = self._preprocess
        pixel_bytes = self._pixel_bytes = 3 * preprocess.height * preprocess.width  # uint8, resized
        plan = plan_resources(
            job.config,
            totals.get("CPU", 0.0),
            totals.get("GPU", 0.0),
            len(nodes),
            node_cpus,
            pixel_bytes,
            job.catalog.has_text,
        )
        log.info(
            "Ray cluster: %d node(s), %g CPUs, %g GPUs; %d encoder actor(s) (%s), each %g GPU(s), %g CPU(s), "
            "%d thread(s); %d decoding task(s) at once%s; %d rows per task; decoded images in flight <= %.0f MB",
            len(nodes),
            totals.get("CPU", 0.0),
            totals.get("GPU", 0.0),
            plan.actors,
            plan.why,
            plan.gpus_per_actor,
            plan.cpus_per_actor,
            plan.threads_per_actor,
            plan.decode_tasks,
            " at idle priority (they share the model's cores)" if plan.decode_at_idle_priority else "",
            plan.rows_per_task,
            plan.object_store_budget / 2**20,
        )
        return plan

    def _input_blocks(self, job: EmbedJob, plan: RayPlan) -> list:
        """The rows to do as Arrow blocks (index, path, and the caption that travels with each row)."""
        import pyarrow as pa

        rows = np.concatenate([job.shard_rows[k] for k in job.todo])
        paths = job.catalog.frame["path"].to_numpy()
        captions = np.asarray(job.captions, dtype=object) if job.captions else None
        caption_rows = self._caption_order(job, captions) if captions is not None else None
        # Input blocks are whole tasks (so image batches are the in-process engine's: batch k of the rows to
        # do); past MAX_INPUT_BLOCKS, several tasks' rows share a block (each block costs the driver ~3 ms).
        tasks = math.ceil(len(rows) / plan.rows_per_task)
        per_block = plan.rows_per_task * math.ceil(tasks / MAX_INPUT_BLOCKS)
        blocks = []
        for start in range(0, len(rows), per_block):
            part = rows[start : start + per_block]
            columns = {"index": pa.array(part), "path": pa.array(paths[part])}
            if captions is not None:
                paired = caption_rows[start : start + per_block]
                columns |= {"caption_index": pa.array(paired), "caption": pa.array(captions[paired])}
            blocks.append(pa.table(columns))
        return blocks

    def _dataset(self, job: EmbedJob, plan: RayPlan):
        from ray.data import ActorPoolStrategy, DataContext, TaskPoolStrategy
        from ray.util import log_once

        blocks = self._input_blocks(job, plan)
        context = DataContext.get_current()
        saved = (context.execution_options, context.enable_progress_bars, context.target_max_block_size)
        try:  # a Dataset keeps a copy of the context it was made under
            options = context.execution_options.__class__()
            options.preserve_order = True  # shards come back in catalogue order, as in-process
            options.resource_limits = options.resource_limits.copy(object_store_memory=plan.object_store_budget)
            context.execution_options, context.enable_progress_bars = options, False
            log_once("ray_data_progress_manager_disabled")  # our bar replaces Ray's: no notice that it is off
            # one decoded task = one block, whatever its size (no re-slicing and copying on the way to an actor)
            task_bytes = plan.rows_per_task * self._pixel_bytes
            context.target_max_block_size = max(context.target_max_block_size or 0, task_bytes + (1 << 20))
            ds = self.ray.data.from_arrow(blocks).map_batches(
                decode_rows,
                batch_size=plan.rows_per_task,
                compute=TaskPoolStrategy(size=plan.decode_tasks),
                num_cpus=1,
                # the heap a task needs; being unlike the actors' requests, it also keeps Ray from fusing
                # decoding into the actors (where it would stall the model instead of overlapping it)
                memory=DECODE_WORKER_BYTES + 2 * task_bytes,
                fn_kwargs={
                    "preprocess": self._preprocess,
                    "on_error": job.config.on_error,
                    "idle": plan.decode_at_idle_priority,
                },
            )
            return ds.map_batches(
                EncodeActor,
                batch_size=plan.rows_per_task,
                compute=ActorPoolStrategy(size=plan.actors, max_tasks_in_flight_per_actor=TASKS_IN_FLIGHT_PER_ACTOR),
                num_cpus=plan.cpus_per_actor,
                num_gpus=plan.gpus_per_actor or None,
                fn_constructor_kwargs={
                    "model": job.config.model,
                    "threads": plan.threads_per_actor,
                    "batch_size": job.config.batch_size,
                    "text_batch_size": job.config.text_batch_size,
                    # an int8 export is calibrated on the same sample as in-process (each node exports once)
                    "calibration": self._calibration(job),
                },
            )
        finally:
            context.execution_options, context.enable_progress_bars, context.target_max_block_size = saved

    @staticmethod
    def _calibration(job: EmbedJob):
        items = job.config.model.calibration_items
        return calibration_sample(job.catalog, items) if items else None

    def _caption_order(self, job: EmbedJob, captions: np.ndarray) -> np.ndarray:
        """For each row to do, the row whose caption travels with it: each shard's rows sorted by token length,
        as the in-process engine batches a shard's captions, so an actor's caption batches are the same ones
        (the same padding and vectors) while every row's image and caption still go to the same shard."""
        order = []
        for shard in job.todo:
            rows = job.shard_rows[shard]
            lengths = self._tokenizer.lengths(captions[rows].tolist())
            order.append(rows[np.argsort(lengths, kind="stable")])
        return np.concatenate(order)

    def shards(self, job: EmbedJob, bar) -> Iterator:
        """The finished shards of ``job.todo``, in catalogue order."""
        from fashion_retrieval.pipeline import stages

        self.identity()
        if self._plan is None:
            self._connect()
            self._plan = self._make_plan(job)
        ds = self._dataset(job, self._plan)
        watcher = StoreWatcher(self.ray, self._store)
        watcher.start()
        try:
            batches = self._batches(ds, job, bar)
            yield from stages.assemble_shards(batches, job.shard_rows, job.config.shard_size, job.embed_dim)
        finally:
            watcher.stop()

    def _batches(self, ds, job: EmbedJob, bar) -> Iterator[ImageBatch]:
        from fashion_retrieval.pipeline.stages import ImageBatch

        started, pool = time.time(), set()  # this execution's actor processes
        results = iter(ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1))
        try:
            while True:
                wait = time.perf_counter()
                out = next(results, None)
                self._seconds["wait"] += time.perf_counter() - wait
                if out is None:
                    break
                self._note_actor(json.loads(str(out["actor"][0])), started, pool)
                status, reasons = out["status"], [str(r) for r in out["reason"]]
                if job.config.on_error == "fail" and (status == STATUS_FAILED).any():
                    raise ImageError(reasons[int(np.argmax(status == STATUS_FAILED))])
                self._seconds["image"] += float(out["image_seconds"].sum())
                self._seconds["decode"] += float(out["decode_seconds"].sum())
                if "text_seconds" in out:
                    self._seconds["text"] += float(out["text_seconds"].sum())
                bar.update(len(out["index"]))
                yield ImageBatch(
                    out["index"],
                    None,
                    status,
                    reasons,
                    float(out["decode_seconds"].sum()),
                    out["image"],
                    out.get("text"),
                    out.get("caption_index"),
                )
        finally:
            close = getattr(results, "close", None)
            if close:
                close()  # stops the streaming execution (actors, tasks) when the driver stops early

    def _note_actor(self, info: dict, started: float, pool: set[str]) -> None:
        key = f"{info['host']}:{info['pid']}"
        if key in pool:
            return
        if not self._actors:
            self._seconds["startup"] += max(0.0, info["ready_at"] - started)
        pool.add(key)
        self._actors[key] = info
        log.info("encoder actor ready: %s, %s, %s", key, info["device"], info["precision"]["dtype"])
        if len(pool) > self._plan.actors:  # more processes than actors: one was replaced
            self._restarts += 1
            log.warning(
                "an encoder actor was replaced (%d so far; new process %s): Ray restarted it and resent its "
                "batches; a row delivered twice is kept once",
                self._restarts,
                key,
            )

    # -- what the runner records ------------------------------------------------------------------
    def stage_seconds(self) -> dict[str, float]:
        """Driver time waiting on Ray, split like the in-process engine's stages: start-up (actors loading the
        model), then images and captions in proportion to the actors' time on each."""
        s = self._seconds
        steady = max(0.0, s["wait"] - s["startup"])
        busy = s["image"] + s["text"]
        text = steady * s["text"] / busy if busy else 0.0
        return {"startup": s["startup"], "encode_images": steady - text, "encode_texts": text}

    def describe(self) -> dict[str, Any]:
        plan = asdict(self._plan) if self._plan else {}
        actors = list(self._actors.values())
        return {
            "name": "ray",
            "ray_version": self.ray.__version__,
            "address": self._address or None,
            **plan,
            "devices": sorted({a["device"] for a in actors}),
            "nodes": len({a["host"] for a in actors}),
            "actor_processes": [{k: a[k] for k in ("pid", "host", "device", "threads")} for a in actors],
            "actor_restarts_observed": self._restarts,
            "fault_tolerance": {"max_restarts": -1, "max_task_retries": -1, "decode_max_retries": -1},
            "decode_cpu_seconds": round(self._seconds["decode"], 3),
            "object_store_peak_bytes": self._store["peak_bytes"],
            "object_store_spilled_bytes": self._store["spilled_bytes"],
        }

    def precision(self) -> dict:
        for actor in self._actors.values():
            return actor["precision"]
        return {"dtype": None, "reason": "no actor ran in this run: every shard was computed by an earlier one"}

    def close(self) -> None:
        """Stop the local Ray instance this engine started (a joined cluster or the caller's Ray stays)."""
        if self._owns_ray and self.ray.is_initialized():
            self.ray.shutdown()
        self._owns_ray = False
