"""What produced a number: library versions and the harness's own git commit."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

TRACKED = ("lm_eval", "transformers", "torch", "mergekit", "trl", "peft", "optuna", "duckdb")


@functools.cache
def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in TRACKED:
        try:
            versions[dist] = metadata.version(dist.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    from harness import __version__

    versions["harness"] = __version__
    return versions


@functools.cache
def harness_commit() -> str | None:
    """The checkout's commit (with '+dirty' when it has local changes); None outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}+dirty" if dirty else sha
