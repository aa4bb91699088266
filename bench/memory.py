"""Peak memory of a search vs the bytes of the models it must hold.

Runs ``harness search`` on a space in a child process (its own study, leaderboard and report
folder under a temporary directory) and reads the child's peak resident set size. What the
search must hold at its peak is counted from the space: the donor weights it keeps resident
(every model the space names), one trial model, and, when the space aligns with full
fine-tuning, the DPO reference copy, the gradients and Adam's two moments of that model.
The ratio is the harness's (and its libraries') memory on top of the weights: Python,
torch, lm-eval's datasets, activations, the few-shot and request caches.

    python -m bench.memory                          # search/demo.yaml, 3 trials (~12 min)
    python -m bench.memory --space search/demo.yaml --budget 5
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.table import print_machine, print_markdown

_REPO = Path(__file__).resolve().parents[1]


def model_bytes(ref: str) -> int:
    """Bytes of a model's weights as stored (safetensors / bin files in its folder)."""
    from harness.assets import resolve_model

    folder = Path(resolve_model(ref))
    files = [*folder.glob("*.safetensors"), *folder.glob("*.bin")]
    return sum(f.stat().st_size for f in files)


def must_hold(space_path: Path) -> tuple[int, str]:
    """(bytes, how they were counted) for a space's peak: resident donors + a trial model, and
    a full-fine-tune alignment's reference, gradients and two Adam moments of it."""
    from harness.search.space import load_space

    space = load_space(space_path)
    donors = {alias: model_bytes(ref) for alias, ref in space.models.items()}
    trial = max(donors.values())  # a merge of these models (depth up-scaling can be larger)
    full_ft = any(t is not None and t.get("lora") is None for t in (space.align or {}).values())
    copies = 5 if full_ft else 1  # model + reference + gradients + Adam exp_avg, exp_avg_sq
    total = sum(donors.values()) + copies * trial
    how = f"{len(donors)} resident models + {copies} × one trial model" + (
        " (model, DPO reference, gradients, Adam's two moments)" if full_ft else ""
    )
    return total, how


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default=str(_REPO / "search/demo.yaml"))
    parser.add_argument("--budget", type=int, default=3)
    args = parser.parse_args(argv)
    need, how = must_hold(Path(args.space))
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "harness.cli",
            "search",
            "--space",
            args.space,
            "--budget",
            str(args.budget),
            "--db",
            f"{tmp}/board.duckdb",
            "--storage",
            f"{tmp}/study.journal",
            "--no-report",
        ]
        started = time.perf_counter()
        done = subprocess.run(
            cmd, cwd=_REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True
        )
        wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"search failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    print_machine()
    print_markdown(
        [
            {
                "space": Path(args.space).name,
                "trials": args.budget,
                "wall": f"{wall:.0f} s",
                "peak RSS": f"{peak / 2**30:.2f} GiB",
                "models it must hold": f"{need / 2**30:.2f} GiB ({how})",
                "ratio": f"**{peak / need:.2f}×**",
            }
        ]
    )


if __name__ == "__main__":
    main()
