"""Embed a whole catalogue: read -> decode (workers) -> encode -> shard -> assemble; resumable, nothing lost."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from fashion_retrieval.config import EmbedConfig, ModelConfig, auto_batch_sizes
from fashion_retrieval.data.records import Catalog, ColumnMap, read_catalog
from fashion_retrieval.errors import FashionRetrievalError
from fashion_retrieval.model.encoder import FashionEmbeddingModel
from fashion_retrieval.pipeline import stages
from fashion_retrieval.pipeline.writer import (
    STATUS_FAILED,
    STATUS_PLACEHOLDER,
    ShardStore,
    clear_outputs,
    original_metadata,
    write_final,
)


def _versions() -> dict[str, str]:
    import pymilvus
    import torch
    import transformers

    from fashion_retrieval import __version__

    return {
        "fashion_retrieval": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "pymilvus": pymilvus.__version__,
        "python": platform.python_version(),
    }


def _run_key(config: EmbedConfig, catalog: Catalog, identity_key: str) -> dict:
    """What must match for a run to be resumed (or declared already done) instead of refused."""
    return {
        "model": identity_key,
        "catalog": catalog.fingerprint,
        "items": len(catalog),
        "on_error": config.on_error,
        "shard_size": config.shard_size,
    }


def _check_out_folder(out: Path, store: ShardStore, key: dict, overwrite: bool) -> str:
    """'done', 'resume' or 'fresh'; refuses a folder made from another model or catalogue."""
    manifest = out / "manifest.json"
    if manifest.is_file():
        previous, state = json.loads(manifest.read_text()).get("run_key"), "done"
    else:
        previous, state = store.read_run(), "resume"
        if previous is None:
            return "fresh"
    if previous == key:
        return state
    if overwrite:
        clear_outputs(out)
        return "fresh"
    differs = sorted(k for k in key if (previous or {}).get(k) != key[k])
    raise FashionRetrievalError(
        f"{out} holds embeddings of another run (different {', '.join(differs)}); "
        "pass --overwrite to replace them, or choose another --out"
    )


def embed_catalog(config: EmbedConfig, *, encoder: FashionEmbeddingModel | None = None, progress: bool = True) -> dict:
    """Run the embedding pipeline described by ``config``; returns the run summary."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    columns = ColumnMap(config.id_col, config.image_col, config.text_col)
    catalog = read_catalog(config.catalog, images_dir=config.images_dir, columns=columns).head(config.limit)
    if encoder is None:
        m = config.model
        encoder = FashionEmbeddingModel(m.checkpoint, m.base, m.device, lora_alpha=m.lora_alpha, dtype=m.dtype)
    image_batch, text_batch = auto_batch_sizes(encoder.device.type)
    config = replace(
        config, batch_size=config.batch_size or image_batch, text_batch_size=config.text_batch_size or text_batch
    )
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    store = ShardStore(out)
    key = _run_key(config, catalog, encoder.identity.key)
    state = _check_out_folder(out, store, key, config.overwrite)
    if state == "done":
        summary = json.loads((out / "manifest.json").read_text())["summary"]
        return {**summary, "status": "already complete", "seconds": round(time.perf_counter() - started, 3)}
    store.write_run(key)

    n, size = len(catalog), config.shard_size
    shard_of = {k: np.arange(k * size, min(n, (k + 1) * size)) for k in range((n + size - 1) // size)}
    finished = store.done() & set(shard_of)
    todo = np.concatenate([shard_of[k] for k in sorted(set(shard_of) - finished)] or [np.zeros(0, int)])
    frame = catalog.frame
    captions = frame["caption"].tolist() if catalog.has_text else []
    clock = stages.StageClock()
    bar = tqdm(total=n, initial=n - len(todo), unit="img", desc="embedding", disable=not progress, smoothing=0.1)
    if len(todo):
        batches = stages.read_images(
            frame["path"].tolist(),
            todo,
            encoder.preprocess,
            batch_size=config.batch_size,
            workers=min(config.workers, max(1, len(todo) // config.batch_size)),
            on_error=config.on_error,
            idle_priority=encoder.device.type == "cpu",
        )
        batches = stages.timed(batches, clock, "read")
        encoded = stages.timed(stages.encode_images(batches, encoder, config.on_error), clock, "encode_images")
        counted = stages.counted(encoded, bar)
        shards = stages.assemble_shards(counted, shard_of, size, encoder.embed_dim)
        shards = stages.timed(
            stages.add_text_embeddings(shards, captions, encoder, config.text_batch_size), clock, "encode_texts"
        )
        for shard in shards:
            write_start = time.perf_counter()
            store.write(shard)
            clock.add("write", time.perf_counter() - write_start)
    bar.close()
    # encode_texts' clock includes the image stages it pulls from; report each stage's own time.
    own = dict(clock.seconds)
    own["encode_texts"] = own.get("encode_texts", 0.0) - own.get("encode_images", 0.0)
    own["encode_images"] = own.get("encode_images", 0.0) - own.get("read", 0.0)
    return _assemble(config, catalog, encoder, store, shard_of, key, own, started, len(finished), len(todo))


def _assemble(config, catalog, encoder, store, shard_of, key, stage_seconds, started, resumed, computed) -> dict:
    out = Path(config.out)
    shards = [store.read(k) for k in sorted(shard_of)]
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
    seconds = time.perf_counter() - started
    image_seconds = stage_seconds.get("encode_images", 0.0) + stage_seconds.get("read", 0.0)
    summary = {
        "status": "done",
        "out": str(out),
        "items": len(frame),
        "embedded": int(keep.sum()),
        "failed": int((status == STATUS_FAILED).sum()),
        "placeholders": int((status == STATUS_PLACEHOLDER).sum()),
        "resumed_shards": resumed,
        "seconds": round(seconds, 3),
        "computed": computed,
        "images_per_second": round(computed / image_seconds, 3) if image_seconds and computed else None,
        "captions_per_second": round(computed / stage_seconds["encode_texts"], 3)
        if computed and text is not None and stage_seconds.get("encode_texts")
        else None,
        "stage_seconds": {k: round(v, 3) for k, v in stage_seconds.items()},
    }
    manifest = {
        "format": "fashion-retrieval/embeddings@1",
        "model": encoder.identity.to_dict(),
        "dim": encoder.embed_dim,
        "has_text": text is not None,
        "attributes": catalog.attributes,
        "catalog": {"source": catalog.source, "images_root": catalog.images_root, "fingerprint": catalog.fingerprint},
        "run_key": key,
        "config": config.to_dict(),
        "versions": _versions(),
        "summary": summary,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_final(out, image, text, kept, failures, manifest)
    store.remove()
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
    options.setdefault("progress", True)
    progress = options.pop("progress")
    config = EmbedConfig(catalog=str(csv_path), model=model, out=str(output_dir), **options)
    embed_catalog(config, progress=progress)
    from fashion_retrieval.pipeline.writer import load_embeddings

    result = load_embeddings(output_dir)
    return result.image_embeddings, result.text_embeddings, original_metadata(result.metadata)


__all__ = ["create_dataset_embeddings", "embed_catalog", "EmbedConfig", "ModelConfig"]
