# ggserve — the two commands: `make run` and `make test`. Everything else is a helper of theirs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# torch is installed first and pinned so that nothing resolves the multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
# llama-cpp-python builds from source once per machine; pip's wheel cache keeps the result,
# so later venvs (and CI on the same machine) install it in seconds.
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

STAMP := $(VENV)/.ggserve-installed

.PHONY: setup run test test-fast lint fmt bench soak eval models system-deps docker-cpu docker-cuda clean help

help:
	@echo "make run    set up and serve the embedded default model on $(HOST):$(PORT)"
	@echo "make test   set up and run the whole test suite"
	@echo "make lint   ruff, mypy, hadolint"
	@echo "make bench  benchmarks against peers (slow); python -m bench --help lists them all"
	@echo "make soak   mixed traffic with disconnects for SOAK_MINUTES (10) minutes (slow)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install $(TORCH_SPEC)
	$(BIN)/pip install -e '.[dev,convert]' $(TORCH_SPEC)
	touch $(STAMP)

models/.fetched: $(STAMP)
	$(BIN)/ggserve models fetch --dest models
	touch models/.fetched

setup: $(STAMP) models/.fetched

models: $(STAMP)
	$(BIN)/ggserve models fetch --dest models

run: setup
	@$(BIN)/ggserve keys init-env  # a development key in .env, unless keys are configured
	$(BIN)/ggserve serve --host $(HOST) --port $(PORT)

# redis-server (shared rate limits) and chromium (offline /docs check) come from Debian's
# packages; installed here when missing and we may, otherwise those tests say why they skip.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v haproxy >/dev/null || missing="$$missing haproxy"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "not installed:$$missing (their tests will be skipped)"; fi; \
	fi

test: setup system-deps
	$(BIN)/python -m pytest -q -ra --timeout=900

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy server cli convert artifacts flywheel bench
	$(BIN)/hadolint Dockerfile.cpu Dockerfile.cuda

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup
	$(BIN)/python -m bench all

# Not part of CI: 10 minutes of mixed traffic at 2x the slot count (see docs/reliability.md).
SOAK_MINUTES ?= 10
soak: setup
	flock /tmp/ggserve-heavy.lock $(BIN)/python -m bench soak --minutes $(SOAK_MINUTES)

eval: setup
	$(BIN)/python -m bench rag_eval

# Images (need a Docker engine; none runs on the development machines: see docs/deploy.md).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
docker-cpu:
	docker build -f Dockerfile.cpu -t ggserve:$(VERSION)-cpu .

docker-cuda:
	docker build -f Dockerfile.cuda -t ggserve:$(VERSION)-cuda .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
