"""Where a Milvus collection lives and how to reach it: a Milvus Lite file or a server by URI, the client, and the
server version check (a collection with an image and a caption vector field needs Milvus 2.4 or newer)."""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from fashion_retrieval.errors import StoreError

log = logging.getLogger(__name__)

# milvus-lite 2.5.1 imports pkg_resources, which warns on every start; the pin on setuptools<81 keeps it working.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

DEFAULT_DB = "fashion.db"
DEFAULT_COLLECTION = "fashion_items"
# Two vector fields in one collection (image and caption vectors) came with Milvus 2.4; 2.3 refuses the schema.
MIN_SERVER_VERSION = (2, 4)


@dataclass(frozen=True)
class MilvusTarget:
    """Where the collection lives: a Milvus Lite file (``db``) or a server (``uri`` + ``token``)."""

    db: str | None = DEFAULT_DB
    uri: str | None = None
    token: str | None = None
    collection: str = DEFAULT_COLLECTION
    index_type: str = (
        "AUTOINDEX"  # Milvus Lite 2.5 offers FLAT, IVF_FLAT and AUTOINDEX; a server maps AUTOINDEX to HNSW
    )
    # Search-time parameters, sent to the index that the collection really has (see search_params):
    ef: int = 128  # HNSW: candidates kept per query (raised to top_k when smaller); recall vs speed
    nprobe: int = 32  # IVF_*: clusters scanned per query

    @property
    def address(self) -> str:
        return self.uri or str(Path(self.db or DEFAULT_DB).expanduser().resolve())

    @property
    def is_lite(self) -> bool:
        return self.uri is None


# pymilvus pings every 10 s even on an idle connection; Milvus Lite's embedded gRPC server allows a ping every
# 5 minutes without data, answers the third early one with GOAWAY "too_many_pings", and gRPC prints that. A ping
# every 300 s still drew strikes on connections held for a whole session (timer jitter). A Lite file is a local
# socket with nothing in between to keep alive: ping only while a call is in flight, and at most once an hour.
LITE_GRPC_OPTIONS = {"grpc.keepalive_time_ms": 3_600_000, "grpc.keepalive_permit_without_calls": 0}


def _client(target: MilvusTarget):
    from pymilvus import MilvusClient

    try:
        if target.is_lite:
            return MilvusClient(target.address, grpc_options=LITE_GRPC_OPTIONS)
        return MilvusClient(uri=target.uri, token=target.token or "", timeout=10)
    except Exception as exc:  # pymilvus raises MilvusException or plain errors for a bad address
        hint = (
            " Milvus Lite serves one process at a time: a running `serve` holds the file (write items through its "
            "API: POST /api/items, /api/items:batch), or stop the other process, or run "
            "`python -m fashion_retrieval.store.lite_server FILE --port 19530` and use --uri http://127.0.0.1:19530."
            if target.is_lite
            else " Check that the server runs and the --uri and --token are right."
        )
        raise StoreError(f"cannot open Milvus at {target.address}: {str(exc).splitlines()[0][:200]}.{hint}") from exc


def check_server_version(version: str | None, address: str) -> None:
    """Refuse a Milvus server older than 2.4 in one line. A version that is not Milvus's own ("v2.4.5", "2.6.0"),
    such as Milvus Lite's server ("milvus_lite-3.2.2") or none at all, is let through: the schema check decides."""
    found = re.match(r"v?(\d+)\.(\d+)", version or "")
    if found and (int(found[1]), int(found[2])) < MIN_SERVER_VERSION:
        need = ".".join(map(str, MIN_SERVER_VERSION))
        raise StoreError(
            f"the Milvus server at {address} runs {version}; fashion-retrieval needs Milvus {need} or newer (its "
            "collections hold an image and a caption vector field): upgrade the server, or use a Milvus Lite file"
        )


def _server_version(client) -> str | None:
    """The server's version, or None when it does not say (Milvus Lite 2.5's gRPC server answers UNIMPLEMENTED,
    which pymilvus would also log as an error)."""
    rpc_log = logging.getLogger("pymilvus.decorators")
    level = rpc_log.level
    rpc_log.setLevel(logging.CRITICAL)
    try:
        return str(client.get_server_version())
    except Exception as exc:  # noqa: BLE001 - any RPC failure means "unknown", not a refusal
        log.debug("the Milvus server did not say its version: %s", str(exc).splitlines()[0][:120])
        return None
    finally:
        rpc_log.setLevel(level)


def connect(target: MilvusTarget):
    """A client for ``target``; a server older than Milvus 2.4 is refused (the client closed again)."""
    client = _client(target)
    if not target.is_lite:
        try:
            check_server_version(_server_version(client), target.address)
        except StoreError:
            client.close()
            raise
    return client


__all__ = ["DEFAULT_COLLECTION", "DEFAULT_DB", "MIN_SERVER_VERSION", "MilvusTarget", "check_server_version", "connect"]
