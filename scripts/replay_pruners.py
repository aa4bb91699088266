"""Replay Optuna's pruners on a finished study's per-question records (issue 10).

A study scored without pruning (every trial on all its search questions, e.g. the
``<name>-no-pruning`` arm of ``measure_selection.py --arms studies``) holds, per trial, the
per-question results that every rung would have seen: a rung is the first N search questions
of each task in the study's seeded order (:mod:`harness.evaluate.questions`, read here as the
harness reads it). So any pruner can be replayed on it: each
trial, in trial-number order, reports to a real Optuna pruner what the runner would report
(per-question shares of the objective for ``WilcoxonPruner``; the rung's objective for
``SuccessiveHalvingPruner``) and is stopped where the pruner says.

What a replay keeps fixed is the sampler's draws. That is exact, not an approximation, when
the pruner never stops a trial that TPE would have put in its "good" group: TPE splits the
trials into the best ``gamma(n)`` complete ones and the rest (pruned trials rank below every
complete one), and the harness re-seeds TPE per trial number, so trial n's recipe depends only
on which earlier trials are in that group. The script checks this for every draw after the
start-up trials and says where it fails (there, a live study would have drawn other recipes
from that trial on).

For each pruner it prints: which trials are stopped and at which rung, the question-evaluations
(search, plus the held-out confirmations of the study's top K and the reference models, which a
pruner does not change), the top K it would confirm, and their held-out objectives where the
study measured them.

    .venv/bin/python scripts/replay_pruners.py --db results/selection-50.duckdb \\
        --study demo-no-pruning --as-run demo-pruned --out results/pruners-50.md
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from measure_selection import is_reference, questions, reference_cost, study_rows

from harness.evaluate.results import Sample
from harness.pipeline import Scorer, Scoring
from harness.record import Leaderboard
from harness.search.optuna_compat import tpe_good_group_size
from harness.search.space import SearchSpace, load_space
from harness.search.study import make_pruner, question_values

Shares = dict[str, list[float]]  # task -> per-question shares of the objective, in the study's order


@dataclass
class Trial:
    """One trial of the full-fidelity study: its row and its per-question shares, in order."""

    row: dict[str, Any]
    shares: Shares
    doc_ids: dict[str, list[int]]  # task -> doc ids in the same order

    @property
    def number(self) -> int:
        return int(self.row["trial_number"])

    def objective(self, count: int | None) -> float:
        """The search objective on the first ``count`` questions of each task (None: all),
        rounded to 12 places: two trials whose tasks' means add up to the same objective tie
        exactly, whatever order float addition took (successive halving promotes ties)."""
        return round(sum(sum(v[:count]) / len(v[:count]) for v in self.shares.values()), 12)


@dataclass
class Replay:
    """One pruner replayed: where each trial stopped (questions per task; None: finished)."""

    name: str
    stopped: dict[int, int] = field(default_factory=dict)
    draws_differ_from: int | None = None  # the first trial TPE would have drawn differently; -1: not checked

    def finished(self, trials: list[Trial]) -> list[Trial]:
        return [t for t in trials if t.number not in self.stopped]


def load_trials(board: Leaderboard, space: SearchSpace, study: str) -> list[Trial]:
    """The study's trials in number order, each with its search questions in the study's order
    (the harness's own division, :attr:`harness.pipeline.Scorer.order`). A reused row's
    questions are its source's."""
    rule = space.selection.split
    if rule is None:
        raise SystemExit("the space has no search / held-out division: nothing to replay")
    data_dir = Path(space.data_dir) if space.data_dir else None
    order = Scorer(Scoring(suites=space.suite_refs, data_dir=data_dir, split=rule), board).order
    searched = [(task, i) for task, part in order.tasks.items() for i in part.search]
    steps = {question: n for n, question in enumerate(searched)}
    rows = sorted((r for r in study_rows(board, study) if r["trial_number"] is not None), key=_number)
    trials = []
    for row in rows:
        if row["status"] != "ok" or row["fidelity"] != space.limit:
            raise SystemExit(
                f"{row['name']}: {row['status']} at fidelity {row['fidelity']}; replay needs every trial scored in full"
            )
        source = row["reused_from"] or row["id"]
        samples = [
            Sample(r["task"], r["num_fewshot"], r["doc_id"], r["doc_hash"], r["metric"], r["value"], None)
            for r in board.samples([source], partitions=("search",))
        ]
        values = question_values(
            samples,
            board.compositions([source], ("search",))[source],
            space.objective.weights,
            lambda task, doc_id: steps[task, doc_id],
        )
        doc_ids: dict[str, list[int]] = {}
        for task, i in searched:  # in the study's order
            if steps[task, i] in values:
                doc_ids.setdefault(task, []).append(i)
        shares = {task: [values[steps[task, i]] for i in ids] for task, ids in doc_ids.items()}
        trial = Trial(row, shares, doc_ids)
        if not math.isclose(trial.objective(None), row["objective"], abs_tol=1e-9):
            raise SystemExit(
                f"{row['name']}: shares add up to {trial.objective(None)}, the row says {row['objective']}"
            )
        trials.append(trial)
    return trials


def _number(row: dict[str, Any]) -> int:
    return int(row["trial_number"])


def replay(
    name: str,
    trials: list[Trial],
    rungs: list[int],
    pruner_factory: Callable[[], optuna.pruners.BasePruner],
    per_question: bool,
) -> Replay:
    """Ask the pruner about every trial in order, reporting what the runner reports: each
    question's share at a step fixed per question (Wilcoxon's pairing), or the objective so far
    at step = questions per task (successive halving's resource)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=pruner_factory())
    steps: dict[tuple[str, int], int] = {}
    result = Replay(name)
    for t in trials:  # one at a time, in number order, as a single worker runs them
        trial = study.ask()
        reported = 0
        for count in rungs:
            if per_question:
                for task, shares in t.shares.items():
                    for doc_id, share in zip(
                        t.doc_ids[task][reported:count], shares[reported:count], strict=True
                    ):
                        trial.report(share, steps.setdefault((task, doc_id), len(steps)))
            else:
                trial.report(t.objective(count), count)
            reported = count
            if count != rungs[-1] and trial.should_prune():  # the runner asks before each next rung
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                result.stopped[t.number] = count
                break
        else:
            study.tell(trial, t.objective(None))
    return result


def first_divergent_draw(trials: list[Trial], stopped: dict[int, int], startup: int) -> int | None:
    """The first trial number whose TPE draw would see a different good group than without
    pruning (None: every draw is the same). Ties keep trial order, as TPE's stable sort does."""
    for n in range(startup, len(trials)):
        done = trials[:n]
        gamma = tpe_good_group_size(n)
        full = {t.number for t in sorted(done, key=lambda t: -t.row["objective"])[:gamma]}
        kept = [t for t in done if t.number not in stopped]
        if len(kept) < gamma:
            return n
        if {t.number for t in sorted(kept, key=lambda t: -t.row["objective"])[:gamma]} != full:
            return n
    return None


def top(trials: list[Trial], k: int) -> list[Trial]:
    """The study's top K by the search objective, as ``confirm_at: end`` confirms them."""
    return sorted(trials, key=lambda t: -t.row["objective"])[:k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--study", required=True, help="a study scored without pruning")
    parser.add_argument("--space", type=Path, default=Path("search/demo.yaml"))
    parser.add_argument(
        "--as-run",
        help="the pruned study of the same space: its pruned trials are checked against the Wilcoxon replay",
    )
    parser.add_argument(
        "--halving", default="2,3", help="reduction factors of the successive-halving replays"
    )
    parser.add_argument(
        "--rungs",
        help="questions per task after which a pruner may stop a trial, e.g. 5,10,20 (default: the space's)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    space = load_space(args.space)
    board = Leaderboard(args.db)
    trials = load_trials(board, space, args.study)
    selection = space.selection
    chosen = [int(x) for x in args.rungs.split(",")] if args.rungs else selection.rungs
    rungs = [*chosen, space.limit]
    if sorted(set(rungs)) != rungs or rungs[0] <= 0:
        raise SystemExit(
            f"--rungs must be increasing question counts below the limit {space.limit}, got {rungs[:-1]}"
        )
    # The draws check knows TPE's default split only.
    checkable = space.sampler.name == "tpe" and "gamma" not in space.sampler.options
    startup = int(space.sampler.options.get("n_startup_trials", 10))
    replays = [
        replay("no pruning", trials, rungs[-1:], optuna.pruners.NopPruner, per_question=False),
        replay(
            f"Wilcoxon, p < {selection.p_threshold}",
            trials,
            rungs,
            lambda: make_pruner(selection),
            per_question=True,
        ),
    ]
    for eta in (int(x) for x in args.halving.split(",") if x):
        replays.append(
            replay(
                f"successive halving, reduction factor {eta}",
                trials,
                rungs,
                lambda eta=eta: optuna.pruners.SuccessiveHalvingPruner(
                    min_resource=rungs[0], reduction_factor=eta, min_early_stopping_rate=0
                ),
                per_question=False,
            )
        )
    for r in replays:
        r.draws_differ_from = first_divergent_draw(trials, r.stopped, startup) if checkable else -1

    as_run = check_as_run(board, args.as_run, trials, replays[1]) if args.as_run else ""

    measured = [t for t in trials if t.row["heldout_objective"] is not None]
    if not measured:
        raise SystemExit(f"study {args.study} confirmed no trial: no held-out cost to count")
    # Every confirmation scores the same held-out questions.
    per_confirmation = questions(board, measured[0].row["reused_from"] or measured[0].row["id"])
    references = reference_cost(board, [r for r in study_rows(board, args.study) if is_reference(r)])
    k = selection.confirm_top
    full_cost = None
    full_search = sum(len(ids) for t in trials for ids in t.doc_ids.values())
    lines = [
        f"Pruners replayed on study `{args.study}` ({len(trials)} trials scored on all {space.limit} "
        f"search questions per task; rungs {rungs[:-1]}; the study's top {k} confirmed), database `{args.db}`",
        "",
        "| pruner | stopped at "
        + " / ".join(str(c) for c in rungs[:-1])
        + " | search question-evaluations (share) "
        f"| total (+ held-out + references) | share of no pruning | top {k} confirmed | their held-out objective "
        "| draws as without pruning |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in replays:
        search = sum(sum(len(ids[: r.stopped.get(t.number)]) for ids in t.doc_ids.values()) for t in trials)
        chosen = top(r.finished(trials), k)
        total = search + per_confirmation * len(chosen) + references
        full_cost = full_cost or total
        at = " / ".join(str(sum(1 for c in r.stopped.values() if c == count)) for count in rungs[:-1])
        scores = ", ".join(
            f"#{t.number}: {t.row['heldout_objective']:.3f}"
            if t.row["heldout_objective"] is not None
            else f"#{t.number}: not measured"
            for t in chosen
        )
        same = {None: "every draw", -1: "not checked"}.get(
            r.draws_differ_from, f"until trial {r.draws_differ_from}"
        )
        lines.append(
            f"| {r.name} | {at} | {search} ({search / full_search:.0%}) | {total} | {total / full_cost:.0%} | "
            f"{', '.join(f'#{t.number}' for t in chosen)} | {scores} | {same} |"
        )
    if as_run:
        lines += ["", as_run]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


def check_as_run(board: Leaderboard, study: str, trials: list[Trial], wilcoxon: Replay) -> str:
    """Compare the Wilcoxon replay with the pruned study as it ran, and check the question
    order on it: a trial it stopped after N questions per task scored exactly the first N of
    each task's order."""
    by_number = {t.number: t for t in trials}
    run: dict[int, int] = {}
    for row in study_rows(board, study):
        if row["status"] != "pruned":
            continue
        run[row["trial_number"]] = count = row["fidelity"]
        scored = {(s["task"], s["doc_id"]) for s in board.samples([row["id"]], partitions=("search",))}
        ordered = by_number[row["trial_number"]].doc_ids
        if scored != {(task, i) for task, ids in ordered.items() for i in ids[:count]}:
            raise SystemExit(f"{row['name']}: its questions are not the first {count} of the study's order")
    verdict = "matches it" if run == wilcoxon.stopped else "differs: " + _stops(wilcoxon.stopped)
    return (
        f"Study `{study}` as run pruned {_stops(run)}, each on the first questions of the study's "
        f"order; the Wilcoxon replay {verdict}."
    )


def _stops(stopped: dict[int, int]) -> str:
    return ", ".join(f"#{n} at {c}" for n, c in sorted(stopped.items())) or "none"


if __name__ == "__main__":
    main()
