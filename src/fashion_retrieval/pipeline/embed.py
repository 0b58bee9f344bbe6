"""Embed a whole catalogue: read -> decode (workers) -> encode -> shard -> assemble; resumable, nothing lost.

The unit of work is the shard (``shard_size`` consecutive catalogue rows), written atomically when complete.
An engine turns the shards still to do (an ``EmbedJob``, ``pipeline/job.py``) into finished ``Shard``
objects: in this process (decoding workers + one encoder) or on Ray Data (``engine="ray"``,
``pipeline/ray_engine.py``). Either way the runner here owns the folder: it locks it, skips finished shards,
writes new ones, and assembles the final files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from fashion_retrieval.config import EmbedConfig, ModelConfig, auto_batch_sizes
from fashion_retrieval.data.records import Catalog, ColumnMap, read_catalog
from fashion_retrieval.embeddings import library_versions, load_embeddings, original_metadata, write_embeddings
from fashion_retrieval.errors import FashionRetrievalError
from fashion_retrieval.files import FolderLock, remove_stale_temp_files
from fashion_retrieval.pipeline import stages
from fashion_retrieval.pipeline.job import EmbedJob, calibration_sample, shard_layout
from fashion_retrieval.pipeline.writer import STATUS_FAILED, STATUS_PLACEHOLDER, Shard, ShardStore, clear_outputs
from fashion_retrieval.progress import progress_bar

log = logging.getLogger(__name__)


def _run_key(config: EmbedConfig, catalog: Catalog, identity_key: str) -> dict:
    """What must match for a run to be resumed (or declared already done) instead of refused."""
    return (
        {
            "model": identity_key,
            "catalog": catalog.fingerprint,
            "items": len(catalog),
            "on_error": config.on_error,
            "shard_size": config.shard_size,
        }
        | ({"jpeg_draft": True} if config.jpeg_draft else {})
        | _backend_key(config.model)
    )


def _backend_key(model: ModelConfig) -> dict:
    """Vectors of an exported backend are interchangeable with torch's only within their parity bound: a run is
    resumed on the backend it started on (torch runs keep their earlier key)."""
    if model.backend == "torch":
        return {}
    return {"backend": f"{model.backend} {model.dtype}" + (f" calibrate {model.calibrate}" if model.calibrate else "")}


REASONS = {
    "model": "another model",
    "catalog": "another catalogue, or its rows or image files changed since",
    "items": "another number of items",
    "on_error": "another --on-error",
    "shard_size": "another --shard-size",
    "jpeg_draft": "another --jpeg-draft",
    "backend": "another --backend, --dtype or --calibrate",
}


def _check_out_folder(out: Path, store: ShardStore, key: dict, overwrite: bool) -> str:
    """'done', 'resume' or 'fresh'; ``overwrite`` always starts fresh; a folder made from another model or
    catalogue is refused."""
    if overwrite:
        clear_outputs(out)
        return "fresh"
    manifest = out / "manifest.json"
    if manifest.is_file():
        previous, state = json.loads(manifest.read_text()).get("run_key"), "done"
    else:
        previous, state = store.read_run(), "resume"
        if previous is None:
            return "fresh"
    if previous == key:
        return state
    previous = previous or {}
    differs = [REASONS.get(k, k) for k in dict.fromkeys([*key, *previous]) if previous.get(k) != key.get(k)]
    raise FashionRetrievalError(
        f"{out} holds embeddings of another run ({'; '.join(differs)}): "
        "pass --overwrite to re-embed, or choose another --out"
    )


def _local_shards(job: EmbedJob, encoder, clock: stages.StageClock, bar) -> Iterator[Shard]:
    """The in-process engine: decoding workers feed one encoder; shards come out in catalogue order."""
    config = job.config
    todo = np.concatenate([job.shard_rows[k] for k in job.todo])
    frame = job.catalog.frame
    batches = stages.read_images(
        frame["path"].tolist(),
        todo,
        replace(encoder.preprocess, jpeg_draft=config.jpeg_draft),
        batch_size=config.batch_size,
        workers=min(config.workers, max(1, len(todo) // config.batch_size)),
        on_error=config.on_error,
        idle_priority=encoder.device.type == "cpu",
    )
    batches = stages.timed(batches, clock, "read")
    encoded = stages.timed(stages.encode_images(batches, encoder, config.on_error), clock, "encode_images")
    counted = stages.counted(encoded, bar)
    shards = stages.assemble_shards(counted, job.shard_rows, config.shard_size, job.embed_dim)
    yield from stages.timed(
        stages.add_text_embeddings(shards, job.captions, encoder, config.text_batch_size), clock, "encode_texts"
    )


def _own_seconds(clock: stages.StageClock) -> dict[str, float]:
    """Nested stages' clocks include the stages they pull from: report each stage's own time."""
    own = dict(clock.seconds)
    if "encode_texts" in own:
        own["encode_texts"] -= own.get("encode_images", 0.0)
    if "encode_images" in own:
        own["encode_images"] -= own.get("read", 0.0)
    return own


def _load_encoder(config: EmbedConfig, catalog: Catalog):
    from fashion_retrieval.model.encoder import load_encoder

    items = config.model.calibration_items
    return load_encoder(config.model, calibration_sample(catalog, items) if items else None)


def _open_engine(config: EmbedConfig, catalog: Catalog, encoder, cleanup: contextlib.ExitStack):
    """(Ray engine or None, encoder or None, identity, device type): the Ray engine's driver never loads the model."""
    if config.engine == "ray":
        from fashion_retrieval.pipeline.ray_engine import RayEngine

        engine = RayEngine(config)
        cleanup.callback(engine.close)  # a Ray instance it started stops with the run
        return engine, None, engine.identity(), engine.device_type()
    encoder = encoder or _load_encoder(config, catalog)
    return None, encoder, encoder.identity, encoder.device.type


