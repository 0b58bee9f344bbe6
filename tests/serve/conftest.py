from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fashion_retrieval.serve.app import create_app
from fashion_retrieval.serve.config import ServeConfig
from tests.store.conftest import embeddings_dir, store_catalog, store_encoder  # noqa: F401


@pytest.fixture(scope="module")
def client(embeddings_dir):  # noqa: F811
    app = create_app(ServeConfig(embeddings=str(embeddings_dir), device="cpu", max_upload_bytes=200_000))
    with TestClient(app) as test_client:
        yield test_client
