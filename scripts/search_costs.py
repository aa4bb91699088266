"""Where a finished search spent its time and its questions, from its leaderboard file alone.

For deciding what a search (the demo's, or yours) can afford: per kind of row (reference
models, trials that ran in full, pruned trials) how many there were, the seconds spent building
(merge), aligning (DPO / sDPO) and scoring, and the question-evaluations per partition (search
questions for the objective, held-out ones for the confirmations). Per merge method: trials and
mean build seconds. Reads the file only (open it after the search has finished).

    .venv/bin/python scripts/search_costs.py --db results/leaderboard.duckdb --study demo
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.record import Leaderboard


def question_counts(board: Leaderboard, trial_ids: list[str]) -> dict[str, int]:
    """Question-evaluations per partition: distinct (trial, task, document) rows."""
    counts: dict[str, int] = {}
    for partition in ("search", "heldout"):
        rows = board.samples(trial_ids, partitions=(partition,))
        counts[partition] = len({(r["trial_id"], r["task"], r["doc_id"]) for r in rows})
    return counts


def seconds(rows: Iterable[dict[str, Any]], key: str) -> float:
    return sum(r[key] or 0.0 for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("results/leaderboard.duckdb"))
    parser.add_argument("--study", default="demo")
    args = parser.parse_args()

    board = Leaderboard(args.db)
    tables = board.snapshot({"trials": "created_at", "align_steps": "trial_id, step"})
    rows = [r for r in tables.get("trials", []) if r["study"] == args.study and r["source"] != "check"]
    if not rows:
        raise SystemExit(f"no rows of study {args.study!r} in {args.db}")
    built = {r["id"] for r in rows if r["build_seconds"] is not None}
    aligned: dict[str, float] = defaultdict(float)  # a reference row carries its donor's training
    for step in tables.get("align_steps", []):
        if step["trial_id"] in built:
            aligned[step["trial_id"]] += step["seconds"] or 0.0

    kinds = {
        "reference models": [r for r in rows if r["trial_number"] is None],
        "trials scored in full": [r for r in rows if r["trial_number"] is not None and r["status"] == "ok"],
        "trials pruned": [r for r in rows if r["status"] == "pruned"],
        "trials failed or interrupted": [r for r in rows if r["status"] not in ("ok", "pruned")],
    }
    span = (rows[-1]["created_at"] - rows[0]["created_at"]).total_seconds()
    print(f"`{args.db}`, study `{args.study}`: {len(rows)} rows; first to last row written: {span:.0f} s")
    print()
    print("| rows | n | merge s | align s | scoring s | search questions | held-out questions | confirmed |")
    print("|---|---|---|---|---|---|---|---|")
    totals = [0.0, 0.0, 0.0, 0, 0]
    for label, group in kinds.items():
        if not group:
            continue
        ids = [r["id"] for r in group]
        align = sum(aligned[i] for i in ids)
        merge = seconds(group, "build_seconds") - align  # build_seconds includes the alignment
        scoring = seconds(group, "eval_seconds")
        q = question_counts(board, ids)
        confirmed = sum(r["heldout_objective"] is not None for r in group)
        for i, v in enumerate((merge, align, scoring, q["search"], q["heldout"])):
            totals[i] += v
        print(
            f"| {label} | {len(group)} | {merge:.0f} | {align:.0f} | {scoring:.0f} | "
            f"{q['search']} | {q['heldout']} | {confirmed} |"
        )
    print(
        f"| **all** | {len(rows)} | {totals[0]:.0f} | {totals[1]:.0f} | {totals[2]:.0f} | "
        f"{totals[3]} | {totals[4]} | |"
    )
    print()
    print("| merge method | trials | aligned | mean merge s | mean align s (aligned trials) |")
    print("|---|---|---|---|---|")
    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["trial_number"] is not None:
            by_method[r["merge_method"] or "none"].append(r)
    for method, group in sorted(by_method.items()):
        with_align = [r for r in group if aligned[r["id"]] > 0]
        merge = (seconds(group, "build_seconds") - sum(aligned[r["id"]] for r in group)) / len(group)
        align = sum(aligned[r["id"]] for r in with_align) / len(with_align) if with_align else 0.0
        print(f"| {method} | {len(group)} | {len(with_align)} | {merge:.1f} | {align:.1f} |")


if __name__ == "__main__":
    main()
