"""Measure what pruning buys on the demo (issue 10): question-evaluations and the best
held-out score, with pruning and without, on the same trials.

1. Runs `harness search` on the space as it is (rungs + WilcoxonPruner), study ``<name>-pruned``.
2. Scores every trial the pruner stopped on all its search questions and on the held-out
   questions (rows with source ``check``): what the trial would have had without pruning.
3. Replays the study without pruning. While the sampler is in its random start-up phase
   (``n_startup_trials``; keep ``--budget`` within it), the trial-seeded sampler draws the same
   recipe for trial number n whatever happened before, so a study without pruning runs the
   same trials: each one scored in full, and the study's top ``confirm_top`` confirmed on the
   held-out questions (the harness's rule, ``selection.confirm_at``). Every number of that arm
   is measured on the same models and questions; only its order is replayed.

Past the start-up phase the sampler learns from the trials' results, and a pruned trial teaches
it differently from a finished one, so the two arms draw different trials. With ``--arms studies``
(the default when ``--budget`` exceeds ``n_startup_trials``) step 3 is instead a second study,
``<name>-no-pruning``, run with the same space and seed but ``pruner: none`` and no rungs, in the
same database: a recipe both arms draw is scored once and its rows reused (the count of
question-evaluations still charges it to each arm, from its per-question rows), and step 2 is
skipped. The two winners are then different models, compared per question on the same held-out
questions.

Prints a Markdown table: question-evaluations of each arm, the best held-out score, the
winner's search vs held-out score (the winner's curse), and paired tests of the winners against
each other and the space's reference models.

    .venv/bin/python scripts/measure_selection.py --budget 12 --db results/selection.duckdb
    .venv/bin/python scripts/measure_selection.py --budget 50 --db results/selection-50.duckdb \
        --out results/selection-50.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from harness.compare import compare_trials
from harness.record import Leaderboard


def run_search(space: Path, study: str, budget: int, db: Path) -> float:
    """One study of the space, as `harness search` runs it; its wall time in seconds."""
    cmd = [sys.executable, "-m", "harness.cli", "search", "--space", str(space), "--study", study]
    cmd += ["--budget", str(budget), "--db", str(db), "--no-report", "--device", "cpu"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def finished(db: Path, study: str) -> int:
    """Trials of a study already recorded in the database (a study that ran is not run again)."""
    if not db.exists():
        return 0
    return sum(r["trial_number"] is not None for r in study_rows(Leaderboard(db), study))


def questions(board: Leaderboard, trial_id: str, partition: str = "heldout") -> int:
    """Questions a row was scored on in one partition (question-evaluations, whatever the metrics)."""
    return len({(s["task"], s["doc_id"]) for s in board.samples([trial_id], partitions=(partition,))})


def paired(board: Leaderboard, a: str, b: str) -> str:
    if a == b:
        return "same trial"
    row = next(iter(compare_trials(board, a, b, ["objective"])))
    t = row.test
    if t is None:
        return f"not paired ({row.note})"
    return (
        f"{t.difference:+.3f} [{t.ci_low:+.3f}, {t.ci_high:+.3f}], p = {t.p_value:.3g} "
        f"({t.questions} questions, {t.test})"
    )


def no_pruning_space(space_file: Path, folder: Path) -> Path:
    """The same space with pruning off and no rungs: each trial scored on all its search
    questions at once. The division, its seed and the question order are the space's."""
    data = yaml.safe_load(space_file.read_text())
    data.setdefault("selection", {}).update(pruner="none", rungs=[])
    path = folder / f"{space_file.stem}-no-pruning.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass
class Arm:
    """One arm's trials and what they cost, in question-evaluations counted from the samples
    (a task can have fewer search questions than the limit; a reused row carries its source's)."""

    label: str
    trials: list[dict[str, Any]]
    confirmed: list[dict[str, Any]]
    search: int
    heldout: int
    references: list[dict[str, Any]]
    reference_cost: int
    wall: float | None = None

    @property
    def total(self) -> int:
        return self.search + self.heldout + self.reference_cost

    @property
    def winner(self) -> dict[str, Any]:
        return max(self.confirmed, key=lambda r: r["heldout_objective"])


