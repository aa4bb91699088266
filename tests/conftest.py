from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach a hub: every model and dataset is built here or shipped as a fixture.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.tiny import make_tiny_llama  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Three same-architecture tiny Llamas (base + two donors) and a deeper, incompatible one."""
    root = tmp_path_factory.mktemp("tiny_models")
    return {
        "base": make_tiny_llama(root / "base", seed=0),
        "donor_a": make_tiny_llama(root / "donor_a", seed=1),
        "donor_b": make_tiny_llama(root / "donor_b", seed=2),
        "wide": make_tiny_llama(root / "wide", seed=3, hidden=48),
    }


@pytest.fixture(scope="module")
def eval_env(tmp_path_factory):
    """For a whole module: no demo datasets, no user data dir, generated YAML and datasets'
    cache under tmp (see ``isolated_eval_env``); yields the private HARNESS_HOME."""
    from tests.fixtures.evaluate_data import isolated_eval_env

    with isolated_eval_env(tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("hf_cache")) as home:
        yield home


@pytest.fixture
def isolated_home(tmp_path, monkeypatch) -> Path:
    """A private HARNESS_HOME so tests never touch the user's cache."""
    home = tmp_path / "harness_home"
    monkeypatch.setenv("HARNESS_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on 127.0.0.1 for the session (``tests/postgres.py``)."""
    from tests.postgres import running_server

    with running_server() as server:
        yield server
