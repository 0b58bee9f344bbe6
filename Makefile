# Two commands on a fresh machine: `make demo` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of torch that lies on this machine's disk; GPU users: see README ("GPU").
TORCH_SPEC ?= torch==2.13.0
# Milvus Lite 3.x's gRPC server in a venv of its own (it needs pymilvus 3): the tests check that collections
# written through --uri keep their model record and HNSW search parameters on that engine too.
MILVUS3 ?= .venv-milvus3
# open_clip checkpoints are loaded by the open_clip library, which imports torchvision; PyPI's torchvision wheels are
# built for one torch each and none for the CPU torch above, so the open_clip tests run in a venv of their own with
# the torch/torchvision pair this machine keeps on disk (a CUDA build, ~5.6 GB, run on the CPU). OPEN_CLIP_TESTS=0
# skips them (they are then reported as skipped in the main run).
OPEN_CLIP ?= .venv-open-clip
OPEN_CLIP_TORCH ?= torch==2.14.1 torchvision==0.29.1
OPEN_CLIP_TESTS ?= 1
# pytest-xdist workers: 2 on the 2-core CI machine (each runs torch on one thread); more cores, more workers
TEST_WORKERS ?= 2
OPEN_CLIP_TEST_FILES = tests/model/test_families.py tests/model/test_backends.py tests/test_families_e2e.py \
	tests/train/test_train_families.py

.PHONY: install test test-open-clip demo lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test]"
	@if $(BIN)/pip list 2>/dev/null | grep -qi nvidia; then echo "CUDA packages came in; pin torch" >&2; exit 1; fi
	touch $@

$(MILVUS3)/bin/milvus-lite:
	$(PYTHON) -m venv $(MILVUS3)
	$(MILVUS3)/bin/pip install -q "milvus-lite==3.2.2" "pymilvus>=3,<4"

$(OPEN_CLIP)/.installed: pyproject.toml
	$(PYTHON) -m venv $(OPEN_CLIP)
	$(OPEN_CLIP)/bin/pip install -q --upgrade pip
	$(OPEN_CLIP)/bin/pip install -q $(OPEN_CLIP_TORCH)
	$(OPEN_CLIP)/bin/pip install -q -e ".[open_clip,export]" "pytest>=8" "httpx>=0.27"
	touch $@

install: $(VENV)/.installed $(MILVUS3)/bin/milvus-lite

test: install
	HF_HUB_OFFLINE=1 $(BIN)/ruff check src tests benchmarks examples
	HF_HUB_OFFLINE=1 FASHION_RETRIEVAL_MILVUS3=$(MILVUS3)/bin/milvus-lite $(BIN)/python -m pytest -q \
		-n $(TEST_WORKERS) --dist loadgroup --durations=15
	@if [ "$(OPEN_CLIP_TESTS)" = 1 ]; then $(MAKE) --no-print-directory test-open-clip; fi

test-open-clip: $(OPEN_CLIP)/.installed
	HF_HUB_OFFLINE=1 $(OPEN_CLIP)/bin/python -m pytest -q -m open_clip -p no:cacheprovider $(OPEN_CLIP_TEST_FILES)

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/fashion-retrieval demo --workdir demo_workdir

lint: install
	$(BIN)/ruff check src tests benchmarks examples

bench: install
	$(BIN)/pip install -q -e ".[bench]"
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.embed_throughput --dtypes fp32,bf16
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.store_search --rows 100000 --milvus3 $(MILVUS3)/bin/milvus-lite
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.serve_load
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.embed_engines

clean:
	rm -rf $(VENV) $(MILVUS3) $(OPEN_CLIP) demo_workdir .pytest_cache
