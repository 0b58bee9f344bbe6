"""`items add | update | delete | import`: change a catalogue in a Milvus collection without a server.

Each write is flushed and checked before it is reported, as through the API, and items are encoded by the model the
collection records. A Milvus Lite file that a server holds is written through that server (its /api/items routes):
the file serves one process.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from fashion_retrieval.cli.common import (
    BackendOpt,
    CheckpointOpt,
    CollectionOpt,
    DbOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    TokenOpt,
    UriOpt,
    app,
    print_json,
    user_errors,
)

items_app = typer.Typer(
    help="Add, replace, change and remove catalogue items in a Milvus collection (--db or --uri), no server needed.",
    no_args_is_help=True,
)
app.add_typer(items_app, name="items")
AttrOpt = Annotated[list[str] | None, typer.Option("--attr", help="field=value (repeatable), e.g. gender=WOMEN.")]
BaseModelOpt = Annotated[str | None, typer.Option("--base", help="Model base (default: the one the store records).")]


@dataclass(frozen=True)
class ItemsTarget:
    """The collection written, and the model that encodes items (the recorded one unless overridden)."""

    db: str | None
    uri: str | None
    token: str | None
    collection: str
    base: str | None = None
    checkpoint: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    backend: str = "torch"


def _attributes(pairs: list[str] | None) -> dict[str, str]:
    from fashion_retrieval.store.items import ItemError

    attributes = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ItemError(f"--attr {pair!r}: write it as field=value")
        attributes[name.strip()] = value
    return attributes


def run_lines(target: ItemsTarget, lines: list[str], *, folder: Path, chunk: int = 64) -> Iterator[dict]:
    """Apply batch-format lines to the target (image paths relative to ``folder``); the model is loaded only when a
    line adds an item."""
    from fashion_retrieval.store import open_store
    from fashion_retrieval.store.importer import apply_operations, parse_operation
    from fashion_retrieval.store.items import ItemWriter

    store = open_store(db=target.db, uri=target.uri, token=target.token, collection=target.collection)
    try:
        fields, has_text = store.attributes(), store.has_field("text")
        operations = [parse_operation(n, text, fields, has_text, folder) for n, text in enumerate(lines, 1)]
        decode = encode = _no_model
        if any(operation.op == "upsert" and operation.error is None for operation in operations):
            decode, encode = _model(target, store)
        yield from apply_operations(ItemWriter(store), operations, decode, encode, chunk)
    finally:
        store.close()


def _no_model(*_):
    raise RuntimeError("no model was loaded for these lines")


def _model(target: ItemsTarget, store):
    """Decode and encode with the searcher's model, checked against the store's recorded identity."""
    from fashion_retrieval.data.images import open_image
    from fashion_retrieval.search.searcher import Searcher

    searcher = Searcher.open(
        store,
        base=target.base,
        checkpoint=target.checkpoint,
        device=target.device,
        dtype=target.dtype,
        backend=target.backend,
    )
    preprocess = searcher.encoder.preprocess
    return lambda source: preprocess(open_image(source, reduce_to=preprocess.reduce_to)), searcher.encode_queries


def _report(results: Iterator[dict], as_json: bool) -> None:
    """Print each result (or all as JSON); exit 1 if any line failed."""
    collected = list(results)
    summary = collected[-1]["summary"] if collected and "summary" in collected[-1] else {}
    if as_json:
        print_json({"results": collected[:-1], "summary": summary})
    else:
        for result in collected[:-1]:
            if result["status"] == "failed":
                typer.secho(f"line {result['line']}: {result['id']}: {result['error']}", fg=typer.colors.RED, err=True)
            else:
                flags = "durable" if result["durable"] else "NOT durable"
                flags += ", searchable" if result["searchable"] else ", NOT searchable yet"
                typer.echo(f"{result['status']} {result['id']} ({flags})")
    if summary.get("failed"):
        raise typer.Exit(1)


def _target(db, uri, token, collection, base=None, checkpoint=None, device="auto", dtype="auto", backend="torch"):
    return ItemsTarget(db, uri, token, collection, base, checkpoint, device, dtype, backend)


# The commands below are long only by their option declarations (Typer reads them from the signature).
@items_app.command("add")
@user_errors
def add(
    item_id: Annotated[
        str, typer.Argument(help="The item's id (an existing id is replaced: adding twice leaves one).")
    ],
    image: Annotated[Path, typer.Option("--image", help="The item's image file.")],
    caption: Annotated[str, typer.Option("--caption", help="The item's caption (encoded and searched).")],
    attr: AttrOpt = None,
    db: DbOpt = None,
    uri: UriOpt = None,
    token: TokenOpt = None,
    collection: CollectionOpt = "fashion_items",
    base: BaseModelOpt = None,
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    backend: BackendOpt = "torch",
    as_json: JsonOpt = False,
) -> None:
    """Add an item (or replace the item of that id), encoded by the model the collection records."""
    line = {"id": item_id, "caption": caption, "attributes": _attributes(attr), "image_path": str(image)}
    target = _target(db, uri, token, collection, base, checkpoint, device, dtype, backend)
    _report(run_lines(target, [json.dumps(line)], folder=Path.cwd()), as_json)


@items_app.command("update")
@user_errors
def update(
    item_id: Annotated[str, typer.Argument(help="The item's id.")],
    attr: AttrOpt = None,
    db: DbOpt = None,
    uri: UriOpt = None,
    token: TokenOpt = None,
    collection: CollectionOpt = "fashion_items",
    as_json: JsonOpt = False,
) -> None:
    """Change an item's attributes (nothing is encoded again); to change its image or caption, `items add` it."""
    line = {"op": "patch", "id": item_id, "attributes": _attributes(attr)}
    _report(run_lines(_target(db, uri, token, collection), [json.dumps(line)], folder=Path.cwd()), as_json)


