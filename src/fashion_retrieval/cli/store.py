"""`schema`, `index` and `search`: the vector store and queries against it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fashion_retrieval.cli.common import (
    CheckpointOpt,
    CollectionOpt,
    DbOpt,
    DeviceOpt,
    DtypeOpt,
    EfOpt,
    JsonOpt,
    NprobeOpt,
    TokenOpt,
    UriOpt,
    app,
    milvus_target,
    print_json,
    user_errors,
)


@app.command()
@user_errors
def schema(
    action: Annotated[str, typer.Argument(help="create | describe | drop")],
    embeddings: Annotated[
        str | None,
        typer.Option(
            help="For create: the embeddings folder whose model, dimension and attributes the collection takes."
        ),
    ] = None,
    db: DbOpt = None,
    uri: UriOpt = None,
    token: TokenOpt = None,
    collection: CollectionOpt = "fashion_items",
    index_type: Annotated[
        str, typer.Option(help="Vector index: AUTOINDEX, FLAT, IVF_FLAT (HNSW on a server).")
    ] = "AUTOINDEX",
    as_json: JsonOpt = False,
) -> None:
    """Create, describe or drop the Milvus collection (pk, image/text vectors, a field per attribute)."""
    from fashion_retrieval.errors import StoreError
    from fashion_retrieval.store.milvus import MilvusStore

    store = MilvusStore(milvus_target(db, uri, token, collection, index_type), must_exist=False)
    try:
        if action == "create":
            if not embeddings:
                raise StoreError(
                    "schema create needs --embeddings DIR (it takes the model identity, dimension "
                    "and attributes from it)"
                )
            from fashion_retrieval.embeddings import load_embeddings
            from fashion_retrieval.store.base import BASE_FIELDS

            data = load_embeddings(embeddings, mmap=True)
            if store.exists():
                raise StoreError(f"{store.description} exists already (drop it first, or just run index)")
            store.create(
                int(data.image_embeddings.shape[1]),
                [c for c in data.metadata.columns if c not in BASE_FIELDS],
                data.identity,
                has_text=data.text_embeddings is not None,
                precision=data.manifest.get("precision"),
            )
            result = store.describe()
        elif action == "describe":
            store.require()
            result = store.describe()
        elif action == "drop":
            result = {"dropped": store.drop(), "collection": collection}
        else:
            raise StoreError(f"unknown action {action!r}: use create, describe or drop")
    finally:
        store.close()
    if as_json:
        print_json(result)
    elif action == "drop":
        typer.echo(f"dropped {collection}" if result["dropped"] else f"{collection} did not exist")
    else:
        typer.echo(f"{result['collection']} at {result['address']}: {result['count']} rows")
        for f in result["fields"]:
            typer.echo(f"  {f['name']:<18} {f['type']}" + (f" dim={f['dim']}" if "dim" in f else ""))
        typer.echo(f"  indexes: {result['indexes']}")
        model = result["model"] or {}
        typer.echo(f"  model: {model.get('key')} base={model.get('base')} checkpoint={model.get('checkpoint')}")


@app.command()
@user_errors
def index(
    embeddings: Annotated[str, typer.Argument(help="An embeddings folder written by `embed`.")],
    db: DbOpt = None,
    uri: UriOpt = None,
    token: TokenOpt = None,
    collection: CollectionOpt = "fashion_items",
    index_type: Annotated[
        str, typer.Option(help="Vector index when creating: AUTOINDEX, FLAT, IVF_FLAT (HNSW on a server).")
    ] = "AUTOINDEX",
    batch_size: Annotated[int, typer.Option(help="Rows per upsert.")] = 2000,
    delete_missing: Annotated[bool, typer.Option(help="Delete rows whose ids are no longer in the folder.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Upsert an embeddings folder into Milvus (creates the collection; re-running changes nothing)."""
    from fashion_retrieval.store.indexer import IndexConfig, index_embeddings

    config = IndexConfig(embeddings, milvus_target(db, uri, token, collection, index_type), batch_size, delete_missing)
    summary = index_embeddings(config, progress=not as_json)
    if as_json:
        print_json(summary)
    else:
        typer.echo(
            f"{summary['collection']} at {summary['address']}: upserted {summary['upserted']}, "
            f"deleted {summary['deleted']}, {summary['count']} rows ({summary['seconds']:.1f} s)"
        )


