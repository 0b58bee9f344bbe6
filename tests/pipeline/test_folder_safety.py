"""One run per output folder, --overwrite always re-embeds, replaced images are noticed, crashed writes cleaned,
damaged shards recomputed."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from fashion_retrieval import FashionEmbeddingModel, load_embeddings
from fashion_retrieval.config import EmbedConfig, ModelConfig
from fashion_retrieval.data.synthetic import make_catalog
from fashion_retrieval.errors import FashionRetrievalError
from fashion_retrieval.files import FolderLock
from fashion_retrieval.pipeline.embed import embed_catalog
from fashion_retrieval.pipeline.writer import ShardStore


@pytest.fixture(scope="module")
def encoder(tiny_base):
    return FashionEmbeddingModel(None, tiny_base, device="cpu")


@pytest.fixture()
def catalog(tmp_path):
    return make_catalog(tmp_path / "cat", n=12, seed=5, image_size=32)


def _config(catalog, base, out, **kw):
    return EmbedConfig(
        str(catalog), ModelConfig(str(base), device="cpu"), out=str(out), batch_size=4, workers=0, shard_size=4, **kw
    )


def test_second_run_on_a_folder_in_use_is_refused_and_a_dead_owner_is_taken_over(catalog, tiny_base, encoder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / FolderLock.NAME).write_text(f'{{"pid": {owner.pid}, "host": "{os.uname().nodename}"}}')
        with pytest.raises(FashionRetrievalError, match=rf"in use by another embed run \(pid {owner.pid}"):
            embed_catalog(_config(catalog, tiny_base, out), encoder=encoder, progress=False)
    finally:
        owner.kill()
        owner.wait()
    # the owner died without cleaning up: its lock is stale and the next run takes it over
    summary = embed_catalog(_config(catalog, tiny_base, out), encoder=encoder, progress=False)
    assert summary["status"] == "done" and summary["embedded"] == 12
    assert not (out / FolderLock.NAME).exists()


def test_overwrite_always_re_embeds(catalog, tiny_base, encoder, tmp_path):
    config = _config(catalog, tiny_base, tmp_path / "o")
    first = embed_catalog(config, encoder=encoder, progress=False)
    again = embed_catalog(replace(config, overwrite=True), encoder=encoder, progress=False)
    assert first["status"] == again["status"] == "done" and again["computed"] == 12
    assert embed_catalog(config, encoder=encoder, progress=False)["status"] == "already complete"


def test_a_replaced_image_is_not_silently_kept(catalog, tiny_base, encoder, tmp_path):
    config = _config(catalog, tiny_base, tmp_path / "r")
    embed_catalog(config, encoder=encoder, progress=False)
    before = load_embeddings(tmp_path / "r")
    path = before.metadata.at[3, "path"]
    Image.new("RGB", (32, 32), (0, 255, 0)).save(path)  # same name, new picture
    with pytest.raises(FashionRetrievalError, match="image files changed.*--overwrite"):
        embed_catalog(config, encoder=encoder, progress=False)
    embed_catalog(replace(config, overwrite=True), encoder=encoder, progress=False)
    after = load_embeddings(tmp_path / "r")
    np.testing.assert_allclose(after.image_embeddings[3], encoder.encode_image(path), atol=1e-5)
    assert not np.allclose(after.image_embeddings[3], before.image_embeddings[3], atol=1e-3)
    np.testing.assert_allclose(after.image_embeddings[4], before.image_embeddings[4], atol=1e-6)


def test_temp_files_of_a_crashed_write_are_removed(catalog, tiny_base, encoder, tmp_path):
    out = tmp_path / "t"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out / f".image_embeddings.npy.tmp-{dead.stdout.strip()}"
    stale.write_bytes(b"half a file")
    embed_catalog(_config(catalog, tiny_base, out), encoder=encoder, progress=False)
    assert not stale.exists()
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


def test_a_damaged_shard_is_computed_again(catalog, tiny_base, encoder, tmp_path, monkeypatch):
    reference = embed_catalog(_config(catalog, tiny_base, tmp_path / "ref"), encoder=encoder, progress=False)
    assert reference["embedded"] == 12
    out = tmp_path / "d"
    config = _config(catalog, tiny_base, out)
    # Leave a finished-looking run behind whose shard 1 holds the rows of shard 0 (a foreign/misplaced file).
    store = ShardStore(out)
    written = []
    original_write = ShardStore.write

    def write_and_stop(self, shard):
        original_write(self, shard)
        written.append(shard.index)
        if len(written) == 3:
            raise KeyboardInterrupt  # interrupted after three shards

    monkeypatch.setattr(ShardStore, "write", write_and_stop)
    with pytest.raises(KeyboardInterrupt):
        embed_catalog(config, encoder=encoder, progress=False)
    monkeypatch.setattr(ShardStore, "write", original_write)
    store.path(1).write_bytes(store.path(0).read_bytes())
    summary = embed_catalog(config, encoder=encoder, progress=False)
    assert summary["embedded"] == 12
    got, want = load_embeddings(out), load_embeddings(tmp_path / "ref")
    assert got.metadata["id"].tolist() == want.metadata["id"].tolist()
    np.testing.assert_allclose(got.image_embeddings, want.image_embeddings, atol=1e-6)
    np.testing.assert_allclose(got.text_embeddings, want.text_embeddings, atol=1e-6)
