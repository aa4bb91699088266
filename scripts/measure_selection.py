"""Measure what pruning buys on the demo (issue 10): the same search with and without it.

Runs `harness search` twice on one DuckDB file, same space, seed and trial budget, as two
studies: ``<name>-pruned`` (the space as it is: rungs + WilcoxonPruner) and ``<name>-full``
(``selection.pruner: none``: every trial scored on every search question). Both confirm their
top trials on the same held-out questions, so their winners can be compared per question.
Then it prints a Markdown table: wall time, question-evaluations, the best held-out score,
the winner's search vs held-out score (the winner's curse), and paired tests of each winner
against the other and against the space's reference models.

    .venv/bin/python scripts/measure_selection.py --budget 20 --db results/selection.duckdb

Question-evaluations are counted from the database: per trial, the search questions it was
scored on (its fidelity x tasks; a reused trial costs nothing), plus every held-out question
scored for a confirmation or a reference.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from harness.compare import compare_trials
from harness.record import Leaderboard


def run_search(space: Path, study: str, budget: int, db: Path) -> float:
    cmd = [sys.executable, "-m", "harness.cli", "search", "--space", str(space), "--study", study]
    cmd += ["--budget", str(budget), "--db", str(db), "--no-report", "--device", "cpu"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def study_facts(board: Leaderboard, study: str, tasks: int) -> dict[str, Any]:
    rows = board.snapshot({"trials": "created_at"}).get("trials", [])
    mine = [r for r in rows if r["study"] == study]
    trials = [r for r in mine if r["trial_number"] is not None]
    refs = [r for r in mine if r["trial_number"] is None]
    search_evals = sum((r["fidelity"] or 0) * tasks for r in trials if not r["reused_from"])
    ids = [r["id"] for r in mine if not r["reused_from"]]
    heldout = {(s["trial_id"], s["task"], s["doc_id"]) for s in board.samples(ids, partitions=("heldout",))}
    ref_search = sum(
        len({(s["task"], s["doc_id"]) for s in board.samples([r["id"]], partitions=("search",))})
        for r in refs
    )
    confirmed = [r for r in trials if r["heldout_objective"] is not None]
    winner = max(confirmed, key=lambda r: r["heldout_objective"]) if confirmed else None
    return {
        "trials": trials,
        "refs": refs,
        "finished": sum(r["status"] in ("ok", "pruned") for r in trials),
        "pruned": sum(r["status"] == "pruned" for r in trials),
        "confirmed": len(confirmed),
        "search_evals": search_evals,
        "heldout_evals": len(heldout),
        "ref_search_evals": ref_search,
        "winner": winner,
    }


def paired(board: Leaderboard, a: str, b: str) -> str:
    row = next(c for c in compare_trials(board, a, b, ["objective"]))
    t = row.test
    if t is None:
        return f"not paired ({row.note})"
    return (
        f"{t.difference:+.3f} [{t.ci_low:+.3f}, {t.ci_high:+.3f}], p = {t.p_value:.3g} "
        f"({t.questions} questions, {t.test})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", type=Path, default=Path("search/demo.yaml"))
    parser.add_argument("--budget", type=int, default=20)
    parser.add_argument("--db", type=Path, default=Path("results/selection.duckdb"))
    parser.add_argument("--out", type=Path, default=Path("results/selection.md"))
    parser.add_argument("--skip-runs", action="store_true", help="Only read an earlier run's --db.")
    args = parser.parse_args()

    spec = yaml.safe_load(args.space.read_text())
    name = spec["name"]
    tasks = sum(len(s["parts"]) if isinstance(s, dict) else 1 for s in spec["suites"])
    full = dict(spec, selection={**spec.get("selection", {}), "pruner": "none"})
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        full_space = Path(tmp) / "full.yaml"
        full_space.write_text(yaml.safe_dump(full, sort_keys=False))
        for study, space in ((f"{name}-pruned", args.space), (f"{name}-full", full_space)):
            if not args.skip_runs:
                seconds[study] = run_search(space.resolve(), study, args.budget, args.db)

    board = Leaderboard(args.db)
    facts = {s: study_facts(board, s, tasks) for s in (f"{name}-pruned", f"{name}-full")}
    lines = [
        f"Demo selection, budget {args.budget} trials per study, {tasks} tasks, seed "
        f"{spec.get('sampler', {}).get('seed')}; database {args.db}",
        "",
        "| | pruned (rungs + Wilcoxon) | full (no pruning) |",
        "|---|---|---|",
    ]

    def row(label: str, fn: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(str(fn(s, f)) for s, f in facts.items()) + " |")

    row("wall time (s)", lambda s, f: f"{seconds[s]:.0f}" if s in seconds else "")
    row("trials finished (pruned)", lambda s, f: f"{f['finished']} ({f['pruned']})")
    row("search question-evaluations (trials)", lambda s, f: f["search_evals"])
    row("held-out question-evaluations (confirmations + references)", lambda s, f: f["heldout_evals"])
    row("reference search questions", lambda s, f: f["ref_search_evals"])
    row("confirmed trials", lambda s, f: f["confirmed"])
    row(
        "winner (held-out objective)",
        lambda s, f: (
            f"{f['winner']['name']} ({f['winner']['heldout_objective']:.3f})" if f["winner"] else "none"
        ),
    )
    row(
        "winner's search objective - held-out objective",
        lambda s, f: (
            f"{f['winner']['objective'] - f['winner']['heldout_objective']:+.3f}" if f["winner"] else ""
        ),
    )
    for label in ("base", "science", "commonsense"):
        row(
            f"winner - {label} (held-out, paired)",
            lambda s, f, label=label: next(
                (
                    f"{paired(board, f['winner']['id'], r['id'])} [{label} {r['heldout_objective']:.3f}]"
                    for r in f["refs"]
                    if f["winner"] and r["model_ref"] == spec["models"].get(label)
                ),
                "",
            ),
        )
    a, b = (facts[s]["winner"] for s in facts)
    if a and b:
        lines += ["", f"pruned winner - full winner (held-out, paired): {paired(board, a['id'], b['id'])}"]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