def _compute_shards(job: EmbedJob, store: ShardStore, engine, encoder, clock, progress: bool) -> None:
    """Compute the job's shards still to do and write each as soon as it is complete."""
    n = len(job.catalog)
    todo_items = sum(len(job.shard_rows[k]) for k in job.todo)
    with progress_bar(n, "embedding", "img", enabled=progress, initial=n - todo_items) as bar:
        if job.todo:
            shards = engine.shards(job, bar) if engine else _local_shards(job, encoder, clock, bar)
            for shard in shards:
                write_start = time.perf_counter()
                store.write(shard)
                clock.add("write", time.perf_counter() - write_start)


def _run_shards(config, catalog, identity, store, engine, encoder, clock, progress) -> tuple[list[Shard], int, int]:
    """All shards, computing those not finished yet; a damaged shard found while reading them back is removed
    and computed again (at most once). Returns (shards, shards resumed, items computed)."""
    out, shard_rows = Path(config.out), shard_layout(len(catalog), config.shard_size)
    resumed = computed = 0
    for _attempt in range(2):
        finished = store.done() & set(shard_rows)
        todo = sorted(set(shard_rows) - finished)
        resumed = resumed or len(finished)
        if finished and todo:
            log.info("resuming %s: %d of %d shards already finished", out, len(finished), len(shard_rows))
        job = EmbedJob(config, catalog, shard_rows, todo, identity.embed_dim)
        _compute_shards(job, store, engine, encoder, clock, progress)
        computed += sum(len(shard_rows[k]) for k in todo)
        shards, damaged = _read_shards(store, shard_rows)
        if not damaged:
            return shards, resumed, computed
        log.warning("shard(s) %s were damaged on disk: computing them again", damaged)
        for k in damaged:
            store.path(k).unlink(missing_ok=True)
    raise FashionRetrievalError(f"{store.folder}: shards keep failing their check; remove the folder")


def embed_catalog(config: EmbedConfig, *, encoder=None, progress: bool = True) -> dict:
    """Run the embedding pipeline described by ``config``; returns the run summary.

    One run per output folder at a time (a second is refused while the first lives); a run killed at any
    point is continued by the same command, which recomputes only the shards that were not finished."""
    started = time.perf_counter()
    columns = ColumnMap(config.id_col, config.image_col, config.text_col)
    catalog = read_catalog(config.catalog, images_dir=config.images_dir, columns=columns).head(config.limit)
    out = Path(config.out)
    with FolderLock(out, "embed run"), contextlib.ExitStack() as cleanup:
        remove_stale_temp_files(out)
        store = ShardStore(out)
        if store.folder.is_dir():
            remove_stale_temp_files(store.folder)
        engine, encoder, identity, device_type = _open_engine(config, catalog, encoder, cleanup)
        image_batch, text_batch = auto_batch_sizes(device_type)
        config = replace(
            config, batch_size=config.batch_size or image_batch, text_batch_size=config.text_batch_size or text_batch
        )
        key = _run_key(config, catalog, identity.key)
        if _check_out_folder(out, store, key, config.overwrite) == "done":
            summary = json.loads((out / "manifest.json").read_text())["summary"]
            log.info("%s is already complete: nothing to do (--overwrite re-embeds)", out)
            return {**summary, "status": "already complete", "seconds": round(time.perf_counter() - started, 3)}
        store.write_run(key)
        clock = stages.StageClock()
        shards, resumed, computed = _run_shards(config, catalog, identity, store, engine, encoder, clock, progress)
        run = {
            "engine": engine.describe() if engine else {"name": "local", "workers": config.workers},
            # the dtype the vectors were computed in, and why
            "precision": engine.precision() if engine else encoder.precision.to_dict(),
            "resumed_shards": resumed,
            "computed": computed,
        }
        stage_seconds = {**_own_seconds(clock), **(engine.stage_seconds() if engine else {})}
        return _assemble(config, catalog, identity, store, shards, key, stage_seconds, started, run)


