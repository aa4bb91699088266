"""The lock (issue 32): `make install` installs exactly `requirements.lock`, the lock agrees
with pyproject.toml's ranges and with the README's "Tested versions", and `make test-latest`
names what changed."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from scripts import lock

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(bool(os.environ.get("HARNESS_UNLOCKED")), reason="make test-latest: newest versions")
def test_the_installed_versions_are_the_locks() -> None:
    _, dists = lock.installed()  # importlib.metadata of this interpreter
    assert lock.differences(lock.read_lock(), dists) == [], lock.diff_table(
        lock.differences(lock.read_lock(), dists)
    )
    assert lock.PROJECT in dists and "torch" in dists  # present, chosen elsewhere


def test_every_declared_requirement_is_locked_inside_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    pins = lock.read_lock()
    for text in declared:
        requirement = Requirement(text)
        name = lock.normalise(requirement.name)
        if lock.UNLOCKED.match(name):
            continue
        assert name in pins, f"{name} is declared in pyproject.toml but not in requirements.lock"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {text!r}"
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for text in build:  # `make install` builds with the locked setuptools (no isolation)
        requirement = Requirement(text)
        assert requirement.specifier.contains(pins[lock.normalise(requirement.name)]), text


def test_the_readme_names_the_locked_versions() -> None:
    line = lock.tested_versions()
    assert f"transformers {lock.read_lock()['transformers']}" in line
    assert lock.readme_section((ROOT / "README.md").read_text()) == line, (
        "README's Tested versions disagree with requirements.lock: run python scripts/lock.py tested-versions --write"
    )


def test_the_readme_line_is_rewritten_from_the_lock(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{lock.TESTED_HEADING}\n\nPython 3.0, transformers 0.1.\n\n## After\n\ntext\n")
    line = lock.tested_versions({"transformers": "5.25.0", "pandas": "3.1.1"}, python="3.12.1")
    lock.write_readme(line, readme)
    text = readme.read_text()
    assert lock.readme_section(text) == line and text.endswith("## After\n\ntext\n")
    assert "transformers 5.25.0, pandas 3.1.1" in line and "0.1" not in text


def test_a_newer_install_is_named_package_by_package() -> None:
    locked = {"transformers": "5.23.0", "optuna": "5.0.0", "gone": "1.0", "same": "2.0"}
    newer = {
        "transformers": "5.25.0",
        "optuna": "5.0.0",
        "kernels": "0.19.1",
        "same": "2.0",
        "torch": "2.14.0",  # TORCH_SPEC's, never a difference
        "nvidia-cublas": "13.0",
        "merge-harness": "0.1.0",
    }
    rows = lock.differences(locked, newer)
    assert rows == [("gone", "1.0", None), ("kernels", None, "0.19.1"), ("transformers", "5.23.0", "5.25.0")]
    table = lock.diff_table(rows)
    assert table.startswith("3 packages differ")
    assert "| transformers | 5.23.0 | 5.25.0 |" in table and "| kernels | not locked | 0.19.1 |" in table
    assert lock.diff_table([]).startswith("The installed versions are the lock's")


def test_make_install_uses_the_lock_and_checks_it() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    assert "--constraint $(LOCK)" in recipe and "lock.py check" in recipe
    assert re.search(r"^test-latest:", makefile, re.M) and re.search(r"^lock:", makefile, re.M)


def test_the_gpu_carry_set_is_what_the_machine_lacks_and_the_tested_core_at_the_locks_versions() -> None:
    pins = {
        "transformers": "5.23.0",
        "lm-eval": "0.4.13",
        "pandas": "3.1.1",
        "scipy": "1.17.1",
        "plotly": "7.1.0",
        "pytest": "9.2.0",
    }
    # Without --have: the known list (pandas is there), never what no search imports.
    assert lock.gpu_carry(pins, None) == {"transformers": "5.23.0", "lm-eval": "0.4.13", "scipy": "1.17.1"}
    # With the machine's own list: what it has stays, except the tested core at another version.
    have = {"transformers": "5.17.0", "lm-eval": "0.4.13", "scipy": "1.15.0", "pandas": "2.2.0"}
    assert lock.gpu_carry(pins, have) == {"transformers": "5.23.0"}
