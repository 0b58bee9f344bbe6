"""`schema`, `index` and `search`: the vector store and queries against it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fashion_retrieval.cli.common import (
    BackendOpt,
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

if TYPE_CHECKING:
    from fashion_retrieval.search.base import SearchResponse
    from fashion_retrieval.search.searcher import Searcher
    from fashion_retrieval.store.milvus import MilvusStore, MilvusTarget


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
    target = milvus_target(db, uri, token, collection, index_type)
    result = _run_schema_action(action, target, embeddings, collection)
    if as_json:
        print_json(result)
    elif action == "drop":
        typer.echo(f"dropped {collection}" if result["dropped"] else f"{collection} did not exist")
    else:
        _print_collection(result)


def _run_schema_action(action: str, target: MilvusTarget, embeddings: str | None, collection: str) -> dict:
    from fashion_retrieval.errors import StoreError
    from fashion_retrieval.store.milvus import MilvusStore

    store = MilvusStore(target, must_exist=False)
    try:
        run = _SCHEMA_ACTIONS.get(action)
        if run is None:
            raise StoreError(f"unknown action {action!r}: use create, describe or drop")
        return run(store, embeddings, collection)
    finally:
        store.close()


def _schema_create(store: MilvusStore, embeddings: str | None, collection: str) -> dict:
    """The collection as the embeddings folder describes it: its model identity, dimension and attributes."""
    from fashion_retrieval.errors import StoreError

    if not embeddings:
        raise StoreError(
            "schema create needs --embeddings DIR (it takes the model identity, dimension and attributes from it)"
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
    return store.describe()


def _schema_describe(store: MilvusStore, embeddings: str | None, collection: str) -> dict:
    store.require()
    return store.describe()


def _schema_drop(store: MilvusStore, embeddings: str | None, collection: str) -> dict:
    return {"dropped": store.drop(), "collection": collection}


_SCHEMA_ACTIONS: dict[str, Callable[[MilvusStore, str | None, str], dict]] = {
    "create": _schema_create,
    "describe": _schema_describe,
    "drop": _schema_drop,
}


def _print_collection(result: dict) -> None:
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


# Long only by its option declarations (Typer reads them from the signature); the body passes the options on.
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
    rerank: Annotated[int, typer.Option(help="Rescore the top N with BLIP's matching head (needs TEXT).")] = 0,
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
    backend: BackendOpt = "torch",
    as_json: JsonOpt = False,
) -> None:
    """Search by text, by image, or both (hybrid), with filters; a table, or JSON with --json."""
    from fashion_retrieval.store.base import parse_filters

    request = _SearchRequest(
        text=text,
        image=image,
        composing=compose or item is not None or bool(like) or bool(unlike),
        item=item,
        minus=minus or (),
        like=like or (),
        unlike=unlike or (),
        method=method,
        alpha=alpha,
        top_k=top_k,
        against=against,
        fusion=fusion,
        rerank=rerank,
    )
    request.check()
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
        backend=backend,
    )
    try:
        response = request.run(searcher, filters)
    finally:
        searcher.store.close()
    if as_json:
        print_json({"query": response.query, "results": [h.to_dict() for h in response.results], **response.extra})
    else:
        _print_results(response)


@dataclass(frozen=True)
class _SearchRequest:
    """The query options of ``search``; which searcher call they make is decided here."""

    text: str | None
    image: Path | None
    composing: bool
    item: str | None
    minus: Sequence[str]
    like: Sequence[str]
    unlike: Sequence[str]
    method: str | None
    alpha: float
    top_k: int
    against: str
    fusion: str
    rerank: int

    def check(self) -> None:
        """Refuse option combinations no search answers, before the model loads."""
        from fashion_retrieval.errors import QueryError

        if self.text is None and self.image is None and not self.composing:
            raise QueryError("give a TEXT query, an --image, or both (or --compose with --item/--image)")
        if self.rerank and (self.text is None or self.composing):
            raise QueryError("--rerank needs a plain TEXT query (the ITM head scores text against images)")
        if self.minus and not self.composing and (self.image is not None or self.against != "image"):
            raise QueryError("--minus works on a text search or with --compose")

    def run(self, searcher: Searcher, filters: dict) -> SearchResponse:
        if self.composing:
            return searcher.compose(
                self.text,
                item=self.item,
                image=self.image,
                minus=self.minus,
                like=self.like,
                unlike=self.unlike,
                method=self.method,
                top_k=self.top_k,
                filters=filters,
            )
        if self.text is not None and self.image is not None:
            return searcher.hybrid(
                self.text,
                self.image,
                alpha=self.alpha,
                fusion=self.fusion,
                top_k=self.top_k,
                filters=filters,
                against=self.against,
                rerank=self.rerank,
            )
        if self.text is not None:
            return searcher.text(
                self.text, top_k=self.top_k, filters=filters, against=self.against, rerank=self.rerank, minus=self.minus
            )
        return searcher.image(self.image, top_k=self.top_k, filters=filters, against=self.against)


def _print_results(response: SearchResponse) -> None:
    """A table of the hits (with gender and product type when the store has them); a composed caption to stderr."""
    from rich.console import Console
    from rich.table import Table

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