def measured(
    board: Leaderboard,
    label: str,
    trials: list[dict[str, Any]],
    confirmed: list[dict[str, Any]],
    references: list[dict[str, Any]],
    wall: float | None = None,
) -> Arm:
    """An arm with its costs counted from the rows' samples: the trials' search questions, the
    confirmed ones' held-out questions, the references' both."""
    return Arm(
        label,
        trials,
        confirmed,
        search=sum(questions(board, r["id"], "search") for r in trials),
        heldout=sum(questions(board, r["id"]) for r in confirmed),
        references=references,
        reference_cost=reference_cost(board, references),
        wall=wall,
    )


def reference_cost(board: Leaderboard, references: list[dict[str, Any]]) -> int:
    """Question-evaluations of the reference models: a study scores them on both parts."""
    return sum(questions(board, r["id"]) + questions(board, r["id"], "search") for r in references)


def is_reference(row: dict[str, Any]) -> bool:
    """A reference model's row (the base, a donor): not a trial, nor a pruned trial's check."""
    return row["trial_number"] is None and row["source"] != "check"


def study_rows(board: Leaderboard, study: str) -> list[dict[str, Any]]:
    return [r for r in board.snapshot({"trials": "created_at"}).get("trials", []) if r["study"] == study]


def as_run(board: Leaderboard, study: str, label: str, wall: float | None) -> Arm:
    """A study as it ran: its trials, the ones it confirmed, its reference models."""
    rows = study_rows(board, study)
    trials = sorted((r for r in rows if r["trial_number"] is not None), key=lambda r: r["trial_number"])
    refs = [r for r in rows if is_reference(r)]
    confirmed = [r for r in trials if r["heldout_objective"] is not None]
    return measured(board, label, trials, confirmed, refs, wall)


def replayed(board: Leaderboard, pruned: Arm, study: str, confirm_top: int, confirm_at: str) -> Arm:
    """The pruned arm's trials without pruning: each pruned trial's check row (scored in full)
    stands in for it; the top K confirmed as the space says. A trial confirmed here is
    confirmed in the pruned arm too (fewer trials compete there) or is a pruned trial, whose
    check row has its held-out score."""
    check = {r["recipe_hash"]: r for r in study_rows(board, study) if r["source"] == "check"}
    full = [check.get(r["recipe_hash"], r) if r["status"] == "pruned" else r for r in pruned.trials]
    done: list[float] = []
    confirmed = []
    for r in full:
        if r["objective"] is None:
            continue
        if sum(v > r["objective"] for v in done) < confirm_top:
            confirmed.append(r)  # in the top K as it finishes
        done.append(r["objective"])
    if confirm_at == "end":  # the top K of the whole study
        confirmed = [r for r in confirmed if sum(v > r["objective"] for v in done) < confirm_top]
    return measured(board, "no pruning (same trials, replayed)", full, confirmed, pruned.references)


