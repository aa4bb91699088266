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
crash mid-write rolls back instead of leaving half a row.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from harness.errors import HarnessError
from harness.evaluate.results import EvalResult
from harness.record.versions import harness_commit, library_versions

SCHEMA_VERSION = 2  # 2: suite_scores.stderr / data_source

# Headline columns in leaderboard order; "average" is the mean of the benchmark ones present.
SUITE_COLUMNS = (
    "h4",
    "h4_partial",
    "mmlu",
    "mmlu_macro",
    "kmmlu",
    "arc_challenge",
    "hellaswag",
    "truthfulqa_mc2",
)
AVERAGED = ("arc_challenge", "hellaswag", "mmlu", "truthfulqa_mc2", "kmmlu")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
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
ALTER TABLE suite_scores ADD COLUMN IF NOT EXISTS stderr DOUBLE;
ALTER TABLE suite_scores ADD COLUMN IF NOT EXISTS data_source VARCHAR;
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
"""


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
    reused_from: str | None = None
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


class Leaderboard:
    """Handle on one DuckDB leaderboard file; every method opens and closes its connection."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- connection ---------------------------------------------------------------

    def check_writable(self) -> None:
        """Fail with one line, before any heavy work and without writing, if the file is unusable."""
        if self.path.is_dir():
            raise HarnessError(f"--db {self.path} is a directory", "pass a file path ending in .duckdb")
        if self.path.exists():
            with self.connect():  # opens it read-write: also catches a lock held by another writer
                return
        ancestor = next((p for p in self.path.parents if p.exists()), Path("/"))
        if not ancestor.is_dir() or not os.access(ancestor, os.W_OK):
            raise HarnessError(
                f"cannot create {self.path}: {ancestor} is not a writable folder",
                "pass a writable --db",
            )

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        if read_only and not self.path.exists():
            raise HarnessError(
                f"no leaderboard database at {self.path}",
                "run `harness eval` or `harness search` first, or pass --db",
            )
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as err:
            raise HarnessError(
                f"cannot open {self.path}: {str(err).splitlines()[0]}",
                "check the path and that no other process is writing it",
            ) from None
        try:
            if not read_only:
                con.execute(_SCHEMA)
                con.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                    [str(SCHEMA_VERSION)],
                )
            yield con
        finally:
            con.close()

    # -- writes ---------------------------------------------------------------------

    def record(self, trial: TrialRecord, result: EvalResult | None = None) -> str:
        """Insert (or replace) one trial and its scores in a single transaction."""
        if result is not None:
            trial.eval_seconds = trial.eval_seconds if trial.eval_seconds is not None else result.seconds
            trial.eval_limit = trial.eval_limit if trial.eval_limit is not None else result.limit
        row = asdict(trial)
        params = row.pop("params")
        align_steps = row.pop("align_steps")
        row["created_at"] = datetime.now(UTC).replace(tzinfo=None)
        row["versions"] = json.dumps(library_versions())
        row["task_versions"] = json.dumps(result.task_versions if result else {})
        row["harness_commit"] = harness_commit()
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                for table in ("trials", "scores", "suite_scores", "trial_params", "align_steps"):
                    key = "id" if table == "trials" else "trial_id"
                    con.execute(f"DELETE FROM {table} WHERE {key} = ?", [trial.id])
                cols = ", ".join(row)
                con.execute(
                    f"INSERT INTO trials ({cols}) VALUES ({', '.join('?' * len(row))})",
                    list(row.values()),
                )
                if result is not None:
                    con.executemany(
                        "INSERT INTO scores VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            [
                                trial.id,
                                s.task,
                                s.metric,
                                _clean(s.value),
                                _clean(s.stderr),
                                s.n_samples,
                                s.num_fewshot,
                                s.data_source,
                                s.suite,
                                s.aggregate,
                            ]
                            for s in result.scores
                        ],
                    )
                    con.executemany(
                        "INSERT INTO suite_scores VALUES (?, ?, ?, ?, ?)",
                        [
                            [
                                trial.id,
                                k,
                                _clean(v),
                                _clean(result.summary_stderr.get(k)),
                                result.summary_source.get(k),
                            ]
                            for k, v in result.summary.items()
                        ],
                    )
                if align_steps:
                    con.executemany(
                        "INSERT INTO align_steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [
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
                        ],
                    )
                if result is None and trial.reused_from:
                    self._copy_scores(con, trial.id, trial.reused_from)
                if params:
                    con.executemany(
                        "INSERT INTO trial_params VALUES (?, ?, ?, ?)",
                        [
                            [
                                trial.id,
                                k,
                                float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None,
                                None
                                if isinstance(v, int | float) and not isinstance(v, bool)
                                else json.dumps(v),
                            ]
                            for k, v in params.items()
                        ],
                    )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return trial.id

    # -- reads ------------------------------------------------------------------------

    def record_copy(self, trial: TrialRecord, source_id: str) -> str:
        """Record a trial whose recipe was already scored: copy that trial's scores.

        The new row points at the original through ``reused_from``; nothing is rebuilt
        or rescored.
        """
        trial.reused_from = source_id
        self.record(trial)
        return trial.id

    @staticmethod
    def _copy_scores(con: duckdb.DuckDBPyConnection, trial_id: str, source_id: str) -> None:
        con.execute(
            """INSERT INTO scores SELECT ?, task, metric, value, stderr, n_samples, num_fewshot,
               data_source, suite, aggregate FROM scores WHERE trial_id = ?""",
            [trial_id, source_id],
        )
        con.execute(
            """INSERT INTO suite_scores SELECT ?, name, value, stderr, data_source
               FROM suite_scores WHERE trial_id = ?""",
            [trial_id, source_id],
        )
        con.execute(
            """UPDATE trials SET num_parameters = src.num_parameters, dtype = src.dtype,
               task_versions = src.task_versions, eval_seconds = 0 FROM trials src
               WHERE trials.id = ? AND src.id = ?""",
            [trial_id, source_id],
        )

    def _select(self, sql: str, args: list[Any]) -> list[dict[str, Any]]:
        """Rows of a read-only query as dicts ([] when the file does not exist yet)."""
        if not self.path.exists():
            return []
        with self.connect(read_only=True) as con:
            cur = con.execute(sql, args)
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

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

    def suite_summary(self, trial_id: str, column: str = "value") -> dict[str, float | None]:
        """Summary key -> value (or ``column="stderr"``: its stderr) of one trial."""
        if column not in ("value", "stderr"):
            raise ValueError(column)
        with self.connect(read_only=True) as con:
            return dict(
                con.execute(
                    f"SELECT name, {column} FROM suite_scores WHERE trial_id = ?", [trial_id]
                ).fetchall()
            )

    def ranking(
        self, top: int | None = None, sort: str = "auto", study: str | None = None
    ) -> list[dict[str, Any]]:
        """Trials with one column per headline score, best first (failed trials last).

        ``sort="auto"`` ranks by the benchmark average when rows have one, else by the
        search objective (e.g. a demo proxy suite that has no leaderboard benchmark).
        """
        if not self.path.exists():
            return []
        with self.connect(read_only=True) as con:
            cur = con.execute(
                """SELECT id, name, status, error, source, study, trial_number, merge_method, align_method,
                          objective, reused_from, num_parameters, eval_limit, created_at
                   FROM trials WHERE ? IS NULL OR study = ? ORDER BY created_at""",
                [study, study],
            )
            columns = [d[0] for d in cur.description]
            records = [dict(zip(columns, r, strict=True)) for r in cur.fetchall()]
            scores = con.execute("SELECT trial_id, name, value FROM suite_scores").fetchall()
        names = list(SUITE_COLUMNS) + sorted({n for _, n, _ in scores} - set(SUITE_COLUMNS))
        by_trial: dict[str, dict[str, float | None]] = {}
        for trial_id, name, value in scores:
            by_trial.setdefault(trial_id, {})[name] = value
        for rec in records:
            values = by_trial.get(rec["id"], {})
            rec.update({n: values.get(n) for n in names})
            present = [values[c] for c in AVERAGED if values.get(c) is not None]
            rec["average"] = sum(present) / len(present) if present else None
            rec["created_at"] = rec["created_at"].isoformat(timespec="seconds")
        if sort == "auto":
            sort = "average" if any(r["average"] is not None for r in records) else "objective"
        if records and sort not in records[0]:
            raise HarnessError(f"cannot sort by {sort!r}", f"use one of: {', '.join(records[0])}")

        def key(rec: dict[str, Any]) -> tuple:
            value = rec.get(sort)
            number = -value if isinstance(value, int | float) else 0
            return (rec["status"] != "ok", value is None, number)

        records.sort(key=key)  # stable: ties keep creation order
        return records[:top] if top else records

    def scores(self, trial_id: str) -> list[dict[str, Any]]:
        return self._select(
            "SELECT * FROM scores WHERE trial_id = ? ORDER BY aggregate DESC, task, metric", [trial_id]
        )

    def find_reference(self, model_ref: str, study: str, suites: str, limit: int | None) -> str | None:
        """Id of an ok row scoring this model for this study with the same suites and limit."""
        rows = self._select(
            """SELECT id FROM trials WHERE model_ref = ? AND study = ? AND suites = ? AND status = 'ok'
               AND eval_limit IS NOT DISTINCT FROM ? AND trial_number IS NULL LIMIT 1""",
            [model_ref, study, suites, limit],
        )
        return rows[0]["id"] if rows else None

    def find_scored(self, recipe_hash: str, suites: str, limit: int | None) -> str | None:
        """Id of an ok trial with this recipe already scored on the same suites and limit."""
        if not self.path.exists():
            return None
        with self.connect(read_only=True) as con:
            row = con.execute(
                """SELECT id FROM trials WHERE recipe_hash = ? AND suites = ? AND status = 'ok'
                   AND eval_limit IS NOT DISTINCT FROM ? AND reused_from IS NULL
                   ORDER BY created_at LIMIT 1""",
                [recipe_hash, suites, limit],
            ).fetchone()
        return row[0] if row else None