@app.command()
@user_errors
def search(
    text: Annotated[
        str | None, typer.Argument(help="What you look for ('red striped dress'), or with --compose what to change.")
    ] = None,
    image: Annotated[Path | None, typer.Option("--image", help="A query image (alone, or with TEXT: hybrid).")] = None,
    compose: Annotated[
        bool, typer.Option("--compose", help="Refine a reference (--item or --image) by TEXT: 'in red', 'for men'.")
    ] = False,
    item: Annotated[str | None, typer.Option("--item", help="Reference catalogue item id (implies --compose).")] = None,
    minus: Annotated[
        list[str] | None, typer.Option("--minus", help="Exclude what matches this text (repeatable): --minus stripes.")
    ] = None,
    like: Annotated[list[str] | None, typer.Option("--like", help="More like this item id (repeatable).")] = None,
    unlike: Annotated[list[str] | None, typer.Option("--unlike", help="Less like this item id (repeatable).")] = None,
    method: Annotated[
        str | None, typer.Option(help="Composition: delta (default), caption, sum, image or text.")
    ] = None,
    alpha: Annotated[float, typer.Option(help="Hybrid: weight of the text (1 text only, 0 image only).")] = 0.5,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many results.")] = 10,
    filter_: Annotated[
        list[str] | None, typer.Option("--filter", help="field=value or field=v1,v2 (repeatable), e.g. gender=WOMEN.")
    ] = None,
    against: Annotated[str, typer.Option(help="Match image vectors (image) or caption vectors (text).")] = "image",
    fusion: Annotated[str, typer.Option(help="Hybrid fusion: weighted or rrf.")] = "weighted",
    rerank: Annotated[int, typer.Option(help="Rescore the top N with BLIP's ITM head (needs TEXT).")] = 0,
    db: DbOpt = None,
    uri: UriOpt = None,
    token: TokenOpt = None,
    collection: CollectionOpt = "fashion_items",
    embeddings: Annotated[str | None, typer.Option(help="Search an embeddings folder in memory instead.")] = None,
    use_faiss: Annotated[bool, typer.Option("--faiss", help="In memory: FAISS HNSW instead of exact.")] = False,
    ef: EfOpt = None,
    nprobe: NprobeOpt = None,
    base: Annotated[str | None, typer.Option(help="Query model base (default: the one the index records).")] = None,
    checkpoint: CheckpointOpt = None,
    lora_alpha: Annotated[float | None, typer.Option(help="LoRA alpha (default: the recorded one).")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Search by text, by image, or both (hybrid), with filters; a table, or JSON with --json."""
    from rich.console import Console
    from rich.table import Table

    from fashion_retrieval.errors import QueryError
    from fashion_retrieval.store.base import parse_filters

    composing = compose or item is not None or bool(like) or bool(unlike)
    if text is None and image is None and not composing:
        raise QueryError("give a TEXT query, an --image, or both (or --compose with --item/--image)")
    if rerank and (text is None or composing):
        raise QueryError("--rerank needs a plain TEXT query (the ITM head scores text against images)")
    if minus and not composing and (image is not None or against != "image"):
        raise QueryError("--minus works on a text search or with --compose")
    filters = parse_filters(filter_)
    from fashion_retrieval.search.searcher import open_searcher

    searcher = open_searcher(
        db=db,
        uri=uri,
        token=token,
        collection=collection,
        embeddings=embeddings,
        use_faiss=use_faiss,
        ef=ef,
        nprobe=nprobe,
        base=base,
        checkpoint=checkpoint,
        lora_alpha=lora_alpha,
        device=device,
        dtype=dtype,
    )
    try:
        if composing:
            response = searcher.compose(
                text,
                item=item,
                image=image,
                minus=minus or (),
                like=like or (),
                unlike=unlike or (),
                method=method,
                top_k=top_k,
                filters=filters,
            )
        elif text is not None and image is not None:
            response = searcher.hybrid(
                text, image, alpha=alpha, fusion=fusion, top_k=top_k, filters=filters, against=against, rerank=rerank
            )
        elif text is not None:
            response = searcher.text(
                text, top_k=top_k, filters=filters, against=against, rerank=rerank, minus=minus or ()
            )
        else:
            response = searcher.image(image, top_k=top_k, filters=filters, against=against)
    finally:
        searcher.store.close()
    if as_json:
        print_json({"query": response.query, "results": [h.to_dict() for h in response.results], **response.extra})
        return
    if response.extra.get("composed_caption"):
        Console(stderr=True).print(f"composed caption: {response.extra['composed_caption']}")
    table = Table(title=f"{len(response.results)} results ({response.seconds * 1000:.0f} ms)")
    for column in ("#", "score", "id", "caption"):
        table.add_column(column, overflow="fold")
    extra = [a for a in ("gender", "product_type") if response.results and a in response.results[0].attributes]
    for column in extra:
        table.add_column(column)
    for rank, hit in enumerate(response.results, 1):
        table.add_row(str(rank), f"{hit.score:.4f}", hit.id, hit.caption, *(hit.attributes[a] for a in extra))
    Console().print(table)