@items_app.command("delete")
@user_errors
def delete(
    item_ids: Annotated[list[str], typer.Argument(help="The ids to remove.")],
    db: DbOpt = None,
    uri: UriOpt = None,
    token: TokenOpt = None,
    collection: CollectionOpt = "fashion_items",
    as_json: JsonOpt = False,
) -> None:
    """Remove items: no search returns them once this reports."""
    lines = [json.dumps({"op": "delete", "id": item_id}) for item_id in item_ids]
    _report(run_lines(_target(db, uri, token, collection), lines, folder=Path.cwd()), as_json)


@items_app.command("import")
@user_errors
def import_lines(
    source: Annotated[str, typer.Argument(help="NDJSON file of item lines (the API's batch format), or - for stdin.")],
    images_dir: Annotated[
        str | None, typer.Option(help="Folder image_path values are relative to (default: the file's folder).")
    ] = None,
    chunk: Annotated[int, typer.Option(help="Lines written and flushed together.")] = 64,
    db: DbOpt = None,
    uri: UriOpt = None,
    token: TokenOpt = None,
    collection: CollectionOpt = "fashion_items",
    base: BaseModelOpt = None,
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    backend: BackendOpt = "torch",
    as_json: JsonOpt = False,
) -> None:
    """Upsert, patch and delete items from NDJSON lines: {"op": "upsert", "id", "caption", "attributes", "image_path"
    or "image_base64"}, {"op": "patch", "id", "attributes"}, {"op": "delete", "id"}. A bad line fails alone."""
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    folder = Path(images_dir) if images_dir else (Path.cwd() if source == "-" else Path(source).resolve().parent)
    target = _target(db, uri, token, collection, base, checkpoint, device, dtype, backend)
    _report(run_lines(target, lines, folder=folder, chunk=chunk), as_json)


__all__ = ["ItemsTarget", "items_app", "run_lines"]
