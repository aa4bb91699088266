"""The leaderboard database (DuckDB): connections, writes, the spool, and the queries.

Its tables and migrations are in :mod:`harness.record.schema`; a row as the stages hand it
over is a :class:`~harness.record.trial.TrialRecord`.

DuckDB allows one read-write process per file, so every write opens, writes one
transaction and closes: a reader (``harness leaderboard``) can look in between, and a
crash mid-write rolls back instead of leaving half a row. A connection that meets another
process's lock retries for a while; a record that still cannot be written is spooled
(:mod:`harness.record.spool`) and written later, so a scored trial is never lost to a lock.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from harness.errors import HarnessError, StoreUnavailable
from harness.evaluate.results import EvalResult
from harness.paths import nearest_existing
from harness.record.log import RecordLog
from harness.record.queries import BoardQueries
from harness.record.schema import (
    MIGRATIONS,
    SAMPLE_COLUMNS,
    SCHEMA_VERSION,
    SCORE_TABLES,
    SCORES_WIDTH,
    TRIAL_TABLES,
)
from harness.record.spool import Spool
from harness.record.trial import TrialRecord
from harness.record.versions import harness_commit, library_versions


def _clean(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


LOCK_WAIT_ENV = "HARNESS_DB_LOCK_WAIT"
DEFAULT_LOCK_WAIT = 60.0  # seconds a connection waits for another process's lock


def lock_wait() -> float:
    """How long to wait for the file lock (``$HARNESS_DB_LOCK_WAIT`` seconds, default 60)."""
    try:
        return max(0.0, float(os.environ.get(LOCK_WAIT_ENV, DEFAULT_LOCK_WAIT)))
    except ValueError:
        return DEFAULT_LOCK_WAIT


# DuckDB's message for a file without its header: another format, or one still being created.
_NOT_DUCKDB = "not a valid DuckDB database file"


def _is_lock_conflict(err: Exception) -> bool:
    text = str(err)
    return "Could not set lock" in text or "Conflicting lock" in text


@contextlib.contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One transaction: committed when the block ends, rolled back when it raises."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _row(values: list[Any]) -> list[Any]:
    return [_clean(v) if isinstance(v, float) else v for v in values]


class Leaderboard(BoardQueries):
    """Handle on one DuckDB leaderboard file; every method opens and closes its connection.

    DuckDB lets one process at a time hold the file (a writer excludes readers too), so a
    connection that meets another process's lock retries with backoff for up to
    :func:`lock_wait` seconds. A record that still cannot be written is spooled (see
    :mod:`harness.record.spool`) and written by the next successful write: a scored trial
    is never lost to a lock.
    """

    def __init__(
        self, path: str | Path, warn: Callable[[str], None] | None = None, log: RecordLog | None = None
    ):
        self.path = Path(path)
        self.spool = Spool(self.path)
        self.warn = warn or (lambda message: print(f"harness: warning: {message}", file=sys.stderr))
        # With a shared log (workers on several machines), records go to the log and this file
        # is materialised from it (see harness.record.log).
        self.log = log

    # -- connection ---------------------------------------------------------------

    def check_writable(self) -> None:
        """Fail with one line, before any heavy work and without writing, if the file is unusable.

        Bad paths are HarnessError (exit 2); a lock that outlasts the wait is StoreUnavailable.
        """
        if self.path.is_dir():
            raise HarnessError(f"--db {self.path} is a directory", "pass a file path ending in .duckdb")
        known_log = None
        if self.path.exists():
            if not os.access(self.path, os.R_OK | os.W_OK):
                raise HarnessError(f"--db {self.path} is not writable", "pass a writable --db")
            with self.connect() as con:  # opens it read-write: a foreign file or a lasting lock fails here
                known_log = self._meta(con, "log_id")
        else:
            ancestor = nearest_existing(self.path.parent)
            if not ancestor.is_dir() or not os.access(ancestor, os.W_OK):
                raise HarnessError(
                    f"cannot create {self.path}: {ancestor} is not a writable folder",
                    "pass a writable --db",
                )
        if self.log is not None:
            try:
                log_id = self.log.log_id
            except StoreUnavailable as err:
                raise HarnessError(
                    f"cannot reach the leaderboard log: {err}", "pass a reachable --storage postgresql:// URL"
                ) from None
            self._check_log_id(known_log, log_id)

    def _check_log_id(self, known: str | None, log_id: str) -> None:
        if known is not None and known != log_id:
            assert self.log is not None
            raise HarnessError(
                f"{self.path} is materialised from another leaderboard log than {self.log.where}",
                "pass a new --db for this storage (each log materialises its own file)",
            )

    @contextlib.contextmanager
    def connect(
        self, read_only: bool = False, wait: float | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection, retried with backoff while another process holds the file's lock."""
        if read_only and not self.path.exists():
            raise HarnessError(
                f"no leaderboard database at {self.path}",
                "run `harness eval` or `harness search` first, or pass --db",
            )
        if not read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:  # checked at start; gone or replaced since: a fault
                raise StoreUnavailable(
                    f"cannot create the folder of {self.path}: {err.strerror or err}"
                ) from None
        con = self._open(read_only, lock_wait() if wait is None else wait)
        try:
            if not read_only:
                self._migrate(con)
            yield con
        finally:
            con.close()

    def _migrate(self, con: duckdb.DuckDBPyConnection) -> None:
        """Apply the migrations this file has not had (a writer holds the file alone, so no
        other process can migrate it at the same time)."""
        con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        current = int(self._meta(con, "schema_version") or 0)
        if current > SCHEMA_VERSION:
            raise HarnessError(
                f"{self.path} has leaderboard schema version {current}, newer than this harness's "
                f"{SCHEMA_VERSION}",
                "upgrade merge-harness, or pass another --db",
            )
        for version, sql in MIGRATIONS:
            if version <= current:
                continue
            with _transaction(con):
                con.execute(sql)
                self._set_meta(con, "schema_version", version)

    @staticmethod
    def _meta(con: duckdb.DuckDBPyConnection, key: str) -> str | None:
        row = con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    @staticmethod
    def _set_meta(con: duckdb.DuckDBPyConnection, key: str, value: object) -> None:
        con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, str(value)])

    def _open(self, read_only: bool, wait: float) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + wait
        delay = 0.05
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as err:
                first = str(err).splitlines()[0]
                being_created = self._being_created(first)
                if _NOT_DUCKDB in first and (not being_created or time.monotonic() + delay > deadline):
                    raise HarnessError(
                        f"{self.path} is not a DuckDB database file",
                        "pass a leaderboard .duckdb file or a new path with --db",
                    ) from None
                if not (_is_lock_conflict(err) or being_created):
                    raise StoreUnavailable(f"cannot open {self.path}: {first}") from None
                if time.monotonic() + delay > deadline:
                    raise StoreUnavailable(
                        f"{self.path} stayed locked by another process for {wait:.0f} s ({first[:160]})",
                        f"stop the other process or raise {LOCK_WAIT_ENV}",
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _being_created(self, error: str) -> bool:
        """Whether another process is creating the file right now: DuckDB creates it empty,
        then writes its headers (three 4 KiB blocks) one by one, and a connection in between
        reads an empty file ("not a valid DuckDB database file") or a short one. That is worth
        waiting for, as a lock is; a file with other content is not a database."""
        try:
            size = self.path.stat().st_size
        except OSError:
            return False
        if _NOT_DUCKDB in error:
            return size == 0
        return "Could not read enough bytes" in error and size < 3 * 4096

    # -- writes ---------------------------------------------------------------------

    def record(self, trial: TrialRecord, result: EvalResult | None = None) -> str:
        """Insert (or replace) one trial and its scores in a single transaction.

        When the store cannot take it (the file locked past the wait, an I/O error, the shared
        log unreachable), the record is spooled and a warning says where; it is written by the
        next successful write. Only when it cannot be kept anywhere does this raise
        StoreUnavailable. With a shared log the record is appended there and this file synced.
        """
        payload = self._payload(trial, result)
        if self.log is not None:
            try:
                self.log.append(payload)
            except StoreUnavailable as err:
                self._spool(trial, payload, err)
            self._sync_after_write()
            return trial.id
        try:
            with self.connect() as con:
                self._flush_into(con)
                self._write(con, payload)
        except (StoreUnavailable, duckdb.IOException) as err:  # a store fault; a bad value still raises
            self._spool(trial, payload, err)
        return trial.id

    def _spool(self, trial: TrialRecord, payload: dict[str, Any], err: Exception) -> None:
        kept = self.spool.put(payload)
        where = self.log.where if self.log is not None else self.path
        self.warn(
            f"leaderboard unavailable ({str(err)[:200]}); the record of {trial.name} ({trial.id}) "
            f"is kept in {kept} and will be written by the next write to {where}"
        )

    def pending(self) -> int:
        """How many spooled records are waiting to be written."""
        return len(self.spool.pending())

    def flush_pending(self, wait: float | None = None) -> int:
        """Write spooled records now; returns how many are still pending (never raises for a
        store fault: they stay spooled)."""
        if not self.spool.pending():
            return 0
        try:
            if self.log is not None:
                for path, payload in self._spooled():
                    self.log.append(payload)
                    self.spool.done(path)
            else:
                with self.connect(wait=wait) as con:
                    self._flush_into(con)
        except (StoreUnavailable, duckdb.IOException) as err:
            self.warn(f"pending records not written yet ({str(err)[:200]})")
        return self.pending()

    def refresh(self) -> int:
        """What a reader calls first: spooled records written, the shared log's new records
        applied to this file. Never raises for a store fault (a warning says the file may be
        behind). Returns how many records are still pending."""
        pending = self.flush_pending()
        if self.log is not None:
            try:
                self.sync()
            except (StoreUnavailable, duckdb.IOException) as err:
                self.warn(f"{self.path} may be behind the leaderboard log ({str(err)[:200]})")
        return pending

    def sync(self, wait: float | None = None) -> int:
        """Apply the shared log's records this file has not had, in log order; returns how many.

        Idempotent: each record replaces its trial's rows, and the file's watermark
        (``meta.log_seq``) moves in the same transaction as the rows it covers.
        """
        if self.log is None:
            return 0
        log_id = self.log.log_id
        applied = 0
        with self.connect(wait=wait) as con:
            known = self._meta(con, "log_id")
            self._check_log_id(known, log_id)
            if known is None:
                self._set_meta(con, "log_id", log_id)
            for seq, payload in self.log.since(int(self._meta(con, "log_seq") or 0)):
                try:
                    self._write(con, payload, log_seq=seq)
                    applied += 1
                except duckdb.IOException:
                    raise
                except duckdb.Error as err:  # one bad record must not stop the board forever
                    self.warn(f"leaderboard log record {seq} cannot be written ({str(err)[:200]}); skipped")
                    self._set_meta(con, "log_seq", seq)
        return applied

    def _sync_after_write(self) -> None:
        """Bring this file up to date after an append, without waiting long for its lock: the
        record is safe in the log, and the next sync (any reader's) applies it."""
        try:
            self.sync(wait=min(5.0, lock_wait()))
        except (StoreUnavailable, duckdb.IOException):
            pass

    def _spooled(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        """The spooled records, oldest first; a file that is not one is left in place."""
        for path in self.spool.pending():
            payload = self.spool.read(path)
            if payload is None:
                self.warn(f"{path} is not a pending leaderboard record; left in place")
                continue
            yield path, payload

    def _flush_into(self, con: duckdb.DuckDBPyConnection) -> None:
        for path, payload in self._spooled():
            try:
                self._write(con, payload)
            except duckdb.IOException:
                raise
            except duckdb.Error as err:  # a record that can never be written must not block the rest
                self.warn(
                    f"{path} cannot be written ({str(err)[:200]}); moved aside to {self.spool.reject(path)}"
                )
                continue
            self.spool.done(path)

    def _payload(self, trial: TrialRecord, result: EvalResult | None) -> dict[str, Any]:
        """Every row this record writes, as JSON-ready lists (the spool keeps exactly this).

        A record with a result replaces the trial's rows of that result's partition only, so a
        held-out confirmation adds to the search scores; one without keeps the scores it has.
        """
        partition = result.partition if result is not None else None
        if result is not None:
            trial.eval_seconds = trial.eval_seconds if trial.eval_seconds is not None else result.seconds
            trial.eval_limit = trial.eval_limit if trial.eval_limit is not None else result.limit
        row = asdict(trial)
        params = row.pop("params")
        align_steps = row.pop("align_steps")
        row["created_at"] = datetime.now(UTC).replace(tzinfo=None).isoformat()
        row["objective_weights"] = json.dumps(trial.objective_weights) if trial.objective_weights else None
        row["versions"] = json.dumps(library_versions())
        row["task_versions"] = json.dumps(result.task_versions if result else {})
        row["harness_commit"] = harness_commit()
        scoring_path = result.scoring_path if result else None
        scores = [
            _row(
                [
                    trial.id,
                    s.task,
                    s.metric,
                    s.value,
                    s.stderr,
                    s.n_samples,
                    s.num_fewshot,
                    s.data_source,
                    s.suite,
                    s.aggregate,
                    partition,
                    scoring_path if s.value is not None else None,
                ]
            )
            for s in (result.scores if result else [])
        ]
        suite_scores = (
            [
                _row([trial.id, k, v, result.summary_stderr.get(k), result.summary_source.get(k), partition])
                for k, v in result.summary.items()
            ]
            if result is not None
            else []
        )
        steps = [
            [
                trial.id,
                st.get("step"),
                st.get("method"),
                st.get("chunk"),
                st.get("examples"),
                st.get("train_steps"),
                st.get("seconds"),
                st.get("lora"),
                *(
                    _clean(st.get(k))
                    for k in (
                        "loss",
                        "rewards_chosen",
                        "rewards_rejected",
                        "rewards_margins",
                        "rewards_accuracies",
                    )
                ),
                json.dumps(st.get("metrics") or {}),
            ]
            for st in align_steps
        ]
        param_rows = [
            [
                trial.id,
                k,
                float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None,
                None if isinstance(v, int | float) and not isinstance(v, bool) else json.dumps(v),
            ]
            for k, v in params.items()
        ]
        samples = [
            [trial.id, x.task, x.num_fewshot, x.doc_id, x.doc_hash, x.metric, x.value, x.split, x.partition]
            for x in (result.samples if result else [])
        ]
        parts = [
            [trial.id, name, task, metric, shots, weight, partition]
            for name, composition in (result.summary_parts.items() if result else [])
            for (task, metric, shots), weight in composition.items()
        ]
        return {
            "record_id": uuid.uuid4().hex,  # one per write: a spool file, a log entry
            "trial": row,
            "samples": samples,
            "summary_parts": parts,
            "scores": scores,
            "suite_scores": suite_scores,
            "align_steps": steps,
            "params": param_rows,
            "copy_scores_from": trial.reused_from if result is None else None,
            "partition": partition,
        }

    def _write(
        self, con: duckdb.DuckDBPyConnection, payload: dict[str, Any], log_seq: int | None = None
    ) -> None:
        """Write one record in one transaction (with ``log_seq``: and move the file's log
        watermark to it in the same transaction)."""
        row = payload["trial"]
        trial_id = row["id"]
        if "partition" not in payload:  # spooled by schema 3: rows without the partition column
            for table in ("scores", "suite_scores", "summary_parts"):
                payload[table] = [[*r, "all"] for r in payload.get(table) or []]
        # Spooled or logged before schema 6: score rows without the scoring path (unknown).
        payload["scores"] = [[*r, *[None] * (SCORES_WIDTH - len(r))] for r in payload["scores"]]
        with _transaction(con):
            partition = payload.get("partition", "all")  # spooled by schema 3: one partition
            copy = bool(payload.get("copy_scores_from"))
            for table in TRIAL_TABLES:
                if table in SCORE_TABLES and not copy:
                    if partition is not None:
                        con.execute(
                            f'DELETE FROM {table} WHERE trial_id = ? AND "partition" = ?',
                            [trial_id, partition],
                        )
                    continue
                key = "id" if table == "trials" else "trial_id"
                con.execute(f"DELETE FROM {table} WHERE {key} = ?", [trial_id])
            cols = ", ".join(row)
            con.execute(
                f"INSERT INTO trials ({cols}) VALUES ({', '.join('?' * len(row))})",
                [datetime.fromisoformat(v) if k == "created_at" else v for k, v in row.items()],
            )
            for table, rows in (
                ("scores", payload["scores"]),
                ("suite_scores", payload["suite_scores"]),
                ("align_steps", payload["align_steps"]),
                ("trial_params", payload["params"]),
                ("summary_parts", payload.get("summary_parts") or []),
            ):
                if rows:
                    marks = ", ".join("?" * len(rows[0]))
                    con.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
            if payload.get("samples"):
                self._insert_samples(con, payload["samples"])
            if payload.get("copy_scores_from"):
                self._copy_scores(con, trial_id, payload["copy_scores_from"])
            if log_seq is not None:
                self._set_meta(con, "log_seq", log_seq)

    @staticmethod
    def _insert_samples(con: duckdb.DuckDBPyConnection, rows: list[list[Any]]) -> None:
        """Bulk insert through a DataFrame: a 5-shot MMLU run is ~28k rows, which row-by-row
        executemany would take seconds to write."""
        import pandas as pd

        frame = pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS))
        con.register("harness_samples", frame)
        try:
            con.execute(f"INSERT INTO samples SELECT {', '.join(SAMPLE_COLUMNS)} FROM harness_samples")
        finally:
            con.unregister("harness_samples")

    def record_copy(self, trial: TrialRecord, source_id: str) -> str:
        """Record a trial whose recipe was already scored: copy that trial's scores.

        The new row points at the row it copies through ``reused_from``; nothing is rebuilt
        or rescored.
        """
        trial.reused_from = source_id
        self.record(trial)
        return trial.id

    @staticmethod
    def _copy_scores(con: duckdb.DuckDBPyConnection, trial_id: str, source_id: str) -> None:
        con.execute(
            """INSERT INTO scores SELECT ?, task, metric, value, stderr, n_samples, num_fewshot,
               data_source, suite, aggregate, "partition", scoring_path FROM scores WHERE trial_id = ?""",
            [trial_id, source_id],
        )
        con.execute(
            """INSERT INTO suite_scores SELECT ?, name, value, stderr, data_source, "partition"
               FROM suite_scores WHERE trial_id = ?""",
            [trial_id, source_id],
        )
        con.execute(
            """INSERT INTO summary_parts SELECT ?, name, task, metric, num_fewshot, weight, "partition"
               FROM summary_parts WHERE trial_id = ?""",
            [trial_id, source_id],
        )
        con.execute(  # the per-question rows too: a reused trial can be compared like any other
            f"""INSERT INTO samples SELECT ?, {", ".join(SAMPLE_COLUMNS[1:])}
                FROM samples WHERE trial_id = ?""",
            [trial_id, source_id],
        )
        con.execute(
            """UPDATE trials SET num_parameters = src.num_parameters, dtype = src.dtype,
               task_versions = src.task_versions, eval_seconds = 0, fidelity = src.fidelity,
               heldout_objective = src.heldout_objective,
               heldout_objective_stderr = src.heldout_objective_stderr FROM trials src
               WHERE trials.id = ? AND src.id = ?""",
            [trial_id, source_id],
        )

    # -- reads ------------------------------------------------------------------------
