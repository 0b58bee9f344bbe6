"""Subcommands beyond ``inspect``: each parses options into a config and makes one library call."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fashion_retrieval.cli import AlphaOpt, JsonOpt, app
from fashion_retrieval.cli_common import print_json, user_errors
from fashion_retrieval.config import EmbedConfig, ModelConfig, default_workers

CheckpointOpt = Annotated[
    str | None, typer.Option("--checkpoint", help="Fine-tuned weights: best_model.pth, a PEFT adapter, a state dict.")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1 ...")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (fp32 on CPU, bf16/fp16 on GPU), fp32, fp16, bf16.")]


@app.command()
@user_errors
def embed(
    catalog: Annotated[str, typer.Argument(help="labels_front.csv, any CSV/Parquet/JSONL, or an image folder.")],
    base: Annotated[str, typer.Option("--base", help="BLIP base folder (model config + processor).")],
    checkpoint: CheckpointOpt = None,
    lora_alpha: AlphaOpt = 32.0,
    images_dir: Annotated[
        str | None,
        typer.Option(help="Folder the catalogue's paths are relative to (default: selected_images/ beside it)."),
    ] = None,
    out: Annotated[str, typer.Option(help="Output folder.")] = "embeddings_output",
    batch_size: Annotated[
        int | None,
        typer.Option(help="Images per forward pass (default: 1 on CPU, 128 on CUDA: what measured fastest)."),
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Image decoding processes (0: in the main process).")
    ] = default_workers(),
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    on_error: Annotated[
        str,
        typer.Option(
            help="Bad images: skip (listed in failures.jsonl), placeholder "
            "(black image, flagged), fail (stop at the first)."
        ),
    ] = "skip",
    limit: Annotated[int | None, typer.Option(help="Only the first N items (a quick look).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a folder made from another model or catalogue.")] = False,
    id_col: Annotated[str, typer.Option(help="Column with the item id.")] = "image_id",
    image_col: Annotated[str, typer.Option(help="Column with the image path.")] = "path",
    text_col: Annotated[str, typer.Option(help="Column with the caption ('' for none).")] = "caption",
    shard_size: Annotated[int, typer.Option(help="Items per resumable shard.")] = 1024,
    as_json: JsonOpt = False,
) -> None:
    """Embed every image and caption of a catalogue into an embeddings folder (resumable: re-run to continue)."""
    from fashion_retrieval.pipeline.embed import embed_catalog

    config = EmbedConfig(
        catalog=catalog,
        model=ModelConfig(base, checkpoint, lora_alpha, device, dtype),
        out=out,
        images_dir=images_dir,
        id_col=id_col,
        image_col=image_col,
        text_col=text_col or None,
        batch_size=batch_size,
        workers=workers,
        on_error=on_error,
        limit=limit,
        overwrite=overwrite,
        shard_size=shard_size,
    )
    summary = embed_catalog(config, progress=not as_json)
    if as_json:
        print_json(summary)
        return
    if summary["status"] == "already complete":
        typer.echo(
            f"{out}: already complete ({summary['embedded']} embedded, {summary['failed']} failed); nothing to do"
        )
        return
    typer.echo(
        f"embedded {summary['embedded']} of {summary['items']} items, {summary['failed']} failed"
        + (f", {summary['placeholders']} placeholders" if summary["placeholders"] else "")
        + f" in {summary['seconds']:.1f} s -> {out}"
    )
    if summary["images_per_second"]:
        typer.echo(
            f"  images/s {summary['images_per_second']}, captions/s {summary['captions_per_second']}, "
            f"stage seconds {summary['stage_seconds']}"
        )
    if summary["failed"]:
        typer.echo(f"  failures listed in {Path(out) / 'failures.jsonl'}")


DbOpt = Annotated[str | None, typer.Option("--db", help="Milvus Lite file (default fashion.db).")]
UriOpt = Annotated[str | None, typer.Option("--uri", help="Milvus server, e.g. http://host:19530 (instead of --db).")]
TokenOpt = Annotated[str | None, typer.Option("--token", help="Milvus server token (user:password).")]
CollectionOpt = Annotated[str, typer.Option("--collection", help="Collection name.")]


def _target(db, uri, token, collection, index_type="AUTOINDEX"):
    from fashion_retrieval.store.milvus import DEFAULT_DB, MilvusTarget

    return MilvusTarget(db=db or DEFAULT_DB, uri=uri, token=token, collection=collection, index_type=index_type)


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

    store = MilvusStore(_target(db, uri, token, collection, index_type), must_exist=False)
    try:
        if action == "create":
            if not embeddings:
                raise StoreError(
                    "schema create needs --embeddings DIR (it takes the model identity, dimension "
                    "and attributes from it)"
                )
            from fashion_retrieval.pipeline.writer import load_embeddings
            from fashion_retrieval.store.base import BASE_FIELDS

            data = load_embeddings(embeddings, mmap=True)
            if store.exists():
                raise StoreError(f"{store.description} exists already (drop it first, or just run index)")
            store.create(
                int(data.image_embeddings.shape[1]),
                [c for c in data.metadata.columns if c not in BASE_FIELDS],
                data.identity,
                has_text=data.text_embeddings is not None,
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

    config = IndexConfig(embeddings, _target(db, uri, token, collection, index_type), batch_size, delete_missing)
    summary = index_embeddings(config, progress=not as_json)
    if as_json:
        print_json(summary)
    else:
        typer.echo(
            f"{summary['collection']} at {summary['address']}: upserted {summary['upserted']}, "
            f"deleted {summary['deleted']}, {summary['count']} rows ({summary['seconds']:.1f} s)"
        )


def open_searcher(db, uri, token, collection, embeddings, use_faiss, base, checkpoint, lora_alpha, device):
    """The store named by the options (embeddings folder > --uri > --db) and its query model."""
    from fashion_retrieval.search.searcher import Searcher
    from fashion_retrieval.store import open_store

    store = open_store(
        db=db, uri=uri, token=token, collection=collection, embeddings=embeddings, use_faiss=use_faiss or None
    )
    return Searcher.open(store, base=base, checkpoint=checkpoint, lora_alpha=lora_alpha, device=device)


@app.command()
@user_errors
def search(
    text: Annotated[str | None, typer.Argument(help="What you look for, e.g. 'red striped dress'.")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="A query image (alone, or with TEXT: hybrid).")] = None,
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
    base: Annotated[str | None, typer.Option(help="Query model base (default: the one the index records).")] = None,
    checkpoint: CheckpointOpt = None,
    lora_alpha: Annotated[float | None, typer.Option(help="LoRA alpha (default: the recorded one).")] = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Search by text, by image, or both (hybrid), with filters; a table, or JSON with --json."""
    from fashion_retrieval.errors import QueryError
    from fashion_retrieval.store.base import parse_filters

    if text is None and image is None:
        raise QueryError("give a TEXT query, an --image, or both")
    if rerank and text is None:
        raise QueryError("--rerank needs a TEXT query (the ITM head scores text against images)")
    filters = parse_filters(filter_)
    searcher = open_searcher(db, uri, token, collection, embeddings, use_faiss, base, checkpoint, lora_alpha, device)
    try:
        if text is not None and image is not None:
            response = searcher.hybrid(
                text, image, alpha=alpha, fusion=fusion, top_k=top_k, filters=filters, against=against, rerank=rerank
            )
        elif text is not None:
            response = searcher.text(text, top_k=top_k, filters=filters, against=against, rerank=rerank)
        else:
            response = searcher.image(image, top_k=top_k, filters=filters, against=against)
    finally:
        searcher.store.close()
    if as_json:
        print_json({"query": response.query, "results": [h.to_dict() for h in response.results]})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(response.results)} results ({response.seconds * 1000:.0f} ms)")
    for column in ("#", "score", "id", "caption"):
        table.add_column(column, overflow="fold")
    extra = [a for a in ("gender", "product_type") if response.results and a in response.results[0].attributes]
    for column in extra:
        table.add_column(column)
    for rank, hit in enumerate(response.results, 1):
        table.add_row(str(rank), f"{hit.score:.4f}", hit.id, hit.caption, *(hit.attributes[a] for a in extra))
    Console().print(table)


