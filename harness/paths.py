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
