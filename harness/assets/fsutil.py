"""Small filesystem helpers: publish a folder or a JSON file all at once, hash a file.

Everything the harness caches is built in a dot-named sibling and renamed into place, so an
interrupted run leaves either the old result or the new one, never half of one. Dot-named
folders are ignored by the demo-model registry and swept by the next ``prepare_assets``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_TMP_TAG = ".tmp-"
_OLD_TAG = ".old-"
_DIR_MODE = 0o755
_FILE_MODE = 0o644


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces ``final`` in one rename.

    The staging folder sits next to ``final`` (same filesystem, so the rename is atomic) and is
    removed if the block raises. An existing ``final`` is swapped out, then deleted.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}{_TMP_TAG}", dir=final.parent))
    try:
        stage.chmod(_DIR_MODE)  # mkdtemp makes it private; the cache is meant to be shared
        yield stage
        old: Path | None = None
        if final.exists():
            old = final.with_name(f".{final.name}{_OLD_TAG}{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
        os.replace(stage, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def sweep_stale(final: Path) -> None:
    """Remove staging/old siblings of ``final`` left by a killed run (call under the lock)."""
    final = Path(final)
    if not final.parent.is_dir():
        return
    for tag in (_TMP_TAG, _OLD_TAG):
        for debris in final.parent.glob(f".{final.name}{tag}*"):
            if debris.is_dir():
                shutil.rmtree(debris, ignore_errors=True)
            else:
                debris.unlink(missing_ok=True)


def atomic_write_json(path: Path, data: Any, default: Callable[[Any], Any] | None = None) -> None:
    """Write JSON to a temp file beside ``path``, fsync it and rename it over ``path`` (then
    fsync the folder): after a crash the file is either the old one or the new one, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{_TMP_TAG}", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True, default=default)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes it private
        os.replace(tmp, path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``, or ``{}`` if it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def make_readable(root: Path) -> None:
    """Give every file under ``root`` the cache's usual modes (some writers create 0600 files)."""
    for path in [Path(root), *Path(root).rglob("*")]:
        path.chmod(_DIR_MODE if path.is_dir() else _FILE_MODE)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class Reporter:
    """Progress lines to the log and, if given, to a rich console, tagged with a stage label."""

    def __init__(self, console: Any | None, label: str):
        self.console = console
        self.label = label

    def __call__(self, message: str) -> None:
        logging.getLogger("harness").info("%s %s", self.label, message)
        if self.console is not None:
            from rich.text import Text

            self.console.print(Text.assemble((f"{self.label} ", "bold cyan"), message), soft_wrap=True)


def progress_columns(unit: str | None = None, *extra: Any) -> tuple[Any, ...]:
    """The harness's progress-bar look: name, bar, done/total [unit], elapsed, ETA, extras."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *((TextColumn(unit),) if unit else ()),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        *extra,
    )


@contextlib.contextmanager
def exclusive_lock(path: Path, waiting_message: str, say: Callable[[str], None]) -> Iterator[None]:
    """Serialise concurrent runs (two `make search` at once) on a lock file; POSIX only."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover  (elsewhere concurrent runs are not serialised)
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(waiting_message)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
