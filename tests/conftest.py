from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Vectors compared with references to 1e-5 need fp32 whatever this CPU supports; tests of the automatic
# choice (tests/model/test_precision.py) unset this.
os.environ["FASHION_RETRIEVAL_DTYPE"] = "fp32"
# Decisions and exports cached per model (precision, backend, exported towers) go to a folder of this test run,
# never the user's ~/.cache (subprocesses inherit it).
if "FASHION_RETRIEVAL_TEST_CACHE" not in os.environ:
    import tempfile

    os.environ["FASHION_RETRIEVAL_TEST_CACHE"] = os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="fr-cache-")

# Under pytest-xdist each worker (and the servers and CLIs it starts) runs torch on one thread: two workers on
# two cores then run side by side instead of each stalling the other's OpenMP team.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

CAPTIONS = [
    "The lady wears a red dress with floral patterns.",
    "The man wears a blue denim jacket and black trousers.",
    "A striped cotton T-shirt with short sleeves.",
    "The woman wears long green trousers.",
    "A yellow hoodie.",
]


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny random BLIP retrieval model with its processor, in Hugging Face format."""
    # imported here, not at the top: xdist's controller loads this file too, and runs no test that needs torch
    from fashion_retrieval.model.tiny import build_tiny_blip

    return build_tiny_blip(tmp_path_factory.mktemp("tiny_blip"), CAPTIONS, seed=0)


@pytest.fixture(scope="session")
def tiny_captioning_base(tmp_path_factory, tiny_base) -> Path:
    """A tiny captioning BLIP (no text encoder, no projections), like blip-image-captioning-base."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipProcessor

    folder = tmp_path_factory.mktemp("tiny_captioning")
    config = BlipConfig.from_pretrained(tiny_base)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    BlipProcessor.from_pretrained(tiny_base).save_pretrained(folder)
    return folder


def pytest_collection_modifyitems(config, items) -> None:
    """Slow tests first (a stable sort): pytest-xdist hands them out before the many quick ones, so the last
    minutes are not one worker finishing a long test while the other idles."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def trained_demo(tmp_path_factory) -> Path:
    """The demo as `fashion-retrieval demo` builds it (its catalogue, its recipe, its trained model and index), once
    per session: the tests that need it share an xdist group, so one worker trains it."""
    from fashion_retrieval.demo import DemoConfig, run_demo

    work = tmp_path_factory.mktemp("trained_demo")
    run_demo(DemoConfig(workdir=str(work), serve=False), progress=False)
    return work
