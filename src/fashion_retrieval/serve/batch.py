"""A batch import (``POST /api/items:batch``): checked lines written in chunks, a result line streamed back per input
line as soon as its chunk is durable and searchable, then a summary line.

A chunk is a run of consecutive lines of one operation with distinct ids (at most ``--write-chunk`` lines, grouped
as ``fashion-retrieval items import`` groups them: ``store/importer.py``): its images are decoded together,
encoded at write priority, upserted and flushed as one write. So a crash mid-batch leaves every acknowledged
line written, and any other line either whole or absent (a row is written at once). A client that leaves stops
the batch: what the model has not started of the current chunk is dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator

from fashion_retrieval.errors import ItemNotFoundError
from fashion_retrieval.serve.item_requests import Line, line_error
from fashion_retrieval.serve.writes import CatalogueWriter
from fashion_retrieval.store.importer import chunks

log = logging.getLogger(__name__)


async def run_batch(lines: list[Line], writer: CatalogueWriter) -> AsyncIterator[bytes]:
    """Result lines as NDJSON bytes, chunk by chunk, then ``{"summary": ...}``."""
    started = time.perf_counter()
    counts: Counter[str] = Counter()
    for group in chunks(lines, writer.config.write_chunk):
        for result in await _run_group(group, writer):
            counts[result.get("result", "failed")] += 1
            yield (json.dumps(result) + "\n").encode()
    summary = {"lines": len(lines), **counts, "seconds": round(time.perf_counter() - started, 3)}
    log.info("batch import of %d lines: %s", len(lines), {k: v for k, v in summary.items() if k != "lines"})
    yield (json.dumps({"summary": summary}) + "\n").encode()


async def _run_group(group: list[Line], writer: CatalogueWriter) -> list[dict]:
    if group[0].error is not None:
        return [group[0].result()]
    try:
        if group[0].op == "upsert":
            return await _upsert(group, writer)
        if group[0].op == "delete":
            results = await writer.delete([line.id for line in group])
            return [_answer(line, result) for line, result in zip(group, results, strict=True)]
        return [_answer(group[0], await writer.patch(group[0].id, group[0].attributes))]
    except ItemNotFoundError as exc:
        return [line.failed(404, str(exc)) for line in group]
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - a failed chunk is its lines' answer; the batch goes on
        status, message = line_error(exc)
        return [line.failed(status, message) for line in group]


async def _upsert(group: list[Line], writer: CatalogueWriter) -> list[dict]:
    """Decode the chunk's images together (a bad one fails its line only), then write the rest as one."""
    outcomes = await asyncio.gather(*(_load_image(line, writer) for line in group), return_exceptions=True)
    results: dict[int, dict] = {}
    ready = []
    for line, outcome in zip(group, outcomes, strict=True):
        if isinstance(outcome, asyncio.CancelledError):
            raise outcome
        if isinstance(outcome, Exception):
            results[line.number] = line.failed(*line_error(outcome))
        else:
            ready.append(line)
    if ready:
        written = await writer.upsert([line.item for line in ready])
        for line, result in zip(ready, written, strict=True):
            results[line.number] = _answer(line, result)
    return [results[line.number] for line in group]


async def _load_image(line: Line, writer: CatalogueWriter) -> None:
    if line.image_path is not None:
        await writer.add_file(line.item, line.image_path)
    else:
        await writer.add_upload(line.item, line.image)


def _answer(line: Line, result) -> dict:
    if result is None:
        return line.failed(404, f"no item {line.id[:80]!r}")
    status = 201 if result.status == "created" else 200
    return line.result(status=status, result=result.status, durable=result.durable, searchable=result.searchable)


__all__ = ["run_batch"]
