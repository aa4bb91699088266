"""Where the harness keeps its cache (demo assets, converted models)."""

from __future__ import annotations

import os
from pathlib import Path


def harness_home() -> Path:
    """``$HARNESS_HOME``, else ``$XDG_CACHE_HOME/merge-harness``, else ``~/.cache/merge-harness``."""
    if env := os.environ.get("HARNESS_HOME"):
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "merge-harness"


def user_data_dir() -> Path | None:
    """``$HARNESS_DATA_DIR``: the user's own benchmark data, consulted before demo assets."""
    env = os.environ.get("HARNESS_DATA_DIR")
    return Path(env).expanduser() if env else None


def nearest_existing(path: Path) -> Path:
    """``path`` itself or its closest ancestor that exists."""
    return next((p for p in (path, *path.parents) if p.exists()), Path("/"))


def check_output_file(path: Path, option: str) -> None:
    """Refuse, before any work and without leaving anything behind, an output file path that
    is a folder or whose folder cannot be written (probed with a real temporary file, so
    read-only mounts are caught even for root)."""
    import tempfile

    from harness.errors import HarnessError

    path = Path(path)
    if path.is_dir():
        raise HarnessError(f"{option} {path} is a folder", f"pass a file path, e.g. {path / 'index.html'}")
    folder = nearest_existing(path.parent)
    if not folder.is_dir():
        raise HarnessError(f"{option} {path}: {folder} is a file, not a folder", f"pass another {option}")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise HarnessError(
            f"{option} {path}: cannot write in {folder} ({err.strerror or err})", f"pass a writable {option}"
        ) from None