def _read_shards(store: ShardStore, shard_rows: dict[int, np.ndarray]) -> tuple[list[Shard], list[int]]:
    """Every shard in catalogue order, and the ids of those that are missing or fail their check."""
    shards, damaged = [], []
    for k in sorted(shard_rows):
        try:
            shards.append(store.read(k, shard_rows[k]))
        except (OSError, ValueError, KeyError) as exc:  # a torn or foreign file (np.load raises these)
            log.debug("shard %d unreadable: %s", k, exc)
            damaged.append(k)
    return shards, damaged


def _assemble(config, catalog, identity, store, shards, key, stage_seconds, started, run) -> dict:
    out = Path(config.out)
    status = np.concatenate([s.status for s in shards]) if shards else np.zeros(0, np.uint8)
    reasons = [r for s in shards for r in s.reasons]
    keep = status != STATUS_FAILED
    frame = catalog.frame
    image = np.concatenate([s.image for s in shards])[keep]
    text = np.concatenate([s.text for s in shards])[keep] if catalog.has_text else None
    kept = frame[keep].reset_index(drop=True)
    if config.on_error == "placeholder":
        kept["placeholder"] = status[keep] == STATUS_PLACEHOLDER
    failures = [
        {"id": frame.at[i, "id"], "path": frame.at[i, "path"], "reason": reasons[i]}
        for i in np.flatnonzero(status == STATUS_FAILED)
    ]
    computed = run["computed"]
    image_seconds = stage_seconds.get("encode_images", 0.0) + stage_seconds.get("read", 0.0)
    summary = {
        "status": "done",
        "out": str(out),
        "items": len(frame),
        "embedded": int(keep.sum()),
        "failed": int((status == STATUS_FAILED).sum()),
        "placeholders": int((status == STATUS_PLACEHOLDER).sum()),
        "resumed_shards": run["resumed_shards"],
        "seconds": round(time.perf_counter() - started, 3),
        "computed": computed,
        "images_per_second": round(computed / image_seconds, 3) if image_seconds and computed else None,
        "captions_per_second": round(computed / stage_seconds["encode_texts"], 3)
        if computed and text is not None and stage_seconds.get("encode_texts")
        else None,
        "stage_seconds": {k: round(v, 3) for k, v in stage_seconds.items()},
        "engine": run["engine"]["name"],
    }
    manifest = {
        "model": identity.to_dict(),
        "dim": identity.embed_dim,
        "has_text": text is not None,
        "attributes": catalog.attributes,
        "catalog": {"source": catalog.source, "images_root": catalog.images_root, "fingerprint": catalog.fingerprint},
        "run_key": key,
        "config": config.to_dict(),
        "engine": run["engine"],
        "precision": run["precision"],
        "versions": library_versions(),
        "summary": summary,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_embeddings(out, image, text, kept, failures, manifest)
    store.remove()
    log.info(
        "embedded %d of %d items (%d failed) into %s in %.1f s",
        summary["embedded"],
        summary["items"],
        summary["failed"],
        out,
        summary["seconds"],
    )
    return summary


def create_dataset_embeddings(csv_path, model_path, processor_path, output_dir="embeddings_output", **options):
    """The original toolkit's entry point, through the resumable pipeline.

    Returns (image_embeddings [N, D], text_embeddings [N, D], metadata dict with the original keys).
    ``options`` are EmbedConfig fields (batch_size, workers, on_error, limit, images_dir, overwrite, ...)
    plus lora_alpha, device and dtype for the model.
    """
    model_fields = {k: options.pop(k) for k in ("lora_alpha", "device", "dtype") if k in options}
    model = ModelConfig(
        base=str(processor_path), checkpoint=None if model_path is None else str(model_path), **model_fields
    )
    progress = options.pop("progress", True)
    config = EmbedConfig(catalog=str(csv_path), model=model, out=str(output_dir), **options)
    embed_catalog(config, progress=progress)
    result = load_embeddings(output_dir)
    return result.image_embeddings, result.text_embeddings, original_metadata(result.metadata)


__all__ = ["EmbedJob", "create_dataset_embeddings", "embed_catalog"]
