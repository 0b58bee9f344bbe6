"""Serve a Milvus Lite file over gRPC on a TCP port, so several processes can share it by ``--uri``.

Milvus Lite 2.5 ships the server binary but no command for this; ``python -m
fashion_retrieval.store.lite_server fashion.db --port 19530`` runs it until interrupted. For real
concurrency and scale, run a Milvus standalone or cluster instead: the client code is the same.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", help="the Milvus Lite file (created if missing)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=19530)
    args = parser.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    from milvus_lite.server import Server

    db = Path(args.db).resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    server = Server(str(db), f"{args.host}:{args.port}")
    if not server.init() or not server.start():
        sys.exit(f"could not start Milvus Lite on {args.host}:{args.port} for {db} (is the file open elsewhere?)")
    print(f"serving {db} at http://{args.host}:{args.port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (server.stop(), sys.exit(0)))
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