def table(board: Leaderboard, arms: tuple[Arm, Arm], title: str, models: dict[str, str]) -> str:
    """The Markdown comparison of the pruned arm (first) and the no-pruning arm."""
    lines = [title, "", "| | " + " | ".join(a.label for a in arms) + " |", "|---|---|---|"]

    def row(label: str, cells: list[Any]) -> None:
        lines.append(f"| {label} | " + " | ".join(str(c) for c in cells) + " |")

    row(
        "trials (pruned)",
        [f"{len(a.trials)} ({sum(r['status'] == 'pruned' for r in a.trials)})" for a in arms],
    )
    row("search wall time", [f"{a.wall:.0f} s" if a.wall else "not run here" for a in arms])
    row("search question-evaluations", [a.search for a in arms])
    row("held-out question-evaluations (confirmations)", [a.heldout for a in arms])
    row("references' question-evaluations", [a.reference_cost for a in arms])
    row("total", [a.total for a in arms])
    row("share of the no-pruning cost", [f"{a.total / arms[1].total:.0%}" for a in arms])
    row("confirmed trials", [", ".join(str(r["trial_number"]) for r in a.confirmed) for a in arms])
    row(
        "winner: held-out objective",
        [f"{a.winner['name']}: {a.winner['heldout_objective']:.3f}" for a in arms],
    )
    row(
        "winner: search objective - held-out objective",
        [f"{a.winner['objective'] - a.winner['heldout_objective']:+.3f}" for a in arms],
    )
    best_search = [
        max(
            (r for r in a.trials if r["objective"] is not None and r["status"] == "ok"),
            key=lambda r: r["objective"],
        )
        for a in arms
    ]
    row(
        "best search objective: its held-out objective",
        [
            f"{b['name']}: {b['objective']:.3f} / "
            + ("not confirmed" if b["heldout_objective"] is None else f"{b['heldout_objective']:.3f}")
            for b in best_search
        ],
    )
    for label, model in models.items():
        cells = []
        for a in arms:
            ref = next((r for r in a.references if r["model_ref"] == model), None)
            cells.append(
                "no reference row"
                if ref is None
                else f"({ref['heldout_objective']:.3f}) " + paired(board, a.winner["id"], ref["id"])
            )
        row(f"winner - {label}, held-out, paired", cells)
    lines += [
        "",
        "pruned-arm winner - no-pruning winner (held-out, paired): "
        + paired(board, arms[0].winner["id"], arms[1].winner["id"]),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--space", type=Path, default=Path("search/demo.yaml"))
    parser.add_argument("--budget", type=int, default=12)
    parser.add_argument("--db", type=Path, default=Path("results/selection.duckdb"))
    parser.add_argument("--out", type=Path, default=Path("results/selection.md"))
    parser.add_argument(
        "--arms",
        choices=("replay", "studies"),
        default=None,
        help="replay: the no-pruning arm replays the pruned study's trials (budget within the "
        "sampler's start-up); studies: it is a second study (default past the start-up).",
    )
    parser.add_argument(
        "--skip-run",
        action="store_true",
        help="Run no study: use what --db has (a study with --budget trials is never rerun).",
    )
    args = parser.parse_args()

    from harness.search import SearchOptions, SearchRunner, load_space

    space = load_space(args.space)
    startup = int(space.sampler.options.get("n_startup_trials", 10))
    mode = args.arms or ("replay" if args.budget <= startup else "studies")
    study = f"{space.name}-pruned"
    wall = None
    if not args.skip_run and finished(args.db, study) < args.budget:
        wall = run_search(args.space.resolve(), study, args.budget, args.db)
    runner = SearchRunner(
        space, SearchOptions(budget=1, db=args.db, study_name=study), console=Console(stderr=True)
    )
    board = runner.board
    pruned = as_run(board, study, "pruned (rungs + Wilcoxon, as run)", wall)
    if mode == "replay":
        checked = {r["recipe_hash"] for r in study_rows(board, study) if r["source"] == "check"}
        for r in pruned.trials:
            if r["status"] == "pruned" and r["recipe_hash"] not in checked:
                runner.rescore(r["id"], "scored in full, to measure pruning", source="check", search=True)
        pruned = as_run(board, study, pruned.label, wall)
        full = replayed(board, pruned, study, runner.confirm_top, runner.selection.confirm_at)
    else:
        other = f"{space.name}-no-pruning"
        full_wall = None
        if not args.skip_run and finished(args.db, other) < args.budget:
            other_space = no_pruning_space(args.space.resolve(), args.db.resolve().parent)
            full_wall = run_search(other_space, other, args.budget, args.db)
        board.refresh()
        full = as_run(board, other, "no pruning (second study, same seed)", full_wall)
    title = (
        f"Demo selection: `{args.space}`, {len(pruned.trials)} trials per arm (sampler seed "
        f"{space.sampler.seed}, {startup} start-up trials), {runner.limit} search questions per task, "
        f"confirm top {runner.confirm_top}; database `{args.db}`"
    )
    models = {
        label: space.models[label] for label in ("base", "science", "commonsense") if label in space.models
    }
    text = table(board, (pruned, full), title, models)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
