from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fashion_retrieval import FashionEmbeddingModel
from fashion_retrieval.config import EmbedConfig, ModelConfig
from fashion_retrieval.data.synthetic import make_catalog
from fashion_retrieval.pipeline.embed import embed_catalog
from tests.helpers import free_port


@pytest.fixture(scope="session")
def store_catalog(tmp_path_factory) -> Path:
    return make_catalog(tmp_path_factory.mktemp("store_cat"), n=48, seed=4, image_size=48)


@pytest.fixture(scope="session")
def store_encoder(tiny_base):
    return FashionEmbeddingModel(None, tiny_base, device="cpu")


@pytest.fixture(scope="session")
def embeddings_dir(tmp_path_factory, store_catalog, tiny_base, store_encoder) -> Path:
    out = tmp_path_factory.mktemp("store_emb") / "emb"
    config = EmbedConfig(str(store_catalog), ModelConfig(str(tiny_base), device="cpu"), out=str(out), workers=0)
    embed_catalog(config, encoder=store_encoder, progress=False)
    return out


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """A real Milvus Lite gRPC server on a loopback port: the protocol of a Milvus cluster."""
    port = free_port()
    db = tmp_path_factory.mktemp("milvus_server") / "served.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "fashion_retrieval.store.lite_server", str(db), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_port(process, port, "the Milvus Lite server")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=20)


def _wait_for_port(process, port: int, what: str) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"{what} exited")
            time.sleep(0.2)
    process.kill()
    pytest.fail(f"{what} did not start")


@pytest.fixture(scope="session")
def milvus3_server(tmp_path_factory):
    """Milvus Lite 3.x's gRPC server, from its own venv (`make install` builds .venv-milvus3): an engine that
    drops schema descriptions but keeps collection properties, and builds real HNSW indexes."""
    import os

    binary = Path(os.environ.get("FASHION_RETRIEVAL_MILVUS3", ".venv-milvus3/bin/milvus-lite"))
    if not binary.is_file():
        if os.environ.get("FASHION_RETRIEVAL_MILVUS3"):
            pytest.fail(f"{binary} is missing: run `make install`")
        pytest.skip("Milvus Lite 3.x is not installed (make install builds .venv-milvus3)")
    port = free_port()
    data = tmp_path_factory.mktemp("milvus3")
    process = subprocess.Popen(
        [str(binary), "server", "--data-dir", str(data), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_port(process, port, "the Milvus Lite 3.x server")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=20)
