"""DPO training time: TRL's fused LM head as shipped vs on the labelled positions only, or
without vs with gradient checkpointing.

Each round trains the same DPO run twice from the same loaded starting weights (a fresh copy
each time), in alternating order. ``--compare head`` (default): once with TRL's behaviour off
CUDA (the LM head and its log-softmax over every position of the batch, prompt and padding
included) and once inside ``harness.align.trl_compat.labelled_positions_only`` (what the
harness does). ``--compare checkpointing``: the harness's run without and with
``gradient_checkpointing: true`` (what the memory it saves costs in time; the memory itself is
``bench.memory``'s). Medians are printed with their ratio; every round checks that the two runs
logged the same loss and rewards (within 1e-4), or the run exits 1.

    python -m bench.align                       # the demo space's DPO at its largest (5 steps)
    python -m bench.align --rounds 5 --steps 3
    python -m bench.align --compare checkpointing
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


def demo_config(steps: int, checkpointing: bool = False) -> Any:
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
        gradient_checkpointing=checkpointing,
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
    parser.add_argument("--compare", choices=("head", "checkpointing"), default="head")
    args = parser.parse_args(argv)

    from harness.merge.loading import load_pretrained

    start, tokenizer, _ = load_pretrained(args.model, device="cpu", dtype="float32")
    # arm -> (TRL's own LM head positions, gradient checkpointing); the first arm is the baseline
    arms = {
        "head": {"TRL as shipped": (True, False), "labelled positions only": (False, False)},
        "checkpointing": {"no checkpointing": (False, False), "gradient checkpointing": (False, True)},
    }[args.compare]
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    worst = 0.0
    for round_no in range(args.rounds):
        order = list(arms) if round_no % 2 == 0 else list(reversed(arms))
        metrics: dict[str, dict[str, float]] = {}
        for arm in order:
            stock, checkpointing = arms[arm]
            config = demo_config(args.steps, checkpointing)
            seconds, metrics[arm] = timed_run(start, tokenizer, config, stock=stock)
            times[arm].append(seconds)
            print(f"round {round_no + 1} {arm}: {seconds:.1f} s {metrics[arm]}", file=sys.stderr, flush=True)
        first, second = metrics.values()
        worst = max(worst, *(abs(first[k] - second[k]) for k in COMPARED))

    print_machine()
    (base_arm, base), (new_arm, new) = ((arm, statistics.median(t)) for arm, t in times.items())
    print_markdown(
        [
            {
                "run": f"DPO, {args.steps} steps × 4 pairs, max_length 128, full fine-tune",
                f"{base_arm} (median)": f"{base:.1f} s",
                f"{new_arm} (median)": f"{new:.1f} s",
                "time ratio (first / second)": f"**{base / new:.2f}×**",
                "max |Δ| loss/rewards": f"{worst:.1e}",
            }
        ]
    )
    if worst > 1e-4:
        print(f"bench.align: the two runs disagree by {worst:.2e} (> 1e-4)", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
