"""``harness nightly``: one scheduled sweep of a study, and whether anything regressed.

A night resumes the study and adds ``budget`` trials (the study's top ``confirm_top`` are
confirmed on the held-out questions at the end, as in any search), then builds the best-known recipe
again and scores it on the same held-out questions. That re-score is compared per question
with the recipe's previous measurement (last night's re-score, else the trial itself) by the
paired test of ``harness compare``: a significant drop is a regression (a library upgrade, a
changed dataset, a broken kernel), and the exit code says so. The summary is Markdown, for a
CI job's log and its artifacts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.compare import Comparison, compare_trials
from harness.search.runner import SearchOptions, SearchOutcome, SearchRunner

ALPHA = 0.05  # a drop with p below this is a regression


@dataclass
class NightlyOutcome:
    study: str
    search: SearchOutcome
    best_before: dict[str, Any] | None
    best: dict[str, Any] | None
    rescore_id: str | None = None
    previous_id: str | None = None
    comparison: Comparison | None = None
    versions_changed: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # a re-score that could not be made

    @property
    def new_best(self) -> bool:
        return self.best is not None and (
            self.best_before is None or self.best["id"] != self.best_before["id"]
        )

    @property
    def regression(self) -> bool:
        test = self.comparison.test if self.comparison else None
        return test is not None and test.difference < 0 and test.p_value < ALPHA


def best_recipe_row(runner: SearchRunner) -> dict[str, Any] | None:
    """The study's leader among its own trials (ranked as the board ranks: held-out first)."""
    for row in runner.board.ranking(study=runner.study_name):
        if row["status"] == "ok" and row["source"] == "search":
            return row
    return None


def _previous_measurement(runner: SearchRunner, best: dict[str, Any], rescore_id: str) -> str:
    """The recipe's latest earlier re-score in this study, else the trial itself."""
    recipe_hash = (runner.board.trial(best["id"]) or {}).get("recipe_hash") or ""
    earlier = [
        i for i in runner.board.measurements(runner.study_name, recipe_hash, "nightly") if i != rescore_id
    ]
    return earlier[-1] if earlier else best["id"]


def _versions(runner: SearchRunner, trial_id: str) -> dict[str, str]:
    row = runner.board.trial(trial_id) or {}
    try:
        return json.loads(row.get("versions") or "{}")
    except ValueError:
        return {}


def run_nightly(runner: SearchRunner, budget: int) -> NightlyOutcome:
    """Add ``budget`` trials to the runner's study, re-score its best recipe, compare."""
    best_before = best_recipe_row(runner)
    runner.options.budget = len(runner.finished_trials()) + budget
    search = runner.run()
    outcome = NightlyOutcome(runner.study_name, search, best_before, best_recipe_row(runner))
    if outcome.best is None:
        return outcome
    label = f"nightly re-score {datetime.now(UTC):%Y-%m-%d}"
    try:
        record = runner.rescore(outcome.best["id"], label)
    except Exception as err:  # noqa: BLE001  (reported: no re-score is not a regression)
        outcome.problems.append(f"re-score of {outcome.best['name']} failed: {type(err).__name__}: {err}")
        return outcome
    outcome.rescore_id = record.id
    if record.status != "ok":
        outcome.problems.append(f"re-score of {outcome.best['name']}: {record.status} {record.error or ''}")
        return outcome
    outcome.previous_id = _previous_measurement(runner, outcome.best, record.id)
    rows = compare_trials(runner.board, record.id, outcome.previous_id)
    outcome.comparison = next((c for c in rows if c.key == "objective" and c.test), None) or next(
        (c for c in rows if c.test), None
    )
    before, now = _versions(runner, outcome.previous_id), _versions(runner, record.id)
    outcome.versions_changed = {
        lib: (before.get(lib), now.get(lib))
        for lib in sorted(set(before) | set(now))
        if before.get(lib) != now.get(lib)
    }
    return outcome


def summary_markdown(outcome: NightlyOutcome, report: Path | None) -> str:
    s = outcome.search
    lines = [
        f"# Nightly sweep: {outcome.study} ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"- trials this run: {s.ran} scored, {s.reused} reused, {s.pruned} pruned, {s.failed} failed; "
        f"{s.finished} finished in the study; {s.seconds / 60:.1f} min"
        + (" (stopped by --timeout before the budget)" if s.timed_out else ""),
    ]
    best = outcome.best
    if best is None:
        lines.append("- best: no finished trial yet")
    else:
        value = best.get("heldout_objective")
        shown = f"{value:.4f}" if isinstance(value, float) else "not confirmed"
        mark = "**new best**" if outcome.new_best else "unchanged"
        lines.append(f"- best: {best['name']} (`{best['id']}`), held-out objective {shown} ({mark})")
    c = outcome.comparison
    if c is not None and c.test is not None:
        t = c.test
        verdict = "**REGRESSION**" if outcome.regression else "no regression"
        lines.append(
            f"- re-score `{outcome.rescore_id}` vs previous `{outcome.previous_id}` on {c.key}: "
            f"{t.difference:+.4f} [{t.ci_low:+.4f}, {t.ci_high:+.4f}], p = {t.p_value:.3g} "
            f"({t.test}, {t.questions} questions): {verdict}"
        )
    elif outcome.rescore_id:
        lines.append(f"- re-score `{outcome.rescore_id}`: no paired comparison possible")
    for problem in outcome.problems:
        lines.append(f"- problem: {problem}")
    if outcome.versions_changed:
        changed = ", ".join(
            f"{lib} {a or '—'} → {b or '—'}" for lib, (a, b) in outcome.versions_changed.items()
        )
        lines.append(f"- versions changed since the previous measurement: {changed}")
    elif outcome.rescore_id:
        lines.append("- versions: unchanged since the previous measurement")
    if report is not None:
        lines.append(f"- report: {report}")
    return "\n".join(lines) + "\n"


__all__ = ["ALPHA", "NightlyOutcome", "SearchOptions", "best_recipe_row", "run_nightly", "summary_markdown"]
