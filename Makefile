# One task list for people, hooks and CI. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PRESET ?= tiny
PYTEST_ARGS ?=
# make test: two pytest-xdist workers, each taking whole test files, longest first
# (tests/conftest.py LONGEST_FIRST). TEST_WORKERS= runs the suite in one process (pytest -s works).
TEST_WORKERS ?= -n 2 --dist loadfile --no-loadscope-reorder

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml docker/skip_feast_mlflow_plugin.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build (see README).
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# The same lock as the container images (docker/constraints.txt; `make constraints` renews it).
	$(BIN)/python -m pip install --quiet -c docker/constraints.txt -e ".[dev,cluster]"
	# Feast's MLflow plugin imports all of Feast (seconds of CPU) in every process that calls an MLflow
	# server; aicrush uses no Feast MLflow data source. The images do the same.
	$(BIN)/python docker/skip_feast_mlflow_plugin.py
	touch $@

.PHONY: install
install: $(BIN)/.installed ## Create .venv and install aicrush with its dev tools

.PHONY: demo
demo: install ## Install, then run the whole training pipeline locally on the default corpus (70 pinned PyPI sdists, fetched once)
	$(BIN)/aicrush run --preset $(PRESET) --summary .aicrush/runs/last-summary.json

.PHONY: test
test: install ## Install, then check the layers contract and run the test suite (offline; real servers on loopback)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest $(TEST_WORKERS) $(PYTEST_ARGS)

.PHONY: test-cluster
test-cluster: install ## The emulated cluster: the compiled rollout and training pipelines, each task an isolated process (minutes)
	$(BIN)/python -m pytest -m cluster tests/cluster $(PYTEST_ARGS)

.PHONY: test-fast
test-fast: install ## Tests without the slow end-to-end runs
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

.PHONY: lint
lint: install ## ruff lint and format check; the layers contract (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

.PHONY: format
format: install ## ruff fix and format
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

.PHONY: typecheck
typecheck: install ## mypy over the packages
	$(BIN)/mypy

.PHONY: compile
compile: install ## Compile the training pipeline to out/aicrush-training.yaml
	$(BIN)/aicrush compile --preset $(PRESET) --output out/aicrush-training.yaml

.PHONY: manifests
manifests: install ## Render the Kustomize overlays to out/manifests/
	mkdir -p out/manifests
	for o in manifests/overlays/*/; do $(BIN)/kubectl kustomize $$o > out/manifests/$$(basename $$o).yaml; done

.PHONY: constraints
constraints: install ## Regenerate docker/constraints.txt (the lock) from .venv
	$(BIN)/python docker/freeze_constraints.py

.PHONY: lint-docker
lint-docker: install ## hadolint every Dockerfile
	$(BIN)/hadolint docker/*.Dockerfile

REGISTRY ?= us-docker.pkg.dev/PROJECT_ID/aicrush
TAG ?= 0.1.0
.PHONY: images
images: ## Build and push the four images with docker buildx (needs a container engine)
	for rt in pipeline train serve monitor; do \
	  docker buildx build -f docker/$$rt.Dockerfile -t $(REGISTRY)/aicrush-$$rt:$(TAG) --push . || exit 1; \
	done

.PHONY: bench
bench: install ## Run every benchmark (minutes; prints figures and ratios)
	for b in benchmarks/bench_*.py; do echo "== $$b"; PYTHONPATH=. $(BIN)/python $$b || exit 1; done

.PHONY: clean
clean: ## Remove local state and build outputs (keeps .venv)
	rm -rf .aicrush out build *.egg-info .pytest_cache .mypy_cache .ruff_cache
