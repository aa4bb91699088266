"""Compare stage: paired comparisons of leaderboard rows. Entry point: :func:`compare_trials`.

Two rows are compared on the questions both were scored on (joined on lm-eval's document id
and content hash), number by number: every summary key both rows have, their objective when
they share one, the leaderboard average, and each task alone. See :mod:`harness.compare.stats`
for the tests and intervals.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from harness.compare.stats import PairedTest, TaskDiffs, holm, paired_test
from harness.errors import HarnessError
from harness.evaluate.results import Composition, mix_compositions
from harness.evaluate.suites import AVERAGED
from harness.record import Leaderboard

Leaf = tuple[str, str, int | None]


@dataclass(frozen=True)
class Comparison:
    """Row A vs row B on one number, over the questions both were scored on."""

    key: str  # a summary key, "objective", "heldout_objective", "average" or "<task> <metric> <shots>-shot"
    a: float | None  # the number recomputed on the paired questions
    b: float | None
    test: PairedTest | None  # None when the rows cannot be paired on this number
    note: str = ""


class TrialData:
    """Per-question values and headline compositions of some leaderboard rows, read once."""

    def __init__(self, board: Leaderboard, trial_ids: Iterable[str]):
        ids = list(dict.fromkeys(trial_ids))
        self.values: dict[str, dict[Leaf, dict[tuple[int, str], float]]] = {t: {} for t in ids}
        for row in board.samples(ids):
            if row["value"] is not None:
                leaf = (row["task"], row["metric"], row["num_fewshot"])
                self.values[row["trial_id"]].setdefault(leaf, {})[(row["doc_id"], row["doc_hash"])] = row[
                    "value"
                ]
        self.parts: dict[str, dict[str, Composition]] = board.compositions(ids)
        self.objective = board.objective_weights(ids)  # one query, not one per row

    def has_samples(self, trial_id: str) -> bool:
        return bool(self.values.get(trial_id))

    def composition(self, trial_id: str, key: str) -> Composition | None:
        """How ``key`` is made from the samples for this row (None if it is not)."""
        parts = self.parts.get(trial_id, {})
        if key in parts:
            return parts[key]
        if key == "average":  # the leaderboard's: mean of the benchmarks that have data
            return mix_compositions({k: 1.0 for k in AVERAGED if k in parts}, parts)
        # The rows' compositions are over the board's (held-out) samples, so a confirmed
        # trial's held-out objective is made exactly as its objective is.
        if key in ("objective", "heldout_objective") and self.objective.get(trial_id):
            weights = self.objective[trial_id] or {}
            if all(k in parts for k in weights):
                return mix_compositions(weights, parts)
        return None

    def compare(self, a: str, b: str, key: str, composition: Composition | None = None) -> Comparison:
        """A vs B on one number; the composition is A's unless given."""
        comp_a = composition if composition is not None else self.composition(a, key)
        comp_b = composition if composition is not None else self.composition(b, key)
        if comp_a is None or comp_b is None:
            return Comparison(key, None, None, None, "not scored on both rows")
        if set(comp_a) != set(comp_b):
            return Comparison(key, None, None, None, "made of different tasks on the two rows")
        tasks, value_a, value_b, missing = [], 0.0, 0.0, []
        for leaf, weight in comp_a.items():
            qa, qb = self.values[a].get(leaf, {}), self.values[b].get(leaf, {})
            common = sorted(set(qa) & set(qb))
            if not common:
                missing.append(leaf[0])
                continue
            va = np.array([qa[q] for q in common])
            vb = np.array([qb[q] for q in common])
            binary = bool(np.isin(va, (0.0, 1.0)).all() and np.isin(vb, (0.0, 1.0)).all())
            tasks.append(TaskDiffs(weight, va - vb, binary))
            value_a += weight * float(va.mean())
            value_b += weight * float(vb.mean())
        if missing:
            return Comparison(key, None, None, None, f"no common questions for {', '.join(missing[:3])}")
        return Comparison(key, value_a, value_b, paired_test(tasks))


def compare_trials(board: Leaderboard, a: str, b: str, keys: list[str] | None = None) -> list[Comparison]:
    """Row ``a`` vs row ``b``: the headline numbers (all shared ones unless ``keys``), then
    every task alone. Raises HarnessError for unknown ids or rows without per-question data."""
    for tid in (a, b):
        if board.trial(tid) is None:
            raise HarnessError(f"no trial {tid!r} in {board.path}", "take ids from `harness leaderboard`")
    data = TrialData(board, [a, b])
    for tid in (a, b):
        if not data.has_samples(tid):
            raise HarnessError(
                f"trial {tid!r} has no per-question results (scored before they were recorded, or failed)",
                "re-score it (e.g. `harness build <recipe> --suite ...`) to compare it",
            )
    if keys is None:
        shared = [k for k in data.parts[a] if k in data.parts[b]]
        keys = shared + [
            k for k in ("objective", "average") if data.composition(a, k) and data.composition(b, k)
        ]
    rows = [data.compare(a, b, key) for key in keys]
    for leaf in sorted(set(data.values[a]) & set(data.values[b]), key=lambda x: (x[0], x[1], x[2] or 0)):
        task, metric, shots = leaf
        label = f"{task} {metric} {shots}-shot" if shots is not None else f"{task} {metric}"
        rows.append(data.compare(a, b, label, composition={leaf: 1.0}))
    return rows


__all__ = ["Comparison", "PairedTest", "TrialData", "compare_trials", "holm", "paired_test"]
