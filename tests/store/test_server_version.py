"""A Milvus server too old for the schema is refused in one line; servers that do not say are let through."""

from __future__ import annotations

import pytest

from fashion_retrieval.errors import StoreError
from fashion_retrieval.store.milvus import MilvusStore, MilvusTarget, check_server_version


@pytest.mark.parametrize("version", ["v2.3.5", "2.3.5", "v2.2.16", "v1.1.0"])
def test_a_server_older_than_2_4_is_refused_naming_its_version(version):
    with pytest.raises(StoreError) as caught:
        check_server_version(version, "http://db:19530")
    message = str(caught.value)
    assert "\n" not in message and version in message and "2.4 or newer" in message and "http://db:19530" in message


@pytest.mark.parametrize("version", ["v2.4.0", "v2.6.1", "2.5.10-gpu", "milvus_lite-3.2.2", None, ""])
def test_newer_or_unknown_versions_pass(version):
    check_server_version(version, "http://db:19530")


def test_a_real_server_that_does_not_say_its_version_is_used(milvus_server):
    """Milvus Lite 2.5's gRPC server answers the version request UNIMPLEMENTED: that is not a refusal."""
    store = MilvusStore(MilvusTarget(uri=milvus_server, collection="version_probe"), must_exist=False)
    try:
        assert store.exists() is False
    finally:
        store.close()
