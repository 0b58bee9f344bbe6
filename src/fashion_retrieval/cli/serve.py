"""`serve` and `demo`: the HTTP API and page, and the offline end-to-end demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fashion_retrieval.cli.common import (
    CheckpointOpt,
    CollectionOpt,
    DbOpt,
    DeviceOpt,
    JsonOpt,
    TokenOpt,
    UriOpt,
    app,
    print_json,
    user_errors,
)


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

    from fashion_retrieval.serve.app import ServeConfig, create_app, open_config_searcher

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
    searcher = open_config_searcher(config)  # fail here, with a one-line error, before the server starts
    typer.echo(f"serving {searcher.store.count()} items from {searcher.store.description}")
    typer.echo(f"open http://{host}:{port}/  (API docs: http://{host}:{port}/docs)")
    try:
        uvicorn.run(create_app(config, searcher=searcher), host=host, port=port, log_level="warning")
    finally:
        searcher.store.close()


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
