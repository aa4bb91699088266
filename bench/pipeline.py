"""One trial in the harness vs the same trial by hand (``mergekit-yaml`` + the ``lm_eval`` CLI).

By hand is what a user does without this tool: ``mergekit-yaml`` writes the merged model to
disk, then ``lm_eval --model hf`` scores it, once per few-shot setting of the suite (the CLI
takes one ``--num_fewshot`` per run). In the harness a trial is what a running search does for
its second and later trials: the donors are resident, lm-eval's tasks are built, the merge
runs in memory (mergekit's planner and methods), the model is scored by the shared-prefix
path and the result recorded in a DuckDB leaderboard. The first harness trial of the process
(donors loaded, tasks built) is timed apart and not counted in the medians.

Overhead: the share of a harness trial spent outside the model's forward passes (hooks on
the model) and outside the merge (``merge_in_memory``: mergekit's planner and methods), i.e.
lm-eval's request building, tokenising, collating and metrics, the shared-prefix path's own
bookkeeping (log-softmax of continuations, cache copies), building the model object from the
merged tensors, and recording.

Both sides score the same recipe on the same questions; every metric of every task must be
equal (exact: accuracies are means of per-question 0/1 values), else the run exits 1. Rounds
alternate which side goes first; the table gives medians and harness / by hand.

    python -m bench.pipeline                      # slerp and ties x demo proxy and H4 subset
    python -m bench.pipeline --rounds 1 --recipes slerp --settings proxy
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from bench.merge import METHODS
from bench.table import print_machine, print_markdown

REPO = Path(__file__).resolve().parents[1]
RECIPES = ("slerp", "ties")


@dataclass(frozen=True)
class Setting:
    label: str
    limit: int  # questions per task


SETTINGS = {
    "proxy": Setting("demo proxy 0-shot (ARC-E, ARC-C, HellaSwag, MMLU marketing)", 10),
    "h4": Setting("H4 subset (ARC-C 25-shot, HellaSwag 10-shot)", 3),
}


def _suite(name: str) -> Any:
    from harness.evaluate.suites import Part, Suite
    from harness.search.space import load_space

    if name == "proxy":
        return load_space(REPO / "search" / "demo.yaml").suite_refs[0]
    return Suite(
        "h4_subset",
        "ARC-Challenge 25-shot and HellaSwag 10-shot acc_norm (the H4 settings)",
        (
            Part("arc_challenge", 25, "acc_norm", {"arc_challenge": "lm_eval"}),
            Part("hellaswag", 10, "acc_norm", {"hellaswag": "lm_eval"}),
        ),
    )


def _run(cmd: list[str], what: str) -> float:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"bench.pipeline: {what} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def by_hand(
    merge_yaml: Path, plan: Any, limit: int, batch_size: int, work: Path
) -> tuple[float, dict[tuple[str, str, int | None], float]]:
    """``mergekit-yaml`` to disk, then one ``lm_eval`` run per few-shot setting; the scores."""
    out = work / "merged"
    bin_dir = Path(sys.executable).parent
    seconds = _run([str(bin_dir / "mergekit-yaml"), str(merge_yaml), str(out), "--quiet"], "mergekit-yaml")
    scores: dict[tuple[str, str, int | None], float] = {}
    for i, run in enumerate(plan.runs):
        results_dir = work / f"lm_eval{i}"
        cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={out}"]
        cmd += ["--device", "cpu", "--output_path", str(results_dir)]
        seconds += _run(cmd + plan.lm_eval_cli_args(run, limit=limit, batch_size=batch_size), "lm_eval")
        found = json.loads(sorted(results_dir.rglob("results_*.json"))[-1].read_text())
        for task, metrics in found["results"].items():
            for key, value in metrics.items():
                if key.endswith(",none") and "_stderr" not in key and isinstance(value, float):
                    scores[(task, key.split(",")[0], run.num_fewshot)] = value
    return seconds, scores


class Stopwatch:
    """Seconds spent inside the model's forward passes and inside the merge: the work a trial
    cannot avoid. Everything else in a trial is the harness's (and lm-eval's) overhead."""

    def __init__(self) -> None:
        self.forward = 0.0
        self.merge = 0.0
        self._entered = 0.0

    def watch_model(self, model: torch.nn.Module) -> None:
        def enter(*_: Any, **__: Any) -> None:
            self._entered = time.perf_counter()

        def leave(*_: Any, **__: Any) -> None:
            self.forward += time.perf_counter() - self._entered

        model.register_forward_pre_hook(enter)
        model.register_forward_hook(leave)

    @contextmanager
    def watch_merge(self) -> Iterator[None]:
        """Time ``merge_in_memory`` (mergekit's planner and merge methods) as the builder calls it."""
        from harness.merge import builder

        original = builder.merge_in_memory

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.merge += time.perf_counter() - started

        builder.merge_in_memory = timed
        try:
            yield
        finally:
            builder.merge_in_memory = original


def in_harness(
    scorer: Any, resolved: Any, pool: Any, watch: Stopwatch | None = None
) -> tuple[float, dict[tuple[str, str, int | None], float]]:
    """One trial: merge in memory, score, record, then what a search does at a trial's end."""
    from harness.memory import freeze_survivors
    from harness.merge import build_model
    from harness.record import TrialRecord

    watch = watch or Stopwatch()
    started = time.perf_counter()
    with watch.watch_merge():
        built = build_model(resolved, pool=pool, route="memory")
    watch.watch_model(built.model)
    record = TrialRecord(
        name=resolved.recipe.display_name(),
        source="bench",
        recipe_hash=resolved.recipe.content_hash(),
        merge_method=resolved.merge_config.merge_method,
        build_seconds=built.seconds,
    )
    result = scorer.score_and_record(built.model, built.tokenizer, record)
    del built
    freeze_survivors()  # as a search ends each trial
    seconds = time.perf_counter() - started
    scores = {(s.task, s.metric, s.num_fewshot): s.value for s in result.scores if s.value is not None}
    return seconds, scores


def _compare(ours: dict, theirs: dict, what: str) -> int:
    """Every metric lm-eval's CLI reported must be in the harness's result with the same value."""
    bad = [
        f"{task} {metric} {shots}-shot: harness {ours.get((task, metric, shots))} vs lm_eval {value}"
        for (task, metric, shots), value in theirs.items()
        if ours.get((task, metric, shots)) is None or abs(ours[(task, metric, shots)] - value) > 1e-12
    ]
    if bad or not theirs:
        sys.exit(f"bench.pipeline: {what}: scores differ:\n" + "\n".join(bad or ["lm_eval reported nothing"]))
    return len(theirs)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from harness.merge.routes import DonorPool
    from harness.pipeline import Scorer, Scoring
    from harness.recipe import Recipe
    from harness.recipe.validate import resolve_recipe
    from harness.record import Leaderboard

    torch.set_num_threads(args.threads)
    recipes = [r for r in args.recipes.split(",") if r]
    settings = [s for s in args.settings.split(",") if s]
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    board = Leaderboard(work / "leaderboard.duckdb")
    resolved = {
        r: resolve_recipe(
            Recipe.model_validate({"name": f"bench-{r}", "merge": {**METHODS[r], "dtype": "float32"}})
        )
        for r in recipes
    }
    merge_yaml = {}
    for r in recipes:
        merge_yaml[r] = work / f"{r}.yml"
        merge_yaml[r].write_text(
            yaml.safe_dump(resolved[r].merge_config.model_dump(mode="json", exclude_none=True))
        )
    scorers = {
        s: Scorer(Scoring(suites=[_suite(s)], limit=SETTINGS[s].limit, batch_size=args.batch_size), board)
        for s in settings
    }
    pool = DonorPool()
    pairs = [(r, s) for s in settings for r in recipes]
    first: dict[tuple[str, str], float] = {}
    for pair in pairs:  # warm-up: the process's first trial of each pair loads donors, builds tasks
        first[pair], _ = in_harness(scorers[pair[1]], resolved[pair[0]], pool)
    timed: dict[tuple[str, str, str], list[float]] = {}
    shares: dict[tuple[str, str], list[tuple[float, float]]] = {}
    compared: dict[tuple[str, str], int] = {}
    for round_ in range(args.rounds):
        for r, s in pairs:
            sides = ["harness", "by hand"] if round_ % 2 == 0 else ["by hand", "harness"]
            for side in sides:
                if side == "harness":
                    watch = Stopwatch()
                    seconds, ours = in_harness(scorers[s], resolved[r], pool, watch)
                    shares.setdefault((r, s), []).append((watch.forward / seconds, watch.merge / seconds))
                else:
                    with tempfile.TemporaryDirectory(dir=work) as scratch:
                        seconds, theirs = by_hand(
                            merge_yaml[r], scorers[s].plan, SETTINGS[s].limit, args.batch_size, Path(scratch)
                        )
                timed.setdefault((r, s, side), []).append(seconds)
                print(f"round {round_ + 1}: {r} / {s} / {side}: {seconds:.1f} s", file=sys.stderr, flush=True)
            compared[(r, s)] = _compare(ours, theirs, f"{r} on {s}")
    rows = []
    for r, s in pairs:
        mine, theirs_s = (
            statistics.median(timed[(r, s, "harness")]),
            statistics.median(timed[(r, s, "by hand")]),
        )
        forward = statistics.median(f for f, _ in shares[(r, s)])
        merge = statistics.median(m for _, m in shares[(r, s)])
        rows.append(
            {
                "recipe": r,
                "setting": SETTINGS[s].label,
                "questions": f"{SETTINGS[s].limit}/task",
                "by hand (s)": f"{theirs_s:.1f}",
                "harness (s)": f"{mine:.1f}",
                "harness / by hand": f"**{mine / theirs_s:.2f}**",
                "harness, first trial (s)": f"{first[(r, s)]:.1f}",
                "in forward": f"{forward:.0%}",
                "in merge": f"{merge:.0%}",
                "harness overhead": f"**{1 - forward - merge:.0%}**",
                "metrics equal": str(compared[(r, s)]),
            }
        )
    print(f"{args.rounds} rounds, {args.threads} threads, batch size {args.batch_size}, work dir {work}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--recipes", default=",".join(RECIPES), help="comma-separated subset of " + ",".join(RECIPES)
    )
    parser.add_argument(
        "--settings", default=",".join(SETTINGS), help="comma-separated subset of " + ",".join(SETTINGS)
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    from harness.memory import survivors_frozen

    print_machine()
    with survivors_frozen():  # each trial freezes its survivors, as in a search; undone at the end
        rows = run(args)
    print_markdown(rows)


if __name__ == "__main__":
    main()
