from __future__ import annotations

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from fashion_retrieval.serve.app import create_app
from fashion_retrieval.serve.config import ServeConfig
from fashion_retrieval.store.indexer import IndexConfig, index_embeddings
from fashion_retrieval.store.milvus import MilvusTarget
from tests.helpers import ServedIndex
from tests.store.conftest import embeddings_dir, store_catalog, store_encoder  # noqa: F401


def _lite_file(tmp_path_factory, embeddings_dir, name: str):  # noqa: F811
    db = tmp_path_factory.mktemp(name) / "fashion.db"
    index_embeddings(IndexConfig(str(embeddings_dir), MilvusTarget(db=str(db))), progress=False)
    return db


@pytest.fixture(scope="module")
def lite_file_db(tmp_path_factory, embeddings_dir):  # noqa: F811
    """A Milvus Lite file of the test catalogue, for a server in another process (indexed in a process of its
    own too: Milvus Lite keeps a file open in the process that opened it until that process ends)."""
    db = tmp_path_factory.mktemp("served_lite") / "fashion.db"
    command = [sys.executable, "-m", "fashion_retrieval", "-q", "index", str(embeddings_dir), "--db", str(db), "--json"]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    return db


@pytest.fixture(scope="module", params=["memory", "lite"])
def client(request, tmp_path_factory, embeddings_dir):  # noqa: F811
    """The app in this process, over the embeddings folder in memory and over a Milvus Lite file (the default)."""
    if request.param == "memory":
        config = ServeConfig(embeddings=str(embeddings_dir), device="cpu", max_upload_bytes=200_000)
    else:
        db = _lite_file(tmp_path_factory, embeddings_dir, "client_lite")
        config = ServeConfig(db=str(db), device="cpu", max_upload_bytes=200_000)
    with TestClient(create_app(config)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def plain_server(embeddings_dir):  # noqa: F811
    """`serve --embeddings` with its defaults, shared by the tests that need nothing else of a server (the page,
    the API over HTTP, metrics and the access log): they share the "page" xdist group, so one worker starts it."""
    server = ServedIndex("--embeddings", str(embeddings_dir))
    yield server
    server.close()
