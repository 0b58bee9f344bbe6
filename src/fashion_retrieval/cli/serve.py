"""`serve` and `demo`: the HTTP API and page, and the offline end-to-end demo."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from fashion_retrieval.cli.common import (
    BackendOpt,
    CalibrateOpt,
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
    print_json,
    user_errors,
)


# Long only by its option declarations (Typer reads them from the signature); the body passes the options on.
@app.command()
@user_errors
def serve(
    db: DbOpt = None,
    uri: UriOpt = None,
    token: TokenOpt = None,
    collection: CollectionOpt = "fashion_items",
    embeddings: Annotated[str | None, typer.Option(help="Serve an embeddings folder in memory instead.")] = None,
    use_faiss: Annotated[bool, typer.Option("--faiss", help="In memory: FAISS HNSW instead of exact.")] = False,
    ef: EfOpt = None,
    nprobe: NprobeOpt = None,
    images_dir: Annotated[
        str | None, typer.Option(help="Where the catalogue images are, if not at the recorded paths.")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            help="Server processes, each with its own model (needs --uri or --embeddings: a Lite file serves "
            "one process)."
        ),
    ] = 1,
    api_key: Annotated[str | None, typer.Option(help="Require this X-API-Key header on /api/* and /images/*.")] = None,
    admin_key: Annotated[
        str | None,
        typer.Option(help="Take catalogue writes (POST/PUT/PATCH/DELETE /api/items) with this X-API-Key; off without."),
    ] = None,
    cors_origin: Annotated[str | None, typer.Option(help="Allow this browser origin (CORS is off otherwise).")] = None,
    base: Annotated[str | None, typer.Option(help="Query model base (default: the recorded one).")] = None,
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    backend: BackendOpt = "torch",
    calibrate: CalibrateOpt = 0,
    max_batch: Annotated[
        int | None, typer.Option(help="Queries encoded together at most (default: 32 on CPU, 128 on CUDA).")
    ] = None,
    max_image_batch: Annotated[
        int | None, typer.Option(help="Of which with an image at most (default: 4 on CPU, 64 on CUDA).")
    ] = None,
    max_wait_ms: Annotated[
        float | None,
        typer.Option(help="Wait this long for more queries before encoding (default: 0 on CPU, 5 on CUDA)."),
    ] = None,
    max_queue: Annotated[
        float | None,
        typer.Option(
            help="Queued work (in image queries; a text query counts 1/16) past which searches get 503 + "
            "Retry-After (default: 12 on CPU, measured; 512 on CUDA)."
        ),
    ] = None,
    write_batch: Annotated[
        int | None,
        typer.Option(help="Items encoded together when no search waits (default: 1 on CPU, 16 on CUDA)."),
    ] = None,
    request_timeout: Annotated[
        float, typer.Option(help="A search not encoded within this many seconds is dropped with 503.")
    ] = 10.0,
    header_timeout: Annotated[
        float, typer.Option(help="Seconds a connection may take to send a request's line and headers (then 408).")
    ] = 10.0,
    keep_alive: Annotated[int, typer.Option(help="Seconds an idle keep-alive connection stays open.")] = 5,
    limit_concurrency: Annotated[
        int, typer.Option(help="Connections and requests at once past which new requests get 503 (per process).")
    ] = 1024,
    max_upload_mb: Annotated[float, typer.Option(help="Largest image upload accepted.")] = 10.0,
    body_timeout: Annotated[
        float, typer.Option(help="Seconds a request body may take to arrive (slow senders get 408).")
    ] = 30.0,
    max_batch_lines: Annotated[int, typer.Option(help="Lines a batch import (/api/items:batch) may hold.")] = 1000,
    max_batch_mb: Annotated[float, typer.Option(help="Largest batch import body.")] = 64.0,
    write_chunk: Annotated[int, typer.Option(help="Batch lines written, flushed and acknowledged together.")] = 16,
    metrics: Annotated[
        bool, typer.Option("--metrics/--no-metrics", help="Serve Prometheus metrics at /metrics.")
    ] = True,
    log_level: Annotated[
        str, typer.Option(help="debug, info (one access-log line per request), warning or error.")
    ] = "info",
) -> None:
    """Serve the JSON API (docs at /docs), the search page at / and Prometheus metrics at /metrics.

    Queries are batched: one model worker encodes what is waiting together, while the store answers the
    previous batch. Bodies are capped (--max-upload-mb for images, 1 MB for JSON) before they are read. Past
    --max-queue, or past --request-timeout, searches get 503 with Retry-After. With --admin-key the catalogue
    takes writes (/api/items, /api/items:batch), encoded by the same model after the searches."""
    from fashion_retrieval.serve.config import ServeConfig

    config = ServeConfig(
        db=db,
        uri=uri,
        token=token,
        collection=collection,
        embeddings=embeddings,
        use_faiss=use_faiss,
        ef=ef,
        nprobe=nprobe,
        images_dir=images_dir,
        base=base,
        checkpoint=checkpoint,
        device=device,
        dtype=dtype,
        backend=backend,
        calibrate=calibrate,
        host=host,
        port=port,
        workers=workers,
        api_key=api_key,
        admin_key=admin_key,
        cors_origin=cors_origin,
        max_batch=max_batch,
        max_image_batch=max_image_batch,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        write_batch=write_batch,
        request_timeout=request_timeout,
        header_timeout=header_timeout,
        keep_alive_seconds=keep_alive,
        limit_concurrency=limit_concurrency,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        body_timeout=body_timeout,
        max_batch_lines=max_batch_lines,
        max_batch_bytes=int(max_batch_mb * 1024 * 1024),
        write_chunk=write_chunk,
        metrics=metrics,
        log_level=log_level,
    )
    run_server(config)


def run_server(config) -> None:
    """Open the searcher (a one-line error before the server starts if it cannot), then run uvicorn."""
    import os
    import tempfile

    import uvicorn

    from fashion_retrieval.serve.app import create_app
    from fashion_retrieval.serve.config import CONFIG_ENV
    from fashion_retrieval.serve.protocol import PROTOCOL, ConnectionLimits

    if config.log_level not in ("debug", "info", "warning", "error"):
        raise ValueError(f"--log-level {config.log_level!r}: use debug, info, warning or error")
    logging.getLogger("fashion_retrieval").setLevel(config.log_level.upper())
    options = {
        "host": config.host,
        "port": config.port,
        "log_level": "warning" if config.log_level == "info" else config.log_level,  # our access log replaces its
        "access_log": False,
        "timeout_keep_alive": config.keep_alive_seconds,
        "limit_concurrency": config.limit_concurrency,
        "http": PROTOCOL,  # uvicorn's httptools protocol with a header timeout, a header cap, a lingering close
    }
    ConnectionLimits(header_timeout=config.header_timeout).to_environment()  # read by each worker's protocol
    if config.workers == 1:
        from fashion_retrieval.serve.engine import in_fresh_thread

        searcher = in_fresh_thread(config.open_searcher).result()  # torch stays off this thread
        typer.echo(f"serving {searcher.store.count()} items from {searcher.store.description}")
        typer.echo(f"open http://{config.host}:{config.port}/  (API docs: http://{config.host}:{config.port}/docs)")
        try:
            uvicorn.run(create_app(config, searcher=searcher), **options)
        finally:
            searcher.store.close()
        return
    from fashion_retrieval.store import open_store

    store = open_store(
        db=config.db, uri=config.uri, token=config.token, collection=config.collection, embeddings=config.embeddings
    )  # fail here, once, if the store is not there
    typer.echo(f"serving {store.count()} items from {store.description} with {config.workers} workers")
    store.close()
    typer.echo(f"open http://{config.host}:{config.port}/  (API docs: http://{config.host}:{config.port}/docs)")
    os.environ[CONFIG_ENV] = config.to_json()
    if config.metrics and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fashion-metrics-")
    uvicorn.run("fashion_retrieval.serve.app:app_from_environment", factory=True, workers=config.workers, **options)


@app.command()
@user_errors
def demo(
    workdir: Annotated[str, typer.Option(help="Where everything goes (reused by a second run).")] = "demo_workdir",
    n: Annotated[int, typer.Option("--n", help="Catalogue size.")] = 2000,
    train_epochs: Annotated[
        int | None, typer.Option(help="Training epochs (default: the demo's recipe, demo.TRAIN_EPOCHS).")
    ] = None,
    train_seconds: Annotated[
        float | None, typer.Option(help="Cap training at this many seconds (the model then depends on the machine).")
    ] = None,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Print example searches instead of serving.")] = False,
    port: Annotated[int, typer.Option(help="Port for the page.")] = 8000,
    as_json: JsonOpt = False,
) -> None:
    """Offline end to end: make a catalogue, train a tiny BLIP, embed, index, evaluate, then serve the page."""
    from fashion_retrieval.demo import DemoConfig, example_searches, run_demo

    recipe = {"train_epochs": train_epochs} if train_epochs is not None else {}
    config = DemoConfig(workdir=workdir, n=n, train_seconds=train_seconds, serve=not no_serve, port=port, **recipe)
    summary = run_demo(config, progress=not as_json)
    if as_json:
        print_json(summary)
        return
    if no_serve:
        for example in example_searches(workdir):
            typer.echo(f"\n{example['query']!r}:")
            for hit in example["results"]:
                mark = "+" if hit["matches"] else "x"  # what the query asks for, or not
                typer.echo(f"  {mark} {hit['score']:.3f}  {hit['caption']}")
        return
    from fashion_retrieval.serve.config import ServeConfig

    run_server(ServeConfig(db=str(Path(workdir) / "fashion.db"), port=port, device="cpu"))
