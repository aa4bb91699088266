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

Prints a Markdown table: question-evaluations of each arm, the best held-out score, the
winner's search vs held-out score (the winner's curse), and paired tests of the winners against
each other and the space's reference models.

    .venv/bin/python scripts/measure_selection.py --budget 12 --db results/selection.duckdb
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from harness.compare import compare_trials
from harness.record import Leaderboard


def run_search(space: Path, study: str, budget: int, db: Path) -> float:
    cmd = [sys.executable, "-m", "harness.cli", "search", "--space", str(space), "--study", study]
    cmd += ["--budget", str(budget), "--db", str(db), "--no-report", "--device", "cpu"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


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


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--space", type=Path, default=Path("search/demo.yaml"))
    parser.add_argument("--budget", type=int, default=12)
    parser.add_argument("--db", type=Path, default=Path("results/selection.duckdb"))
    parser.add_argument("--out", type=Path, default=Path("results/selection.md"))
    parser.add_argument("--skip-run", action="store_true", help="Use the study already in --db.")
    args = parser.parse_args()

    from harness.search import SearchOptions, SearchRunner, load_space

    space = load_space(args.space)
    study = f"{space.name}-pruned"
    wall = None if args.skip_run else run_search(args.space.resolve(), study, args.budget, args.db)
    runner = SearchRunner(
        space, SearchOptions(budget=1, db=args.db, study_name=study), console=Console(stderr=True)
    )
    board = runner.board

    def rows() -> list[dict[str, Any]]:
        return [r for r in board.snapshot({"trials": "created_at"}).get("trials", []) if r["study"] == study]

    trials = sorted((r for r in rows() if r["trial_number"] is not None), key=lambda r: r["trial_number"])
    checked = {r["recipe_hash"] for r in rows() if r["source"] == "check"}
    for r in trials:
        if r["status"] == "pruned" and r["recipe_hash"] not in checked:
            runner.rescore(r["id"], "scored in full, to measure pruning", source="check", search=True)
    every = rows()
    check = {r["recipe_hash"]: r for r in every if r["source"] == "check"}
    refs = [r for r in every if r["trial_number"] is None and r["source"] != "check"]
    per_task = runner.limit or 0
    n_tasks = len({s["task"] for s in board.samples([trials[0]["id"]], partitions=("search",))})

    # Arm 1, as it ran.
    # Counted from the samples: a task can have fewer search questions than the limit
    # (MMLU marketing searches on its 25 validation questions).
    pruned_search = sum(questions(board, r["id"], "search") for r in trials)
    pruned_confirmed = [r for r in trials if r["heldout_objective"] is not None]
    pruned_heldout = sum(questions(board, r["id"]) for r in pruned_confirmed)
    # Arm 2, replayed: every trial in full; the top K confirmed as the space says. A trial
    # confirmed here is confirmed in arm 1 too (fewer trials compete there) or is a pruned
    # trial, whose check row has its held-out score.
    full = [check.get(r["recipe_hash"], r) if r["status"] == "pruned" else r for r in trials]
    done: list[float] = []
    full_confirmed = []
    for r in full:
        if r["objective"] is None:
            continue
        if sum(v > r["objective"] for v in done) < runner.confirm_top:
            full_confirmed.append(r)  # in the top K as it finishes
        done.append(r["objective"])
    if runner.selection.confirm_at == "end":  # the top K of the whole study
        full_confirmed = [
            r for r in full_confirmed if sum(v > r["objective"] for v in done) < runner.confirm_top
        ]
    full_search = sum(questions(board, r["id"], "search") for r in full)
    full_heldout = sum(questions(board, r["id"]) for r in full_confirmed)
    ref_cost = sum(questions(board, r["id"]) + questions(board, r["id"], "search") for r in refs)

    def winner(confirmed: list[dict[str, Any]]) -> dict[str, Any]:
        return max(confirmed, key=lambda r: r["heldout_objective"])

    arms = {
        "pruned (rungs + Wilcoxon, as run)": (pruned_confirmed, pruned_search, pruned_heldout),
        "no pruning (same trials, replayed)": (full_confirmed, full_search, full_heldout),
    }
    lines = [
        f"Demo selection: `{args.space}`, {len(trials)} trials (sampler seed {space.sampler.seed}), "
        f"{n_tasks} tasks x {per_task} search questions, confirm top {runner.confirm_top}; database `{args.db}`"
        + (f"; the pruned search took {wall:.0f} s" if wall else ""),
        "",
        "| | " + " | ".join(arms) + " |",
        "|---|---|---|",
    ]

    def row(label: str, cells: list[Any]) -> None:
        lines.append(f"| {label} | " + " | ".join(str(c) for c in cells) + " |")

    row("trials pruned", [sum(r["status"] == "pruned" for r in trials), 0])
    row("search question-evaluations", [a[1] for a in arms.values()])
    row("held-out question-evaluations (confirmations)", [a[2] for a in arms.values()])
    row("total, with the references' " + str(ref_cost), [a[1] + a[2] + ref_cost for a in arms.values()])
    total_pruned, total_full = (a[1] + a[2] + ref_cost for a in arms.values())
    row("share of the no-pruning cost", [f"{total_pruned / total_full:.0%}", "100%"])
    row("confirmed trials", [len(a[0]) for a in arms.values()])
    winners = [winner(a[0]) for a in arms.values()]
    row("winner: held-out objective", [f"{w['name']}: {w['heldout_objective']:.3f}" for w in winners])
    row(
        "winner: search objective - held-out objective",
        [f"{w['objective'] - w['heldout_objective']:+.3f}" for w in winners],
    )
    for label in ("base", "science", "commonsense"):
        ref = next((r for r in refs if r["model_ref"] == space.models.get(label)), None)
        if ref is not None:
            row(
                f"winner - {label} ({ref['heldout_objective']:.3f}), held-out, paired",
                [paired(board, w["id"], ref["id"]) for w in winners],
            )
    lines += [
        "",
        f"pruned-arm winner - no-pruning winner (held-out, paired): {paired(board, winners[0]['id'], winners[1]['id'])}",
    ]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
