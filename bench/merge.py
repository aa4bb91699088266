"""Merge time per method on the demo models vs the memory-bandwidth bound.

Every method runs through the harness's in-memory route (mergekit's own planner and merge
methods, donor weights resident in a :class:`~harness.build.merge.DonorPool`, as a search
does), on the demo base and its two DPO donors, in float32. The bound is the time to move the
bytes a merge must touch at this machine's measured copy bandwidth: every input tensor read
once and the output written once. A merge far above its bound spends its time computing
(sorting, sampling, normalising), not moving memory. Rounds alternate the methods' order;
the table gives medians.

    python -m bench.merge                 # the demo models, 3 rounds
    python -m bench.merge --rounds 5 --methods ties,dare_ties
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Any

import torch

from bench.table import print_machine, print_markdown

BASE = "demo:smollm2-135m-instruct"
SCIENCE = "demo:smollm2-135m-dpo-science"
COMMONSENSE = "demo:smollm2-135m-dpo-commonsense"
_DONORS = [
    {"model": SCIENCE, "parameters": {"weight": 0.6, "density": 0.5}},
    {"model": COMMONSENSE, "parameters": {"weight": 0.4, "density": 0.5}},
]

# One representative recipe per method, shaped like search/demo.yaml's candidates.
METHODS: dict[str, dict[str, Any]] = {
    "linear": {
        "merge_method": "linear",
        "models": [
            {"model": m, "parameters": {"weight": w}}
            for m, w in ((BASE, 0.4), (SCIENCE, 0.3), (COMMONSENSE, 0.3))
        ],
    },
    "slerp": {
        "merge_method": "slerp",
        "base_model": SCIENCE,
        "models": [{"model": SCIENCE}, {"model": COMMONSENSE}],
        "parameters": {"t": 0.5},
    },
    "task_arithmetic": {
        "merge_method": "task_arithmetic",
        "base_model": BASE,
        "models": [{"model": d["model"], "parameters": {"weight": 2.0}} for d in _DONORS],
    },
    "ties": {"merge_method": "ties", "base_model": BASE, "models": _DONORS},
    "dare_ties": {"merge_method": "dare_ties", "base_model": BASE, "models": _DONORS},
    "della": {
        "merge_method": "della",
        "base_model": BASE,
        "models": [{**d, "parameters": {**d["parameters"], "epsilon": 0.1}} for d in _DONORS],
    },
    "passthrough": {  # SOLAR-style depth up-scaling, 30 -> 48 layers
        "merge_method": "passthrough",
        "slices": [
            {"sources": [{"model": BASE, "layer_range": [0, 24]}]},
            {"sources": [{"model": BASE, "layer_range": [6, 30]}]},
        ],
    },
}


def copy_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes per second of a large tensor copy (read + write counted), best of ``repeats``."""
    src = torch.ones(megabytes * 2**20 // 4)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - started)
    return 2 * src.numel() * 4 / best


def _nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def touched_bytes(
    inputs: list[dict[str, torch.Tensor]], passthrough: bool, out: dict[str, torch.Tensor]
) -> int:
    """Bytes a merge must move: every tensor of every model it names read once (a passthrough
    reads only the layers it copies: one input tensor per output tensor) plus the output."""
    written = _nbytes(out)
    if passthrough:
        return 2 * written
    return sum(_nbytes(tensors) for tensors in inputs) + written


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from harness.build.merge import DonorPool, merge_in_memory
    from harness.recipe import Recipe
    from harness.recipe.validate import resolve_recipe

    torch.set_num_threads(args.threads)
    names = [m for m in args.methods.split(",") if m] if args.methods else list(METHODS)
    resolved = {
        name: resolve_recipe(
            Recipe.model_validate({"name": f"bench-{name}", "merge": {**METHODS[name], "dtype": "float32"}})
        )
        for name in names
    }
    pool = DonorPool()
    for name in names:  # load every model before timing: a search keeps them resident
        for ref in resolved[name].merge_config.referenced_models():
            pool.loader(ref)
    bandwidth = copy_bandwidth()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    touched: dict[str, int] = {}
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else list(reversed(names)):
            gc.collect()
            started = time.perf_counter()
            out, _ = merge_in_memory(resolved[name].merge_config, pool, seed=0)
            seconds[name].append(time.perf_counter() - started)
            if name not in touched:
                config = resolved[name].merge_config
                inputs = [pool.state_dict(ref) for ref in config.referenced_models()]
                touched[name] = touched_bytes(inputs, name == "passthrough", out)
            del out
    rows = []
    for name in names:
        median = statistics.median(seconds[name])
        bound = touched[name] / bandwidth
        rows.append(
            {
                "method": name,
                "GB touched": f"{touched[name] / 1e9:.2f}",
                "bound (s)": f"{bound:.2f}",
                "median (s)": f"{median:.2f}",
                "× bound": f"{median / bound:.0f}×",
            }
        )
    print(
        f"copy bandwidth: {bandwidth / 1e9:.1f} GB/s (read + write), {args.rounds} rounds, {args.threads} threads"
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--methods", default="", help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    print_machine()
    print_markdown(run(args))


if __name__ == "__main__":
    main()
