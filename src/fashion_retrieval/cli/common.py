"""Shared pieces of the CLI: one-line errors for user mistakes, JSON output, option types, store targets."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from fashion_retrieval.errors import FashionRetrievalError

app = typer.Typer(
    help="Multimodal fashion search on your image-text model (BLIP, CLIP, SigLIP, Chinese-CLIP, open_clip): "
    "embed, index, search, serve, evaluate, compare, train, export.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Print a user-caused error as one line (no traceback) and exit with status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (FashionRetrievalError, FileNotFoundError, ValueError) as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None

    return wrapper


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def csv_option(value: str) -> tuple[str, ...]:
    """``"a, b,c"`` -> ("a", "b", "c")."""
    return tuple(v.strip() for v in value.split(",") if v.strip())


BaseOpt = Annotated[
    str,
    typer.Option(
        "--base", help="Model folder: BLIP, CLIP, SigLIP, Chinese-CLIP (Hugging Face format) or open_clip checkpoint."
    ),
]
AlphaOpt = Annotated[float, typer.Option("--lora-alpha", help="LoRA alpha of an original-format checkpoint.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print only a JSON summary (for scripts).")]


CheckpointOpt = Annotated[
    str | None, typer.Option("--checkpoint", help="Fine-tuned weights: best_model.pth, a PEFT adapter, a state dict.")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1 ...")]
DtypeOpt = Annotated[
    str,
    typer.Option(
        "--dtype",
        help="auto (bf16 on GPUs and on CPUs with AMX/AVX512-BF16 when a parity check on your model keeps its "
        "rankings, else fp32), fp32, fp16, bf16; with --backend openvino/onnxruntime also int8 (calibrated).",
    ),
]
BackendOpt = Annotated[
    str,
    typer.Option(
        "--backend",
        help="Where the towers run: torch, openvino or onnxruntime (exported once, cached, used only if their "
        "parity check passes), or auto (per tower, the fastest that passes on this machine, measured once).",
    ),
]
CalibrateOpt = Annotated[
    int,
    typer.Option(
        "--calibrate",
        help="Calibrate an int8 export on N items of your catalogue (0: no int8; --dtype int8 takes 300).",
    ),
]


DbOpt = Annotated[str | None, typer.Option("--db", help="Milvus Lite file (default fashion.db).")]
UriOpt = Annotated[str | None, typer.Option("--uri", help="Milvus server, e.g. http://host:19530 (instead of --db).")]
TokenOpt = Annotated[str | None, typer.Option("--token", help="Milvus server token (user:password).")]
CollectionOpt = Annotated[str, typer.Option("--collection", help="Collection name.")]
EfOpt = Annotated[
    int | None,
    typer.Option("--ef", help="HNSW collections: candidates per query (default 128; raised to --top-k when lower)."),
]
NprobeOpt = Annotated[int | None, typer.Option("--nprobe", help="IVF collections: clusters scanned (default 32).")]


def milvus_target(db, uri, token, collection, index_type="AUTOINDEX"):
    from fashion_retrieval.store.milvus import DEFAULT_DB, MilvusTarget

    return MilvusTarget(db=db or DEFAULT_DB, uri=uri, token=token, collection=collection, index_type=index_type)
