"""Merge time per method on the demo models vs the memory-bandwidth bound.

Every method runs through the harness's in-memory route (mergekit's own planner and merge
methods, donor weights resident in a :class:`~harness.merge.routes.DonorPool`, as a search
does), on the demo base and its two DPO donors, in float32. The bound is the time to move the
bytes a merge must touch at this machine's measured copy bandwidth: every input tensor read
once and the output written once. A merge far above its bound spends its time computing
(sorting, sampling, normalising), not moving memory. Rounds alternate the methods' order;
the table gives medians.

    python -m bench.merge                 # the demo models, 3 rounds
    python -m bench.merge --rounds 5 --methods ties,dare_ties
    python -m bench.merge --device cuda --dtype bfloat16 --models BASE,DONOR,DONOR   # any shape
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


def methods(base: str, first: str, second: str, layers: int = 30) -> dict[str, dict[str, Any]]:
    """One representative recipe per method over ``base`` and two donors, shaped like
    search/demo.yaml's candidates (the passthrough a SOLAR-style up-scaling of ``layers``)."""
    donors = [
        {"model": first, "parameters": {"weight": 0.6, "density": 0.5}},
        {"model": second, "parameters": {"weight": 0.4, "density": 0.5}},
    ]
    cut = layers // 5
    return {
        "linear": {
            "merge_method": "linear",
            "models": [
                {"model": m, "parameters": {"weight": w}}
                for m, w in ((base, 0.4), (first, 0.3), (second, 0.3))
            ],
        },
        "slerp": {
            "merge_method": "slerp",
            "base_model": first,
            "models": [{"model": first}, {"model": second}],
            "parameters": {"t": 0.5},
        },
        "task_arithmetic": {
            "merge_method": "task_arithmetic",
            "base_model": base,
            "models": [{"model": d["model"], "parameters": {"weight": 2.0}} for d in donors],
        },
        "ties": {"merge_method": "ties", "base_model": base, "models": donors},
        "dare_ties": {"merge_method": "dare_ties", "base_model": base, "models": donors},
        "della": {
            "merge_method": "della",
            "base_model": base,
            "models": [{**d, "parameters": {**d["parameters"], "epsilon": 0.1}} for d in donors],
        },
        "passthrough": {  # SOLAR-style depth up-scaling: 30 -> 48 layers for the demo
            "merge_method": "passthrough",
            "slices": [
                {"sources": [{"model": base, "layer_range": [0, layers - cut]}]},
                {"sources": [{"model": base, "layer_range": [cut, layers]}]},
            ],
        },
    }


METHODS = methods(BASE, SCIENCE, COMMONSENSE)


def copy_bandwidth(megabytes: int = 512, repeats: int = 5, device: str = "cpu") -> float:
    """Bytes per second of a large tensor copy on ``device`` (read + write counted), best of
    ``repeats``."""
    src = torch.ones(megabytes * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best = min(best, time.perf_counter() - started)
    return 2 * src.numel() * 4 / best


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


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
    from harness.merge.routes import DonorPool, merge_in_memory
    from harness.recipe import Recipe
    from harness.recipe.validate import resolve_recipe

    torch.set_num_threads(args.threads)
    device = args.device
    recipes = METHODS
    if args.models:
        base, first, second = args.models.split(",")
        from transformers import AutoConfig

        recipes = methods(base, first, second, AutoConfig.from_pretrained(base).num_hidden_layers)
    names = [m for m in args.methods.split(",") if m] if args.methods else list(recipes)
    resolved = {
        name: resolve_recipe(
            Recipe.model_validate({"name": f"bench-{name}", "merge": {**recipes[name], "dtype": args.dtype}})
        )
        for name in names
    }
    pool = DonorPool(device)
    for name in names:  # load every model before timing: a search keeps them resident
        for ref in resolved[name].merge_config.referenced_models():
            pool.loader(ref)
    bandwidth = copy_bandwidth(device=device)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    touched: dict[str, int] = {}
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else list(reversed(names)):
            gc.collect()
            _sync(device)
            started = time.perf_counter()
            out, _ = merge_in_memory(resolved[name].merge_config, pool, seed=0, device=device)
            _sync(device)
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
        f"copy bandwidth on {device}: {bandwidth / 1e9:.1f} GB/s (read + write), {args.rounds} rounds, "
        f"{args.threads} threads, {args.dtype}; donors on {sorted(set(pool.where.values()))}"
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--methods", default="", help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--models", default="", help="BASE,DONOR,DONOR folders (default: the demo's three)")
    args = parser.parse_args(argv)
    print_machine()
    print_markdown(run(args))


if __name__ == "__main__":
    main()
