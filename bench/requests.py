"""A study's scoring calls with its requests reused vs rebuilt, side by side.

Every trial of a search scores the same questions with a new model: each rung's search
questions, then (for the best) the held-out ones. What a call costs beyond the model's own
forward passes is lm-eval's and the harness's work: requests (few-shot contexts, prompts),
tokenising, batching, metrics, recording. With the requests reused (the default: lm-eval's
requests built once per task and question set, each request's tokens kept per tokenizer), that
work is done by the first trial only; rebuilt is what lm-eval does on every call.

Each round loads a fresh model object (a new trial) and scores the held-out set and then a
rung, each with a fresh answer memory, once per side in alternating order. Forward passes are
timed with hooks on the model (synchronised on a GPU); "outside" is the call minus them. Every
score must be equal on both sides, else the run exits 1. The process's first call per side
(tasks built, data read) is reported apart.

    python -m bench.requests                                  # demo data, tiny random model
    python -m bench.requests --rounds 5 --device cuda --shape 1b7 --synthetic
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from bench.table import print_machine, print_markdown


@contextmanager
def forward_seconds(model: Any) -> Iterator[list[float]]:
    """Seconds spent inside ``model``'s top-level forward passes while the context is open."""
    spent = [0.0]
    started: list[float] = []
    cuda = next(model.parameters()).device.type == "cuda"

    def before(*_: Any) -> None:
        if cuda:
            torch.cuda.synchronize()
        started.append(time.perf_counter())

    def after(*_: Any) -> None:
        if cuda:
            torch.cuda.synchronize()
        spent[0] += time.perf_counter() - started.pop()

    hooks = [model.register_forward_pre_hook(before), model.register_forward_hook(after)]
    try:
        yield spent
    finally:
        for hook in hooks:
            hook.remove()


def _call(
    scorer: Any, path: Path, device: str, partition: str, count: int
) -> tuple[float, float, dict[str, Any]]:
    from harness.merge.loading import load_pretrained

    model, tokenizer, _ = load_pretrained(str(path), device=device)  # a new trial's model
    with forward_seconds(model) as spent:
        started = time.perf_counter()
        result = scorer.measure(model, tokenizer, partition, count=count, cache={})  # type: ignore[arg-type]
        total = time.perf_counter() - started
    del model, tokenizer
    return total, spent[0], result.summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", default="tiny", help="tiny | 1b7 | 7b (random weights)")
    parser.add_argument("--heldout", type=int, default=8, help="held-out questions per task")
    parser.add_argument("--rung", type=int, default=4, help="search questions per task of a rung")
    parser.add_argument(
        "--synthetic", action="store_true", help="the doctor's synthetic H4 data (no demo datasets needed)"
    )
    parser.add_argument("--model", default=None, help="a model folder to use instead of making one")
    parser.add_argument("--data-dir", default=None, help="benchmark data to use (e.g. bench.gpu's)")
    args = parser.parse_args(argv)

    import harness.evaluate.lm_eval_compat as compat
    from harness.doctor.data import write_benchmark_data
    from harness.doctor.models import make_model, resolve_shape
    from harness.pipeline import Scorer, Scoring
    from harness.placement import Placement
    from harness.record import Leaderboard
    from harness.search.space import SelectionSpec

    work = Path(tempfile.mkdtemp(prefix="bench-requests-"))
    placement = Placement.decide(args.device)
    shape = resolve_shape(args.model or args.shape)
    path = Path(args.model) if args.model else make_model(shape, work / "model", placement, seed=0)
    data = Path(args.data_dir) if args.data_dir else None
    if args.synthetic and data is None:
        data = work / "data"
        write_benchmark_data(["arc_challenge", "hellaswag", "mmlu", "truthfulqa_mc2"], data, questions=30)
    selection = SelectionSpec(rungs=[args.rung], heldout_limit=args.heldout)
    scorer = Scorer(
        Scoring(
            suites=["h4"],
            limit=args.heldout,
            data_dir=data,
            split=selection.split,
            heldout_limit=args.heldout,
            batch_size=8,
        ),
        Leaderboard(work / "board.duckdb"),
        placement=placement,
    )
    questions = {
        part: sum(len(ids) for ids in scorer.order.choose(part, count).values())  # type: ignore[arg-type]
        for part, count in (("heldout", args.heldout), ("search", args.rung))
    }
    print_machine()
    print(f"bench.requests: shape {args.shape}, tokenizer {shape.tokenizer_source}, {placement.describe()}")
    sides = {"rebuilt": False, "reused": True}
    timings: dict[tuple[str, str], list[tuple[float, float]]] = {}
    summaries: dict[str, list[dict[str, Any]]] = {}
    first: dict[str, float] = {}
    for rnd in range(args.rounds + 1):
        order = list(sides) if rnd % 2 == 0 else list(reversed(sides))
        for side in order:
            compat.REUSE_REQUESTS = sides[side]
            for partition, count in (("heldout", args.heldout), ("search", args.rung)):
                total, forward, summary = _call(scorer, path, placement.device, partition, count)
                summaries.setdefault(partition, []).append(summary)
                if rnd == 0:
                    first.setdefault(side, total)
                    continue
                timings.setdefault((side, partition), []).append((total, forward))
    compat.REUSE_REQUESTS = True
    unequal = [p for p, found in summaries.items() if any(s != found[0] for s in found)]
    rows = []
    for partition, label in (
        ("heldout", f"held-out, {args.heldout} per task"),
        ("search", f"rung, {args.rung} per task"),
    ):
        medians = {}
        for side in sides:
            got = timings[(side, partition)]
            medians[side] = (statistics.median(t for t, _ in got), statistics.median(t - f for t, f in got))
        rows.append(
            {
                "call": f"{label} ({questions[partition]} questions)",
                "rebuilt (before): total / outside forward": "{:.2f} / {:.2f} s".format(*medians["rebuilt"]),
                "reused (now): total / outside forward": "{:.2f} / {:.2f} s".format(*medians["reused"]),
                "reused / rebuilt: total": f"{medians['reused'][0] / medians['rebuilt'][0]:.2f}",
                "outside forward": f"{medians['reused'][1] / medians['rebuilt'][1]:.2f}",
            }
        )
    print_markdown(rows)
    print(
        f"first call of the process (tasks built, data read): rebuilt {first['rebuilt']:.1f} s, "
        f"reused {first['reused']:.1f} s; medians of {args.rounds} rounds"
    )
    if unequal:
        print(f"SCORES DIFFER between the sides: {unequal}", file=sys.stderr)
        return 1
    print("every score equal on both sides")
    return 0


if __name__ == "__main__":
    sys.exit(main())
