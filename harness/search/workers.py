"""Who runs a trial, and whether it is still alive: crash-safety for journal-file studies.

Optuna's journal storage has no heartbeat, so a trial whose process was killed (``kill -9``,
OOM, a lost machine) stays RUNNING for good. Each trial therefore carries its worker's
identity (host, pid, process start time) as a user attribute; a later process on the same
host finds RUNNING trials whose worker is gone and closes them. The start time guards
against a recycled pid.

Two workers that draw the same recipe at the same time must not both build and score it:
:func:`recipe_claim` serialises them on a lock file per recipe (the kernel drops the lock
when its holder dies), and the second one then reuses the first one's scores.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness.assets.fsutil import exclusive_lock


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc); None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 counts from the one after the name


def worker_identity() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _start_time(pid)}


def is_alive(worker: dict[str, Any]) -> bool:
    """Whether the worker process recorded on a trial still runs (same host only)."""
    pid = worker.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's: alive
        pass
    recorded = worker.get("start")
    return recorded is None or _start_time(pid) in (None, recorded)


def is_local(worker: dict[str, Any]) -> bool:
    return worker.get("host") == socket.gethostname()


@contextlib.contextmanager
def recipe_claim(folder: Path, key: str, say: Callable[[str], None], message: str) -> Iterator[None]:
    """Hold the claim on one recipe key while it is built, scored and recorded."""
    name = hashlib.sha256(key.encode()).hexdigest()[:24]
    with exclusive_lock(folder / f"{name}.lock", message, say):
        yield
