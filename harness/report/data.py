"""Everything the report shows, read from the DuckDB leaderboard file alone.

The result is plain dicts and lists (JSON-ready): the HTML template, the JSON export and
the CSV export are all views of the same :class:`ReportData`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError
from harness.evaluate.results import pooled_stderr
from harness.evaluate.suites import AVERAGED, BOARD_COLUMNS
from harness.record import Leaderboard, harness_commit, scoring_paths
from harness.record.trial import param_value

# (key, label, tooltip) in table order: the leaderboard's columns, defined with the suites.
SCORE_COLUMNS: tuple[tuple[str, str, str], ...] = tuple((c.key, c.label, c.help) for c in BOARD_COLUMNS)
OBJECTIVE_COLUMN = (
    "objective",
    "Objective (search)",
    "The study's objective on its search questions: what Optuna saw and selected on (pruned trials: "
    "at the fidelity they reached). Never ranked when the study has held-out questions.",
)
HELDOUT_COLUMN = (
    "heldout_objective",
    "Objective (held out)",
    "The study's objective on its held-out questions, which the search never saw: what the "
    "leaderboard ranks (confirmed trials and the reference models)",
)
TRACKED_VERSIONS = ("lm_eval", "transformers", "torch", "mergekit", "trl", "peft", "optuna")
SUBJECT_FAMILIES = (("mmlu", "MMLU"), ("kmmlu", "KMMLU"))
_SUBSTITUTE_MARKS = ("instead of", "(official:", "substitute data")


@dataclass
class ReportData:
    db: str
    generated_at: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    studies: list[str] = field(default_factory=list)
    merge_methods: list[str] = field(default_factory=list)
    align_methods: list[str] = field(default_factory=list)
    leader_id: str | None = None
    # Table columns (key, label, help): the leaderboard's own, then the search objective and
    # any other summary key the file holds (e.g. a demo's 0-shot proxy), so no row is all "—".
    columns: list[tuple[str, str, str]] = field(default_factory=lambda: list(SCORE_COLUMNS))
    rank_key: str = "average"  # what rank, ties and the default sort use
    tie_rule: str = ""  # how "tied with leader" was decided (the legend says it)
    # Leaderboard columns no row was evaluated on (e.g. a demo scored only on a proxy): the
    # HTML table leaves them out; the JSON and CSV keep every column, so their shape is stable.
    empty_columns: list[str] = field(default_factory=list)
    reproducibility: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


def is_substitute(source: str | None) -> bool:
    """Scores on other splits/few-shot sources than the official ones (offline demo data)."""
    text = (source or "").lower()
    return any(mark in text for mark in _SUBSTITUTE_MARKS)


def model_card(model_ref: str | None) -> str | None:
    """The file: URI of a row's model card (``README.md``) when its model is a local folder
    that has one: a ``harness build --suite`` folder, or ``harness eval`` of a built one."""
    if not model_ref:
        return None
    card = Path(model_ref).expanduser() / "README.md"
    try:
        return card.resolve().as_uri() if card.is_file() else None
    except (OSError, ValueError):
        return None


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) or math.isinf(value) else value


def finite(value: Any) -> Any:
    """Copy of a JSON-like value with NaN/inf replaced by None (JSON has no NaN; TRL logs it)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def _json_or_empty(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def headline_index() -> dict[str, tuple[str, str]]:
    """Summary key -> (scores.task, scores.metric) of the row that carries its stderr."""
    from harness.evaluate.suites import SUITES

    index: dict[str, tuple[str, str]] = {}
    for suite in SUITES.values():
        for part in suite.parts:
            metric = part.metric or ""
            for key, how in (part.headlines or {part.task: "lm_eval"}).items():
                index.setdefault(key, (part.task, metric if how == "lm_eval" else f"{metric}_macro"))
        if suite.total is not None:
            index.setdefault(suite.total.key, (suite.total.key, "mean"))
            index.setdefault(suite.total.partial_key, (suite.total.partial_key, "mean"))
    return index


def total_parts() -> dict[str, tuple[str, ...]]:
    """Total key (h4, h4_partial) -> the summary keys it averages."""
    from harness.evaluate.suites import SUITES

    parts: dict[str, tuple[str, ...]] = {}
    for suite in SUITES.values():
        if suite.total is not None:
            parts[suite.total.key] = suite.total.of
            parts[suite.total.partial_key] = suite.total.of
    return parts


def split_recipe(recipe_yaml: str | None) -> dict[str, str | None]:
    """The recipe as copyable pieces: the plain mergekit config and the alignment part."""
    if not recipe_yaml:
        return {"full": None, "mergekit": None, "align": None}
    try:
        data = yaml.safe_load(recipe_yaml)
    except yaml.YAMLError:
        return {"full": recipe_yaml, "mergekit": None, "align": None}
    if not isinstance(data, dict) or "merge" not in data:
        return {"full": recipe_yaml, "mergekit": recipe_yaml, "align": None}

    def dump(value: Any) -> str:
        return yaml.safe_dump(value, sort_keys=False, allow_unicode=True)

    align = data.get("align")
    return {
        "full": recipe_yaml,
        "mergekit": dump(data["merge"]),
        "align": dump({"align": align}) if align else None,
    }


# --------------------------------------------------------------------------- loading


def _group(rows: Iterable[dict[str, Any]], key: str = "trial_id") -> dict[str, list[dict]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row[key], []).append(row)
    return out


def load_report_data(source: Path | Leaderboard) -> ReportData:
    """Read every table of the leaderboard (one consistent snapshot) and assemble the report rows."""
    board = source if isinstance(source, Leaderboard) else Leaderboard(source)
    data = ReportData(db=str(board.path), generated_at=datetime.now(UTC).isoformat(timespec="seconds"))
    snapshot = board.snapshot(
        {
            "trials": "id",
            "scores": "trial_id, aggregate DESC, task, metric",
            "suite_scores": "trial_id, name",
            "trial_params": "trial_id, name",
            "align_steps": "trial_id, step",
        }
    )
    if "trials" not in snapshot:  # a file no harness command has written to yet
        data.reproducibility = _reproducibility([])
        return data
    trials = {r["id"]: r for r in snapshot["trials"]}

    def table(name: str) -> dict[str, list[dict[str, Any]]]:
        return _group(snapshot.get(name, []))

    # The board's numbers (held-out or plain eval questions) fill the columns; a study's
    # search numbers are only its "search" objective and the overfit check.
    scores, _ = _by_partition(table("scores"))
    suite_scores, search_scores = _by_partition(table("suite_scores"))
    params = table("trial_params")
    steps = table("align_steps")
    # Same order as `harness leaderboard` (ok first, best average first, or best objective
    # when no row has a leaderboard benchmark), with a stable tie-break (older first, then
    # name) so equal scores (reused rows) never swap places.
    ranking = [r for r in board.ranking() if r["id"] in trials]  # rows written since the snapshot wait
    data.rank_key = next(
        (k for k in ("average", "heldout_objective") if any(r[k] is not None for r in ranking)), "objective"
    )
    ranking.sort(
        key=lambda r: (
            r["status"] != "ok",
            r[data.rank_key] is None,
            -(r[data.rank_key] or 0.0),
            r["created_at"],
            r["name"],
        ),
    )
    data.columns = _columns(trials.values(), suite_scores)

    index, totals = headline_index(), total_parts()
    names = {tid: t["name"] for tid, t in trials.items()}
    rank = 0
    for order, row in enumerate(ranking):
        trial = trials[row["id"]]
        status = trial["status"]
        ranked = status == "ok" and (
            data.rank_key != "heldout_objective" or row["heldout_objective"] is not None
        )
        if ranked:
            rank += 1
        data.trials.append(
            _trial(
                trial,
                order=order,
                rank=rank if ranked else None,
                scores=scores.get(trial["id"], []),
                summary_rows=suite_scores.get(trial["id"], []),
                search_rows=search_scores.get(trial["id"], []),
                extra=[key for key, _, _ in data.columns[len(SCORE_COLUMNS) :]],
                params=params.get(trial["id"], []),
                steps=steps.get(trial["id"], []),
                index=index,
                totals=totals,
                names=names,
            )
        )
    _mark_ties(data, board)
    data.empty_columns = [
        key
        for key, _, _ in SCORE_COLUMNS
        if data.trials and all(t["cells"][key]["state"] == "missing" for t in data.trials)
    ]
    data.studies = sorted({t["study"] for t in data.trials if t["study"]})
    _mark_overfit(data)
    data.merge_methods = sorted({t["merge_method"] for t in data.trials if t["merge_method"]})
    data.align_methods = sorted({t["align_method"] for t in data.trials if t["align_method"]})
    data.reproducibility = _reproducibility(list(trials.values()))
    return data


def _cell(
    key: str,
    summary: dict[str, float | None],
    by_task: dict[tuple[str, str], dict[str, Any]],
    index: dict[str, tuple[str, str]],
    totals: dict[str, tuple[str, ...]],
) -> dict[str, Any]:
    """One headline score: value, stderr, where its data came from, and its state."""
    row = by_task.get(index.get(key, (key, "")))
    if key not in summary:
        # Only a suite's own headline counts: a task scored under other settings (e.g. a
        # 0-shot proxy of ARC-Challenge) must not fill the 25-shot H4 column.
        return {"state": "missing", "value": None, "stderr": None, "source": "not evaluated"}
    value = summary.get(key)
    if value is None and row is not None:
        value = _num(row["value"])
    source = (row or {}).get("data_source") or ""
    stderr = _num((row or {}).get("stderr"))
    if stderr is None and key in totals:
        have = [k for k in totals[key] if summary.get(k) is not None]
        parts = [_cell(k, summary, by_task, index, {}) for k in have]
        stderr = pooled_stderr([p["stderr"] for p in parts]) if value is not None else None
    if value is None:
        return {"state": "no data", "value": None, "stderr": None, "source": source or "no data"}
    return {
        "state": "substitute" if is_substitute(source) else "ok",
        "value": value,
        "stderr": stderr,
        "source": source,
    }


def _trial(
    trial: dict[str, Any],
    *,
    order: int,
    rank: int | None,
    scores: list[dict[str, Any]],
    summary_rows: list[dict[str, Any]],
    extra: list[str],
    params: list[dict[str, Any]],
    steps: list[dict[str, Any]],
    index: dict[str, tuple[str, str]],
    totals: dict[str, tuple[str, ...]],
    names: dict[str, str],
    search_rows: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    summary = {r["name"]: _num(r["value"]) for r in summary_rows}
    by_task: dict[tuple[str, str], dict[str, Any]] = {}
    for s in scores:
        by_task.setdefault((s["task"], s["metric"]), s)
    cells = {
        key: _cell(key, summary, by_task, index, totals) for key, _, _ in SCORE_COLUMNS if key != "average"
    }
    cells["h4_partial"] = _cell("h4_partial", summary, by_task, index, totals)
    cells["average"] = _average(summary, by_task, index, totals)
    stored = {r["name"]: r for r in summary_rows}
    for key in extra:
        if key in ("objective", "heldout_objective"):
            cells[key] = _objective_cell(trial, key)
        else:
            cells[key] = _stored_cell(trial, stored.get(key))
    reused = trial.get("reused_from")
    return {
        "id": trial["id"],
        "order": order,
        "rank": rank,
        "name": trial["name"],
        "status": trial["status"],
        "error": trial.get("error"),
        "source": trial.get("source"),
        "study": trial.get("study"),
        "trial_number": trial.get("trial_number"),
        "merge_method": trial.get("merge_method"),
        "align_method": trial.get("align_method"),
        "objective": _num(trial.get("objective")),
        "objective_stderr": _num(trial.get("objective_stderr")),
        "heldout_objective": _num(trial.get("heldout_objective")),
        "heldout_objective_stderr": _num(trial.get("heldout_objective_stderr")),
        "fidelity": trial.get("fidelity"),
        "split_rule": trial.get("split_rule"),
        "search_summary": {r["name"]: _num(r["value"]) for r in search_rows or []},
        "overfit": None,  # set by _mark_overfit: the search-minus-held-out gap, when flagged
        "model_ref": trial.get("model_ref"),
        "card": model_card(trial.get("model_ref")),
        "reused_from": reused,
        "reused_from_name": names.get(reused) if reused else None,
        "num_parameters": trial.get("num_parameters"),
        "dtype": trial.get("dtype"),
        "scoring_paths": scoring_paths(scores),
        "suites": trial.get("suites"),
        "eval_limit": trial.get("eval_limit"),
        "recipe_hash": trial.get("recipe_hash"),
        "created_at": trial["created_at"].isoformat(timespec="seconds") if trial.get("created_at") else None,
        "build_seconds": _num(trial.get("build_seconds")),
        "eval_seconds": _num(trial.get("eval_seconds")),
        "align_seconds": sum(_num(s.get("seconds")) or 0.0 for s in steps) or None,
        "harness_commit": trial.get("harness_commit"),
        "versions": _json_or_empty(trial.get("versions")),
        "task_versions": _json_or_empty(trial.get("task_versions")),
        "cells": cells,
        "summary": summary,
        "recipe": split_recipe(trial.get("recipe_yaml")),
        "params": {p["name"]: param_value(p["value"], p["value_text"]) for p in params},
        "subjects": _subjects(scores),
        "scores": [_score_row(s) for s in scores],
        "align_steps": [_step_row(s) for s in steps],
        "tie": None,  # set by _mark_ties: "leader" | "tied" | None
        "tie_note": None,
        "versus": [],  # this row − the leader and the study's references, paired
    }


def _columns(
    trials: Iterable[dict[str, Any]], suite_scores: dict[str, list[dict[str, Any]]]
) -> list[tuple[str, str, str]]:
    """The fixed leaderboard columns, then the objective and other stored summary keys."""
    fixed = {key for key, _, _ in SCORE_COLUMNS} | {"h4_partial"}
    columns = list(SCORE_COLUMNS)
    trials = list(trials)
    if any(t.get("heldout_objective") is not None for t in trials):
        columns.append(HELDOUT_COLUMN)
    if any(t.get("objective") is not None for t in trials):
        columns.append(OBJECTIVE_COLUMN)
    sources: dict[str, str] = {}
    for rows in suite_scores.values():
        for r in rows:
            if r["name"] not in fixed and r["name"] not in sources:
                sources[r["name"]] = r.get("data_source") or ""
    # A suite's total (its source reads "mean of ...") before the parts it averages.
    for key in sorted(sources, key=lambda k: (not sources[k].startswith(("mean of", "partial:")), k)):
        columns.append((key, key, sources[key] or "a summary key of the trial's suites"))
    return columns


def _stored_cell(trial: dict[str, Any], row: dict[str, Any] | None) -> dict[str, Any]:
    """A summary key the leaderboard has no column of its own for, as stored by the run."""
    if row is None:
        return {"state": "missing", "value": None, "stderr": None, "source": "not evaluated"}
    source = row.get("data_source") or ""
    value = _num(row["value"])
    if value is None:
        return {"state": "no data", "value": None, "stderr": None, "source": source or "no data"}
    state = "substitute" if is_substitute(source) else "ok"
    return {"state": state, "value": value, "stderr": _num(row.get("stderr")), "source": source}


def _objective_cell(trial: dict[str, Any], key: str = "objective") -> dict[str, Any]:
    value = _num(trial.get(key))
    if value is None:
        source = "not confirmed on held-out questions" if key == "heldout_objective" else "no objective"
        return {"state": "missing", "value": None, "stderr": None, "source": source}
    study = trial.get("study") or "?"
    where = "held-out" if key == "heldout_objective" else "search"
    source = f"objective of study {study} on its {where} questions"
    if key == "objective" and trial.get("status") == "pruned":
        source += f" (pruned at {trial.get('fidelity')} questions per task)"
    return {"state": "ok", "value": value, "stderr": _num(trial.get(f"{key}_stderr")), "source": source}


def _by_partition(
    grouped: dict[str, list[dict[str, Any]]],
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """Rows per trial split into the board's partitions and the search one."""
    board: dict[str, list[dict[str, Any]]] = {}
    search: dict[str, list[dict[str, Any]]] = {}
    for trial_id, rows in grouped.items():
        for row in rows:
            side = search if row.get("partition") == "search" else board
            side.setdefault(trial_id, []).append(row)
    return board, search


OVERFIT_Z = 2.0  # how many combined stderrs of excess gap flag a row


def _mark_overfit(data: ReportData) -> None:
    """Flag rows whose search objective beats their held-out one by more than noise allows.

    Search and held-out are different questions, so the parts may differ in difficulty: the
    expected gap is the study's reference models' mean gap (they were not selected on
    anything). A row is flagged when its gap exceeds that by more than ``OVERFIT_Z`` combined
    standard errors (search and held-out are independent samples of questions).
    """
    for study in data.studies:
        rows = [
            t
            for t in data.trials
            if t["study"] == study and t["objective"] is not None and t["heldout_objective"] is not None
        ]
        references = [t for t in rows if t["trial_number"] is None]
        expected = (
            sum(t["objective"] - t["heldout_objective"] for t in references) / len(references)
            if references
            else 0.0
        )
        basis = (
            f"the references' mean gap {expected:+.4f}"
            if references
            else "no reference models: expected gap 0"
        )
        for t in rows:
            gap = t["objective"] - t["heldout_objective"]
            noise = math.sqrt(
                (t["objective_stderr"] or 0.0) ** 2 + (t["heldout_objective_stderr"] or 0.0) ** 2
            )
            flagged = t["trial_number"] is not None and noise > 0 and gap - expected > OVERFIT_Z * noise
            t["overfit"] = {
                "gap": gap,
                "expected": expected,
                "noise": noise,
                "flagged": flagged,
                "note": f"search − held-out = {gap:+.4f} ({basis}; ±{OVERFIT_Z:g} × {noise:.4f} allowed)",
            }


def _average(
    summary: dict[str, float | None],
    by_task: dict[tuple[str, str], dict[str, Any]],
    index: dict[str, tuple[str, str]],
    totals: dict[str, tuple[str, ...]],
) -> dict[str, Any]:
    """Same mean as ``Leaderboard.ranking`` (benchmarks with data), with a pooled stderr."""
    parts = {k: _cell(k, summary, by_task, index, totals) for k in AVERAGED}
    have = {k: c for k, c in parts.items() if c["value"] is not None}
    if not have:
        state = "missing" if all(c["state"] == "missing" for c in parts.values()) else "no data"
        return {"state": state, "value": None, "stderr": None, "source": "no benchmark has data"}
    missing = [k for k, c in parts.items() if c["state"] == "no data"]
    substitutes = [k for k, c in have.items() if c["state"] == "substitute"]
    source = f"mean of {', '.join(have)}"
    if missing:
        source += f"; no data for {', '.join(missing)}"
    if substitutes:
        source += f"; substitute data for {', '.join(substitutes)}"
    return {
        "state": "substitute" if substitutes else "ok",
        "value": sum(c["value"] for c in have.values()) / len(have),
        "stderr": pooled_stderr([c["stderr"] for c in have.values()]),
        "source": source,
    }


ALPHA = 0.05  # significance level of the paired tie rule


def _mark_ties(data: ReportData, board: Leaderboard) -> None:
    """Leader, and rows the leader is not shown to beat on the ranking metric.

    The rule is a paired test on the questions both rows were scored on (see
    :mod:`harness.compare.stats`), Holm-adjusted over the rows compared with the leader. A row
    without per-question results (recorded before they were) falls back to overlapping
    stderrs, and says so. Each row also gets its paired difference to the leader and to its
    study's reference models (the base and the donors: does the merge beat its parts?).
    """
    from harness.compare import TrialData, holm

    key = data.rank_key
    ranked = [
        t
        for t in data.trials
        if t["rank"] is not None and (t["cells"].get(key) or {}).get("value") is not None
    ]
    if not ranked:
        return
    leader = ranked[0]
    data.leader_id = leader["id"]
    leader["tie"] = "leader"
    references = [t for t in data.trials if t["status"] == "ok" and t["study"] and t["trial_number"] is None]
    paired = TrialData(board, [t["id"] for t in ranked + references])
    tests = {}
    for row in ranked[1:]:
        comparison = paired.compare(leader["id"], row["id"], key)
        if comparison.test is not None:
            tests[row["id"]] = comparison
    adjusted = dict(zip(tests, holm([c.test.p_value for c in tests.values()]), strict=True))  # type: ignore[union-attr]
    data.tie_rule = (
        f"not significantly different from the leader on {key} in a paired test on the questions both "
        f"were scored on (exact McNemar for one 0/1 task, else a sign-flip randomization test), "
        f"Holm-adjusted over the {len(tests)} rows compared, α = {ALPHA}"
        + (
            "; rows without per-question results: |Δ| within the combined stderr"
            if len(tests) < len(ranked) - 1
            else ""
        )
    )
    lead = leader["cells"][key]
    for row in ranked[1:]:
        tested = tests.get(row["id"])
        if tested is not None and tested.test is not None:
            t = tested.test
            if adjusted[row["id"]] >= ALPHA:
                row["tie"] = "tied"
            row["tie_note"] = (
                f"{key}: leader − this = {t.difference * 100:+.2f} points "
                f"[{t.ci_low * 100:+.2f}, {t.ci_high * 100:+.2f}], p = {t.p_value:.3g} "
                f"(Holm {adjusted[row['id']]:.3g}; {t.test}, {t.questions} questions)"
            )
            continue
        cell = row["cells"][key]
        if lead["stderr"] is None or cell["stderr"] is None:
            continue  # no stderr: we cannot say it is tied, so we don't mark it
        gap = abs(lead["value"] - cell["value"])
        bound = math.sqrt(lead["stderr"] ** 2 + cell["stderr"] ** 2)
        if gap <= bound:
            row["tie"] = "tied"
            row["tie_note"] = (
                f"{key} within stderr of the leader (unpaired: no per-question results): "
                f"|Δ| = {gap * 100:.2f} ≤ {bound * 100:.2f}"
            )
    for row in data.trials:
        if row["status"] != "ok":
            continue
        versus = []
        if row is not leader and row["id"] in tests:  # already tested: leader − row, turned round
            test = tests[row["id"]].test
            versus.append(_paired_row(leader, test, adjusted[row["id"]], turned=True))
        for other in references:
            if other["study"] == row["study"] and other is not row:
                comparison = paired.compare(row["id"], other["id"], key)
                if comparison.test is not None:
                    versus.append(_paired_row(other, comparison.test))
        row["versus"] = versus


def _paired_row(
    other: dict[str, Any], test: Any, holm_p: float | None = None, turned: bool = False
) -> dict[str, Any]:
    """One paired difference, this row − ``other`` (``turned``: the test was other − this)."""
    sign = -1.0 if turned else 1.0
    low, high = sorted((sign * test.ci_low, sign * test.ci_high))
    return {
        "id": other["id"],
        "name": other["name"],
        "difference": sign * test.difference,
        "ci_low": low,
        "ci_high": high,
        "p_value": test.p_value,
        "holm_p": holm_p,
        "test": test.test,
        "questions": test.questions,
        "discordant": test.discordant,
    }


def _subjects(scores: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-subject rows of MMLU and KMMLU (leaf tasks, headline metric ``acc``)."""
    out = []
    for prefix, label in SUBJECT_FAMILIES:
        rows = [
            {
                "subject": s["task"].removeprefix(f"{prefix}_"),
                "task": s["task"],
                "value": _num(s["value"]),
                "stderr": _num(s["stderr"]),
                "n_samples": s["n_samples"],
                "source": s["data_source"] or "",
                "substitute": is_substitute(s["data_source"]),
            }
            for s in scores
            if s["task"].startswith(f"{prefix}_") and not s["aggregate"] and s["metric"] == "acc"
        ]
        if rows:
            out.append({"family": label, "rows": rows})
    return out


def _score_row(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "task": s["task"],
        "metric": s["metric"],
        "value": _num(s["value"]),
        "stderr": _num(s["stderr"]),
        "n_samples": s["n_samples"],
        "num_fewshot": s["num_fewshot"],
        "suite": s["suite"],
        "aggregate": bool(s["aggregate"]),
        "source": s["data_source"] or "",
        "substitute": is_substitute(s["data_source"]),
        "scoring_path": s.get("scoring_path"),
    }


def _step_row(s: dict[str, Any]) -> dict[str, Any]:
    row = {k: v for k, v in s.items() if k not in ("trial_id", "metrics")}
    for key in ("seconds", "loss", "rewards_chosen", "rewards_rejected", "rewards_margins"):
        row[key] = _num(row.get(key))
    row["rewards_accuracies"] = _num(row.get("rewards_accuracies"))
    row["metrics"] = finite(_json_or_empty(s.get("metrics")))
    return row


def _reproducibility(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Footer facts: which code and libraries produced the numbers, and when."""
    commits = sorted({t["harness_commit"] for t in trials if t.get("harness_commit")})
    version_sets: dict[str, int] = {}
    for t in trials:
        versions = _json_or_empty(t.get("versions"))
        if versions:
            shown = {k: versions.get(k, "?") for k in TRACKED_VERSIONS if k in versions}
            key = json.dumps(shown, sort_keys=True)
            version_sets[key] = version_sets.get(key, 0) + 1
    task_versions: dict[str, set[str]] = {}
    for t in trials:
        for task, version in _json_or_empty(t.get("task_versions")).items():
            task_versions.setdefault(task, set()).add(str(version))
    # Group tasks by version so 57 MMLU subjects at "1.0" take one line, not 57.
    by_version: dict[str, list[str]] = {}
    for task, seen in sorted(task_versions.items()):
        by_version.setdefault(", ".join(sorted(seen)), []).append(task)
    return {
        "trial_commits": commits,
        "report_commit": harness_commit(),
        "library_versions": [
            {"versions": json.loads(k), "trials": n}
            for k, n in sorted(version_sets.items(), key=lambda kv: -kv[1])
        ],
        "task_versions": [{"version": v, "tasks": ts} for v, ts in sorted(by_version.items())],
    }


def require_db(db: Path) -> None:
    if not db.exists():
        raise HarnessError(
            f"no leaderboard database at {db}",
            "run `harness eval` or `harness search` first, or pass --db",
        )
    if db.is_dir():
        raise HarnessError(f"--db {db} is a directory", "pass the .duckdb file")
