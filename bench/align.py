"""DPO training time: TRL's fused LM head as shipped vs on the labelled positions only.

Each round trains the same DPO run twice from the same loaded starting weights (a fresh copy
each time), once with TRL's behaviour off CUDA (the LM head and its log-softmax over every
position of the batch, prompt and padding included) and once inside
``harness.align.trl_compat.labelled_positions_only`` (what the harness does), in alternating
order. Medians are printed with their ratio; every round checks that the two runs logged the
same loss and rewards (within 1e-4), or the run exits 1.

    python -m bench.align                       # the demo space's DPO at its largest (5 steps)
    python -m bench.align --rounds 5 --steps 3
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time
from typing import Any

from bench.table import print_machine, print_markdown

COMPARED = ("loss", "rewards_chosen", "rewards_rejected", "rewards_margins")


def demo_config(steps: int) -> Any:
    """The demo space's DPO candidate (search/demo.yaml) at fixed hyperparameters."""
    from harness.align import AlignConfig

    return AlignConfig(
        method="dpo",
        data=[{"path": "demo:sciq", "limit": 200}, {"path": "demo:piqa", "limit": 200}],
        beta=0.1,
        learning_rate=1e-4,
        max_steps=steps,
        per_device_train_batch_size=4,
        warmup_ratio=0.0,
        max_length=128,
    )


def timed_run(start: Any, tokenizer: Any, config: Any, *, stock: bool) -> tuple[float, dict[str, float]]:
    import harness.align.trainer as trainer_module
    from harness.align import align_model

    model = copy.deepcopy(start)
    context = contextlib.nullcontext
    original = trainer_module.labelled_positions_only
    if stock:
        trainer_module.labelled_positions_only = context  # TRL's own choice of positions
    try:
        began = time.perf_counter()
        result = align_model(model, tokenizer, config, device="cpu", seed=0)
        seconds = time.perf_counter() - began
    finally:
        trainer_module.labelled_positions_only = original
    step = result.steps[0]
    return seconds, {k: float(step[k]) for k in COMPARED}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="DPO optimizer steps per run")
    parser.add_argument("--model", default="demo:smollm2-135m-instruct")
    args = parser.parse_args(argv)

    from harness.build.loading import load_pretrained

    start, tokenizer, _ = load_pretrained(args.model, device="cpu", dtype="float32")
    config = demo_config(args.steps)
    times: dict[str, list[float]] = {"stock": [], "labelled": []}
    worst = 0.0
    for round_no in range(args.rounds):
        arms = ["stock", "labelled"] if round_no % 2 == 0 else ["labelled", "stock"]
        metrics: dict[str, dict[str, float]] = {}
        for arm in arms:
            seconds, metrics[arm] = timed_run(start, tokenizer, config, stock=arm == "stock")
            times[arm].append(seconds)
            print(f"round {round_no + 1} {arm}: {seconds:.1f} s {metrics[arm]}", file=sys.stderr, flush=True)
        worst = max(worst, *(abs(metrics["stock"][k] - metrics["labelled"][k]) for k in COMPARED))

    print_machine()
    stock, labelled = statistics.median(times["stock"]), statistics.median(times["labelled"])
    print_markdown(
        [
            {
                "run": f"DPO, {args.steps} steps × 4 pairs, max_length 128, full fine-tune",
                "TRL as shipped (median)": f"{stock:.1f} s",
                "labelled positions only (median)": f"{labelled:.1f} s",
                "speed-up": f"**{stock / labelled:.2f}×**",
                "max |Δ| loss/rewards": f"{worst:.1e}",
            }
        ]
    )
    if worst > 1e-4:
        print(f"bench.align: the two runs disagree by {worst:.2e} (> 1e-4)", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
