"""The leaderboard database (DuckDB).

Tables:
- ``trials``: one row per evaluated model or search trial (recipe, status, timings,
  versions).
- ``scores(trial_id, task, metric, value, stderr, n_samples, num_fewshot, data_source)``:
  one row per lm-eval task (subtasks included) and metric, plus suite aggregates.
- ``suite_scores(trial_id, name, value, stderr, data_source)``: headline numbers (h4, mmlu,
  mmlu_macro, kmmlu, arc_challenge, a search space's own keys, ...); NULL means "no data", never 0.
- ``trial_params(trial_id, name, value, value_text)``: sampled search parameters.

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
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from harness.errors import HarnessError, StoreUnavailable
from harness.evaluate.results import Composition, EvalResult
from harness.evaluate.suites import AVERAGED, board_keys
from harness.paths import nearest_existing
from harness.record.log import RecordLog
from harness.record.spool import Spool
from harness.record.versions import harness_commit, library_versions

# (the schema version is the last migration's, see MIGRATIONS below)

# Which questions a row's numbers were measured on (harness.evaluate.questions): a study's
# "search" part (what its objective saw) and "heldout" part, or "all" (a plain eval: the split,
# or its first --limit). The leaderboard's columns and paired tests use the board partitions
# only: a number the search optimised on is never ranked.
BOARD_PARTITIONS = ("heldout", "all")

# Headline columns in leaderboard order, defined once with the suites.
SUITE_COLUMNS = tuple(board_keys())

# Version 4 as one idempotent script: files written before migrations were numbered (versions
# 1-3 upgraded themselves with IF NOT EXISTS on every connection) are brought to 4 by it.
_SCHEMA_4 = """
CREATE TABLE IF NOT EXISTS trials (
    id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    source VARCHAR NOT NULL,          -- eval | build | search
    status VARCHAR NOT NULL,          -- ok | failed | interrupted
    error VARCHAR,
    model_ref VARCHAR,                -- what was evaluated when there is no recipe
    recipe_yaml VARCHAR,
    recipe_hash VARCHAR,
    merge_method VARCHAR,
    align_method VARCHAR,
    study VARCHAR,
    trial_number INTEGER,
    objective DOUBLE,
    objective_stderr DOUBLE,          -- stderr of a weighted-mean objective (NULL for Pareto)
    objective_weights VARCHAR,        -- JSON {summary key: weight}, weights summing to 1 (NULL for Pareto)
    heldout_objective DOUBLE,         -- the objective on the held-out questions (confirmed trials)
    heldout_objective_stderr DOUBLE,
    fidelity INTEGER,                 -- search questions per task the trial reached (pruned: fewer)
    split_rule VARCHAR,               -- how the study divided search and held-out questions
    reused_from VARCHAR,              -- scores copied from this trial (same recipe hash)
    build_seconds DOUBLE,
    eval_seconds DOUBLE,
    num_parameters BIGINT,
    dtype VARCHAR,
    suites VARCHAR,
    eval_limit INTEGER,
    versions VARCHAR,                 -- JSON
    task_versions VARCHAR,            -- JSON
    harness_commit VARCHAR
);
CREATE TABLE IF NOT EXISTS scores (
    trial_id VARCHAR NOT NULL, task VARCHAR NOT NULL, metric VARCHAR NOT NULL,
    value DOUBLE, stderr DOUBLE, n_samples INTEGER, num_fewshot INTEGER,
    data_source VARCHAR, suite VARCHAR, aggregate BOOLEAN
);
CREATE TABLE IF NOT EXISTS suite_scores (
    trial_id VARCHAR NOT NULL, name VARCHAR NOT NULL, value DOUBLE, stderr DOUBLE, data_source VARCHAR
);
-- Files written by schema 1 (no objective_stderr, no stderr / data_source per headline)
-- gain the columns, NULL.
ALTER TABLE trials ADD COLUMN IF NOT EXISTS objective_stderr DOUBLE;
ALTER TABLE trials ADD COLUMN IF NOT EXISTS objective_weights VARCHAR;
ALTER TABLE suite_scores ADD COLUMN IF NOT EXISTS stderr DOUBLE;
ALTER TABLE suite_scores ADD COLUMN IF NOT EXISTS data_source VARCHAR;
ALTER TABLE trials ADD COLUMN IF NOT EXISTS heldout_objective DOUBLE;
ALTER TABLE trials ADD COLUMN IF NOT EXISTS heldout_objective_stderr DOUBLE;
ALTER TABLE trials ADD COLUMN IF NOT EXISTS fidelity INTEGER;
ALTER TABLE trials ADD COLUMN IF NOT EXISTS split_rule VARCHAR;
ALTER TABLE scores ADD COLUMN IF NOT EXISTS "partition" VARCHAR DEFAULT 'all';
ALTER TABLE suite_scores ADD COLUMN IF NOT EXISTS "partition" VARCHAR DEFAULT 'all';
CREATE TABLE IF NOT EXISTS align_steps (
    trial_id VARCHAR NOT NULL, step INTEGER NOT NULL, method VARCHAR, chunk VARCHAR,
    examples INTEGER, train_steps INTEGER, seconds DOUBLE, lora BOOLEAN,
    loss DOUBLE, rewards_chosen DOUBLE, rewards_rejected DOUBLE, rewards_margins DOUBLE,
    rewards_accuracies DOUBLE,
    metrics VARCHAR                   -- JSON: everything TRL logged for this step
);
CREATE TABLE IF NOT EXISTS trial_params (
    trial_id VARCHAR NOT NULL, name VARCHAR NOT NULL, value DOUBLE, value_text VARCHAR
);
-- Per-question results (lm-eval's log_samples): one row per trial, task, document and metric.
CREATE TABLE IF NOT EXISTS samples (
    trial_id VARCHAR NOT NULL, task VARCHAR NOT NULL, num_fewshot INTEGER, doc_id INTEGER NOT NULL,
    doc_hash VARCHAR, metric VARCHAR NOT NULL, value DOUBLE, split VARCHAR, "partition" VARCHAR
);
-- How each headline number is made from the samples: sum(weight * mean(value)) over its rows.
CREATE TABLE IF NOT EXISTS summary_parts (
    trial_id VARCHAR NOT NULL, name VARCHAR NOT NULL, task VARCHAR NOT NULL, metric VARCHAR NOT NULL,
    num_fewshot INTEGER, weight DOUBLE NOT NULL
);
ALTER TABLE summary_parts ADD COLUMN IF NOT EXISTS "partition" VARCHAR DEFAULT 'all';
"""

# The leaderboard's schema changes, each applied once, in order, in one transaction with its
# version number (``meta.schema_version``). A change is a new entry here, never an edit of an
# old one: a file at version N gets exactly the entries after N.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (4, _SCHEMA_4),
    # 5: which process wrote a row (host:pid): with many workers, where a trial ran.
    (5, "ALTER TABLE trials ADD COLUMN written_by VARCHAR"),
    # 6: how a score's log-likelihoods were computed: "shared-prefix" or "stock: <why>" (NULL:
    # written before it was recorded, or a row without data).
    (6, "ALTER TABLE scores ADD COLUMN IF NOT EXISTS scoring_path VARCHAR"),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

TRIAL_TABLES = ("trials", "scores", "suite_scores", "trial_params", "align_steps", "samples", "summary_parts")
SCORE_TABLES = ("scores", "suite_scores", "samples", "summary_parts")  # rows per partition
SCORES_WIDTH = 12  # the scores table's width at the current schema (see _write)
SAMPLE_COLUMNS = (
    "trial_id",
    "task",
    "num_fewshot",
    "doc_id",
    "doc_hash",
    "metric",
    "value",
    "split",
    "partition",
)


@dataclass
class TrialRecord:
    """Everything about one evaluated model except its scores."""

    name: str
    source: str
    status: str = "ok"
    error: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    model_ref: str | None = None
    recipe_yaml: str | None = None
    recipe_hash: str | None = None
    merge_method: str | None = None
    align_method: str | None = None
    study: str | None = None
    trial_number: int | None = None
    objective: float | None = None
    objective_stderr: float | None = None
    objective_weights: dict[str, float] | None = None
    heldout_objective: float | None = None
    heldout_objective_stderr: float | None = None
    fidelity: int | None = None
    split_rule: str | None = None
    reused_from: str | None = None
    written_by: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    build_seconds: float | None = None
    eval_seconds: float | None = None
    num_parameters: int | None = None
    dtype: str | None = None
    suites: str | None = None
    eval_limit: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    # One dict per alignment step: step, method, chunk, examples, train_steps, seconds, lora,
    # loss, rewards_chosen, rewards_rejected, rewards_margins, rewards_accuracies, metrics.
    align_steps: list[dict[str, Any]] = field(default_factory=list)


def scoring_paths(scores: list[dict[str, Any]]) -> list[str]:
    """How a trial's score rows with data were computed, most rows first: ``shared-prefix``,
    ``stock: <why>``, or ``not recorded`` (rows written before schema 6)."""
    counts = Counter(
        row.get("scoring_path") or "not recorded" for row in scores if row.get("value") is not None
    )
    return [path for path, _ in counts.most_common()]


def param_value(value: float | None, text: str | None) -> Any:
    """A stored search parameter: numbers are DOUBLE (whole ones come back as int), the
    rest JSON text (see ``Leaderboard.record``); NaN/inf -> None."""
    if value is not None:
        if not math.isfinite(value):
            return None
        return int(value) if float(value).is_integer() and abs(value) < 2**53 else value
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


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


def _dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The rows of an executed query as {column: value}."""
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _row(values: list[Any]) -> list[Any]:
    return [_clean(v) if isinstance(v, float) else v for v in values]


class Leaderboard:
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

    def _select(self, sql: str, args: list[Any]) -> list[dict[str, Any]]:
        """Rows of a read-only query as dicts ([] when the file or the table does not exist
        yet: a file written by an older schema has no samples until its next write)."""
        if not self.path.exists():
            return []
        with self.connect(read_only=True) as con:
            try:
                cur = con.execute(sql, args)
            except duckdb.CatalogException:
                return []
            return _dicts(cur)

    def snapshot(self, tables: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
        """Whole tables as rows, {table: ORDER BY clause}, read in one connection (a writer
        cannot come between two of them); tables the file does not have are left out."""
        if not self.path.exists():
            return {}
        out: dict[str, list[dict[str, Any]]] = {}
        with self.connect(read_only=True) as con:
            present = {
                r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
            }
            for table, order in tables.items():
                if table in present:
                    out[table] = _dicts(con.execute(f"SELECT * FROM {table} ORDER BY {order}"))
        return out

    def recorded(self, trial_ids: list[str]) -> set[str]:
        """Which of these row ids the board holds, or holds pending (spooled while locked)."""
        held = {r["id"] for r in self._rows_of("trials", ("id",), trial_ids, key="id")}
        wanted = set(trial_ids)
        for path in self.spool.pending():
            payload = self.spool.read(path)
            if payload is not None and payload["trial"]["id"] in wanted:
                held.add(payload["trial"]["id"])
        return held

    def fingerprint(self) -> tuple[Any, ...]:
        """A cheap token that changes whenever a row is recorded or completed (rows, scores,
        confirmations, status changes): what a live report compares to skip a rewrite."""
        with self.connect(read_only=True) as con:
            row = con.execute(
                "SELECT (SELECT count(*) FROM trials), (SELECT count(*) FROM scores), "
                "(SELECT count(heldout_objective) FROM trials), "
                "(SELECT count(*) FILTER (WHERE status = 'ok') FROM trials), (SELECT max(created_at) FROM trials)"
            ).fetchone()
        return (*(row or ()), len(self.spool.pending()))

    def trial(self, trial_id: str) -> dict[str, Any] | None:
        rows = self._select("SELECT * FROM trials WHERE id = ?", [trial_id])
        return rows[0] if rows else None

    def params(self, trial_id: str) -> dict[str, Any]:
        """Sampled search parameters of one trial (numbers as numbers, the rest as stored)."""
        rows = self._select("SELECT * FROM trial_params WHERE trial_id = ? ORDER BY name", [trial_id])
        return {r["name"]: param_value(r["value"], r["value_text"]) for r in rows}

    def align_steps(self, trial_id: str) -> list[dict[str, Any]]:
        return self._select("SELECT * FROM align_steps WHERE trial_id = ? ORDER BY step", [trial_id])

    def recipe_yaml(self, trial_id: str) -> str | None:
        with self.connect(read_only=True) as con:
            row = con.execute("SELECT recipe_yaml FROM trials WHERE id = ?", [trial_id]).fetchone()
        return row[0] if row else None

    def suite_summary(
        self, trial_id: str, column: str = "value", partition: str | None = None
    ) -> dict[str, float | None]:
        """Summary key -> value (or ``column="stderr"``: its stderr) of one trial, measured on
        ``partition`` (default: the board's, held-out or all)."""
        if column not in ("value", "stderr"):
            raise ValueError(column)
        wanted = [partition] if partition else list(BOARD_PARTITIONS)
        marks = ", ".join("?" * len(wanted))
        with self.connect(read_only=True) as con:
            return dict(
                con.execute(
                    f'SELECT name, {column} FROM suite_scores WHERE trial_id = ? AND "partition" IN ({marks})',
                    [trial_id, *wanted],
                ).fetchall()
            )

    def ranking(
        self, top: int | None = None, sort: str = "auto", study: str | None = None
    ) -> list[dict[str, Any]]:
        """Trials with one column per headline score, best first (failed trials last).

        Headline columns hold board numbers only (held-out or plain eval questions, never the
        search part a study optimised on). ``sort="auto"`` ranks by the benchmark average when
        rows have one, else by the held-out objective when rows have one, else by the search
        objective (e.g. a demo proxy suite that has no leaderboard benchmark). A pruned trial
        (status ``pruned``) ranks after every scored one, like a failed one.
        """
        if not self.path.exists():
            return []
        with self.connect(read_only=True) as con:
            records = _dicts(
                con.execute(
                    """SELECT id, name, status, error, source, study, trial_number, merge_method, align_method,
                              objective, heldout_objective, fidelity, reused_from, num_parameters, eval_limit,
                              created_at
                       FROM trials WHERE ? IS NULL OR study = ? ORDER BY created_at""",
                    [study, study],
                )
            )
            scores = con.execute(
                'SELECT trial_id, name, value FROM suite_scores WHERE "partition" IN (?, ?)',
                list(BOARD_PARTITIONS),
            ).fetchall()
        names = list(SUITE_COLUMNS) + sorted({n for _, n, _ in scores} - set(SUITE_COLUMNS))
        by_trial: dict[str, dict[str, float | None]] = {}
        for trial_id, name, value in scores:
            by_trial.setdefault(trial_id, {})[name] = value
        for rec in records:
            values = by_trial.get(rec["id"], {})
            rec.update({n: values.get(n) for n in names})
            present = [v for c in AVERAGED if (v := values.get(c)) is not None]
            rec["average"] = sum(present) / len(present) if present else None
            rec["created_at"] = rec["created_at"].isoformat(timespec="seconds")
        if sort == "auto":
            sort = next(
                (k for k in ("average", "heldout_objective") if any(r[k] is not None for r in records)),
                "objective",
            )
        if records and sort not in records[0]:
            raise HarnessError(f"cannot sort by {sort!r}", f"use one of: {', '.join(records[0])}")

        def key(rec: dict[str, Any]) -> tuple:
            value, searched = rec.get(sort), rec.get("objective")
            number = -value if isinstance(value, int | float) else 0
            # Rows without the ranking number (trials not confirmed on the held-out questions)
            # follow by what the search saw, best first, not in the order they were created.
            then = -searched if isinstance(searched, int | float) else float("inf")
            return (rec["status"] != "ok", value is None, number, then)

        records.sort(key=key)  # stable: ties keep creation order
        return records[:top] if top else records

    def scores(self, trial_id: str) -> list[dict[str, Any]]:
        return self._select(
            "SELECT * FROM scores WHERE trial_id = ? ORDER BY aggregate DESC, task, metric", [trial_id]
        )

    def samples(
        self, trial_ids: list[str], partitions: tuple[str, ...] = BOARD_PARTITIONS
    ) -> list[dict[str, Any]]:
        """Per-question rows of these trials on these partitions (see the ``samples`` table)."""
        columns = ("trial_id", "task", "metric", "num_fewshot", "doc_id", "doc_hash", "value")
        return self._rows_of("samples", columns, trial_ids, partitions=partitions)

    def compositions(
        self, trial_ids: list[str], partitions: tuple[str, ...] = BOARD_PARTITIONS
    ) -> dict[str, dict[str, Composition]]:
        """How each headline number of these trials is made from their samples: trial id ->
        summary key -> {(task, metric, shots): weight} (see ``summary_parts``)."""
        columns = ("trial_id", "name", "task", "metric", "num_fewshot", "weight")
        out: dict[str, dict[str, Composition]] = {t: {} for t in trial_ids}
        for r in self._rows_of("summary_parts", columns, trial_ids, partitions=partitions):
            out[r["trial_id"]].setdefault(r["name"], {})[(r["task"], r["metric"], r["num_fewshot"])] = r[
                "weight"
            ]
        return out

    def objective_weights(self, trial_ids: list[str]) -> dict[str, dict[str, float] | None]:
        """Trial id -> its objective's {summary key: weight} (None: Pareto, or not a search trial)."""
        rows = self._rows_of("trials", ("id", "objective_weights"), trial_ids, key="id")
        return {r["id"]: json.loads(r["objective_weights"]) if r["objective_weights"] else None for r in rows}

    def _rows_of(
        self,
        table: str,
        columns: tuple[str, ...],
        trial_ids: list[str],
        key: str = "trial_id",
        partitions: tuple[str, ...] | None = None,
    ) -> list[dict[str, Any]]:
        """Some columns of one table for these trials (on these partitions), in one query."""
        if not trial_ids:
            return []
        marks = ", ".join("?" * len(trial_ids))
        sql = f"SELECT {', '.join(columns)} FROM {table} WHERE {key} IN ({marks})"
        args = list(trial_ids)
        if partitions is not None:
            sql += f' AND "partition" IN ({", ".join("?" * len(partitions))})'
            args += list(partitions)
        return self._select(sql, args)

    def find_reference(
        self, model_ref: str, study: str, suites: str, limit: int | None, split_rule: str | None = None
    ) -> str | None:
        """Id of an ok row scoring this model for this study with the same suites, limit and split."""
        rows = self._select(
            """SELECT id FROM trials WHERE model_ref = ? AND study = ? AND suites = ? AND status = 'ok'
               AND eval_limit IS NOT DISTINCT FROM ? AND split_rule IS NOT DISTINCT FROM ?
               AND trial_number IS NULL LIMIT 1""",
            [model_ref, study, suites, limit, split_rule],
        )
        return rows[0]["id"] if rows else None

    def measurements(self, study: str, recipe_hash: str, source: str) -> list[str]:
        """Ids of the ok rows of this study measuring this recipe from ``source``, oldest first."""
        rows = self._select(
            """SELECT id FROM trials WHERE study = ? AND recipe_hash = ? AND source = ? AND status = 'ok'
               ORDER BY created_at""",
            [study, recipe_hash, source],
        )
        return [r["id"] for r in rows]

    def find_scored(
        self, recipe_hash: str, suites: str, limit: int | None, split_rule: str | None = None
    ) -> str | None:
        """Id of an ok trial with this recipe already scored on the same suites, limit and split
        (in full: a pruned trial's scores cover fewer questions). A row confirmed on the
        held-out questions comes first, copy or not (its copy then needs no confirmation of its
        own); then the original, oldest first."""
        if not self.path.exists():
            return None
        with self.connect(read_only=True) as con:
            row = con.execute(
                """SELECT id FROM trials WHERE recipe_hash = ? AND suites = ? AND status = 'ok'
                   AND eval_limit IS NOT DISTINCT FROM ? AND split_rule IS NOT DISTINCT FROM ?
                   ORDER BY heldout_objective IS NULL, reused_from IS NOT NULL, created_at LIMIT 1""",
                [recipe_hash, suites, limit, split_rule],
            ).fetchone()
        return row[0] if row else None
