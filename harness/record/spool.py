"""Pending leaderboard records: where a scored trial waits while the store is unavailable.

A trial that took minutes to build and score must not be lost because the DuckDB file is
locked by another process, or briefly unwritable, at the moment it is recorded. Its record
(every row it would write, already serialised) goes to a small JSON file instead, written
atomically and fsync'ed, and the next successful write of the same leaderboard inserts it.
Records are idempotent (a write replaces the trial's rows by id), so a record written twice
is written once.

Where: beside the database (``.<db name>.pending/``), else under ``$HARNESS_HOME/pending/``
when that folder cannot be written.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

from harness.assets.fsutil import atomic_write_json
from harness.errors import StoreUnavailable
from harness.paths import harness_home

FORMAT = 1


class Spool:
    """The pending records of one leaderboard file, oldest first."""

    def __init__(self, db: Path):
        db = Path(db).absolute()
        self.folders = (
            db.parent / f".{db.name}.pending",
            harness_home() / "pending" / hashlib.sha256(str(db).encode()).hexdigest()[:16],
        )

    def put(self, payload: dict[str, Any]) -> Path:
        """Keep one record durably; raise StoreUnavailable when no folder takes it.

        One file per record, named by time then record id: a trial's search scores and its
        held-out confirmation are two records, and both must wait (in order), not the last one.
        """
        trial_id = payload["trial"]["id"]
        record = {"format": FORMAT, "trial_id": trial_id, **payload}
        name = f"{time.time_ns():020d}-{payload['record_id']}.json"
        problems = []
        for folder in self.folders:
            try:
                atomic_write_json(folder / name, record, default=str)  # fsync'ed
                return folder / name
            except OSError as err:
                problems.append(f"{folder}: {err.strerror or err}")
        raise StoreUnavailable(
            f"the record of trial {trial_id} could not be kept anywhere ({'; '.join(problems)})",
            "free disk space or make the leaderboard's folder writable",
        )

    def pending(self) -> list[Path]:
        """Pending record files, oldest first (a reused trial's source is written before it)."""
        files = [p for folder in self.folders if folder.is_dir() for p in folder.glob("*.json")]
        return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))

    @staticmethod
    def read(path: Path) -> dict[str, Any] | None:
        """The record in ``path``; None when it is not one of ours (left for a person to inspect)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return None
        data.setdefault("record_id", uuid.uuid4().hex)  # spooled before records had ids
        return data

    @staticmethod
    def reject(path: Path) -> Path:
        """Move a record the store refuses out of the queue (kept for a person to inspect)."""
        target = path.with_suffix(".rejected")
        path.replace(target)
        return target

    @staticmethod
    def done(path: Path) -> None:
        path.unlink(missing_ok=True)
        try:
            path.parent.rmdir()  # only when it is empty: the folder is not left behind
        except OSError:
            pass