@app.command()
@user_errors
def serve(
    db: DbOpt = None,
    uri: UriOpt = None,
    token: TokenOpt = None,
    collection: CollectionOpt = "fashion_items",
    embeddings: Annotated[str | None, typer.Option(help="Serve an embeddings folder in memory instead.")] = None,
    use_faiss: Annotated[bool, typer.Option("--faiss", help="In memory: FAISS HNSW instead of exact.")] = False,
    images_dir: Annotated[
        str | None, typer.Option(help="Where the catalogue images are, if not at the recorded paths.")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    api_key: Annotated[str | None, typer.Option(help="Require this X-API-Key header on /api/*.")] = None,
    cors_origin: Annotated[str | None, typer.Option(help="Allow this browser origin (CORS is off otherwise).")] = None,
    base: Annotated[str | None, typer.Option(help="Query model base (default: the recorded one).")] = None,
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Serve the JSON API (docs at /docs) and the search page at / ."""
    import uvicorn

    from fashion_retrieval.serve.app import ServeConfig, _open_searcher, create_app

    config = ServeConfig(
        db=db,
        uri=uri,
        token=token,
        collection=collection,
        embeddings=embeddings,
        use_faiss=use_faiss,
        images_dir=images_dir,
        base=base,
        checkpoint=checkpoint,
        device=device,
        host=host,
        port=port,
        api_key=api_key,
        cors_origin=cors_origin,
    )
    searcher = _open_searcher(config)  # fail here, with a one-line error, before the server starts
    typer.echo(f"serving {searcher.store.count()} items from {searcher.store.description}")
    typer.echo(f"open http://{host}:{port}/  (API docs: http://{host}:{port}/docs)")
    try:
        uvicorn.run(create_app(config, searcher=searcher), host=host, port=port, log_level="warning")
    finally:
        searcher.store.close()


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@app.command()
@user_errors
def train(
    catalog: Annotated[str, typer.Argument(help="labels_front.csv (DeepFashion layout) or a mapped table.")],
    base: Annotated[str, typer.Option("--base", help="BLIP base folder to fine-tune.")],
    out: Annotated[str, typer.Option(help="Output folder (model_weights/best_model.pth, adapter/, ...).")],
    checkpoint: CheckpointOpt = None,
    images_dir: Annotated[str | None, typer.Option(help="Folder the catalogue's paths are relative to.")] = None,
    epochs: Annotated[int, typer.Option(help="Epochs.")] = 5,
    batch_size: Annotated[int, typer.Option(help="Pairs per step (in-batch negatives).")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate (warm-up, then cosine decay).")] = 1e-4,
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    lora_alpha: Annotated[float, typer.Option(help="LoRA alpha.")] = 32.0,
    targets: Annotated[str, typer.Option(help="Modules LoRA adapts.")] = "query,value,vision_proj,text_proj",
    val_fraction: Annotated[float, typer.Option(help="Share of items held out for validation.")] = 0.1,
    device: DeviceOpt = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bf16 autocast on CUDA), fp32 or bf16.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed (split, init, shuffles).")] = 0,
    grad_accum: Annotated[int, typer.Option(help="Batches per optimizer step.")] = 1,
    full: Annotated[bool, typer.Option(help="Fine-tune every weight instead of LoRA.")] = False,
    itm: Annotated[bool, typer.Option(help="Add BLIP's image-text matching loss (hard negatives).")] = False,
    max_seconds: Annotated[float | None, typer.Option(help="Time budget; the schedule fits it.")] = None,
    match_attributes: Annotated[
        str,
        typer.Option(
            help="Soft targets: items equal on these attributes count as positives, e.g. product_type,gender."
        ),
    ] = "",
    limit: Annotated[int | None, typer.Option(help="Only the first N items.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune BLIP retrieval with LoRA (or fully); keeps the best epoch in the original checkpoint format."""
    from fashion_retrieval.train.loop import TrainConfig
    from fashion_retrieval.train.loop import train as run_training

    config = TrainConfig(
        catalog=catalog,
        base=base,
        out=out,
        checkpoint=checkpoint,
        images_dir=images_dir,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        targets=_csv(targets),
        val_fraction=val_fraction,
        device=device,
        dtype=dtype,
        seed=seed,
        grad_accum=grad_accum,
        full=full,
        itm=itm,
        max_seconds=max_seconds,
        match_attributes=_csv(match_attributes),
        limit=limit,
    )
    summary = run_training(config, progress=not as_json)
    if as_json:
        print_json(summary)
    else:
        typer.echo(
            f"best epoch {summary['best_epoch']} of {summary['epochs_run']}: "
            + ", ".join(f"{k} {v:.3f}" for k, v in summary["best"].items() if "recall@" in k)
        )
        typer.echo(f"checkpoint: {summary['checkpoint']}")


@app.command("make-catalog")
@user_errors
def make_catalog_command(
    out: Annotated[str, typer.Argument(help="Folder for labels_front.csv and selected_images/.")],
    n: Annotated[int, typer.Option("--n", help="Number of items.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same catalogue).")] = 0,
    image_size: Annotated[int, typer.Option(help="Image side in pixels.")] = 128,
) -> None:
    """Draw a synthetic fashion catalogue in DeepFashion-MultiModal's layout."""
    from fashion_retrieval.data.synthetic import make_catalog

    typer.echo(f"wrote {make_catalog(out, n=n, seed=seed, image_size=image_size)}")


@app.command("eval")
@user_errors
def eval_command(
    embeddings: Annotated[str, typer.Argument(help="An embeddings folder written by `embed`.")],
    ks: Annotated[str, typer.Option(help="Cut-offs for Recall@K.")] = "1,5,10",
    relevance: Annotated[
        str, typer.Option(help="pair (each caption's own image) or attributes:gender,product_type.")
    ] = "pair",
    protocol: Annotated[
        str,
        typer.Option(
            help="full (every caption) or marqo (sampled captions against the whole "
            "gallery, as the public fashion leaderboard)."
        ),
    ] = "full",
    queries: Annotated[int | None, typer.Option(help="Sample at most N queries.")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    query_ids: Annotated[str | None, typer.Option(help="File of ids (one per line) to use as queries.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Recall@K, MRR and ranks for text->image and image->text, with a per-attribute breakdown."""
    from fashion_retrieval.evaluate.evaluate import EvalConfig, evaluate_embeddings

    config = EvalConfig(embeddings, tuple(int(k) for k in _csv(ks)), relevance, protocol, queries, seed, query_ids)
    report = evaluate_embeddings(config)
    if as_json:
        print_json(report)
        return
    typer.echo(f"{report['queries']} queries against {report['gallery']} items ({relevance}, {protocol})")
    for direction in ("text_to_image", "image_to_text"):
        metrics = report[direction]
        typer.echo(f"  {direction:<14} " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    for attribute, values in report["breakdown_text_to_image"].items():
        k = max(config.ks)
        typer.echo(
            f"  recall@{k} by {attribute}: "
            + ", ".join(f"{v} {m[f'recall@{k}']:.2f} ({m['queries']})" for v, m in values.items())
        )


@app.command()
@user_errors
def demo(
    workdir: Annotated[str, typer.Option(help="Where everything goes (reused by a second run).")] = "demo_workdir",
    n: Annotated[int, typer.Option("--n", help="Catalogue size.")] = 2000,
    train_seconds: Annotated[float, typer.Option(help="Training time budget.")] = 120.0,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Print example searches instead of serving.")] = False,
    port: Annotated[int, typer.Option(help="Port for the page.")] = 8000,
    as_json: JsonOpt = False,
) -> None:
    """Offline end to end: make a catalogue, train a tiny BLIP, embed, index, evaluate, then serve the page."""
    from fashion_retrieval.demo import DemoConfig, example_searches, run_demo

    config = DemoConfig(workdir=workdir, n=n, train_seconds=train_seconds, serve=not no_serve, port=port)
    summary = run_demo(config, progress=not as_json)
    if as_json:
        print_json(summary)
        return
    if no_serve:
        for example in example_searches(workdir):
            typer.echo(f"\n{example['query']!r}:")
            for hit in example["results"]:
                typer.echo(f"  {hit['score']:.3f}  {hit['caption']}")
        return
    serve(
        db=str(Path(workdir) / "fashion.db"),
        uri=None,
        token=None,
        collection="fashion_items",
        embeddings=None,
        use_faiss=False,
        images_dir=None,
        host="127.0.0.1",
        port=port,
        api_key=None,
        cors_origin=None,
        base=None,
        checkpoint=None,
        device="cpu",
    )


@app.command()
@user_errors
def report(
    embeddings: Annotated[str, typer.Argument(help="An embeddings folder written by `embed`.")],
    out: Annotated[str, typer.Option(help="The HTML file (its PNGs go beside it).")] = "report.html",
    samples: Annotated[int, typer.Option(help="Sample queries shown with their top images.")] = 4,
    duplicate_threshold: Annotated[
        float, typer.Option(help="Cosine above which two images are near-duplicates.")
    ] = 0.98,
    as_json: JsonOpt = False,
) -> None:
    """Write one self-contained HTML page analysing an embeddings folder (instead of a notebook)."""
    from fashion_retrieval.evaluate.report import ReportConfig, write_report

    summary = write_report(ReportConfig(embeddings, out, samples, duplicate_threshold), progress=not as_json)
    if as_json:
        print_json(summary)
    else:
        typer.echo(
            f"wrote {summary['out']} ({summary['items']} items, modality gap {summary['modality_gap']:.3f}, "
            f"{summary['near_duplicate_pairs']} near-duplicate pairs)"
        )
