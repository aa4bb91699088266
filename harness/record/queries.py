"""The leaderboard's read side: rows, scores, samples, rankings and the lookups a search makes
(a recipe already scored, a reference already measured). :class:`BoardQueries` is the base of
:class:`~harness.record.db.Leaderboard`, which supplies the connection (a read waits out a
writer's lock as a write does)."""

from __future__ import annotations

import contextlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import duckdb

from harness.errors import HarnessError
from harness.evaluate.results import Composition
from harness.evaluate.suites import AVERAGED
from harness.record.schema import BOARD_PARTITIONS, SUITE_COLUMNS
from harness.record.spool import Spool
from harness.record.trial import param_value


def _dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


class BoardQueries(ABC):
    """Queries over one leaderboard file (see the module docstring)."""

    path: Path
    spool: Spool

    @abstractmethod
    def connect(
        self, read_only: bool = False, wait: float | None = None
    ) -> contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]:
        """A connection to the file (the store's, with its lock handling)."""

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
