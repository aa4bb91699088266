"""The GPU benchmark, in one call: what a first session on a GPU box runs.

For each shape (random weights, nothing downloaded; synthetic H4 data in the real schemas):

1. ``harness doctor`` (a search end to end: references, merge, LoRA DPO, H4 settings in rungs,
   keep and confirm): every stage's device, dtype, seconds and peak GPU memory, and the GPU's
   busy share through the search (NVML or ``nvidia-smi``);
2. ``bench.scoring``: the shared-prefix path vs stock ``HFLM`` on the H4 settings;
3. ``bench.requests``: a study's scoring calls with requests reused vs rebuilt;

and for the last shape, ``bench.merge``: seconds per merge method against the device's copy
bandwidth. The doctor's models are the inputs of 2-4. Everything lands in one folder
(``--work``); the Markdown goes to stdout, ready for bench/README.md.

    python -m bench.gpu                                   # cuda, shapes 1b7 and 7b
    python -m bench.gpu --device cpu --shapes tiny --quick   # what the CPU test runs

On a machine with no registry, install the wheel set first (``make gpu-wheels`` here, carried
there; bench/README.md "A GPU").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

H4_AND_PROXY = ["arc_challenge", "arc_easy", "hellaswag", "mmlu", "truthfulqa_mc2"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--shapes", default="1b7,7b")
    parser.add_argument(
        "--work", default=None, help="folder for models, data and boards (default: a temp one)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="one round each, fewest questions (the CPU test)"
    )
    args = parser.parse_args(argv)

    from bench import merge, requests, scoring
    from harness.doctor import render, run_doctor
    from harness.doctor.data import write_benchmark_data
    from harness.doctor.models import make_model, resolve_shape
    from harness.placement import Placement

    placement = Placement.decide(args.device)
    dtype = placement.dtype_name
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-gpu-"))
    rounds = "1" if args.quick else "3"
    out = Console(width=200)
    failed: list[str] = []
    shapes = [s for s in args.shapes.split(",") if s]
    for shape in shapes:
        folder = work / shape
        started = time.perf_counter()
        print(f"\n## shape {shape} on {placement.describe()}\n", flush=True)
        report = run_doctor(
            device=placement.device,
            shape=shape,
            trials=2,
            questions=2 if args.quick else 4,
            keep=folder,
            console=Console(stderr=True),
        )
        render(report, out)
        if not report.ok:
            failed.append(f"doctor {shape}")
        models = folder / "models"
        data = folder / "bench-data"
        if not data.is_dir():
            write_benchmark_data(H4_AND_PROXY, data, questions=30)
        print(f"\n### bench.scoring ({shape}, {dtype})\n", flush=True)
        try:
            scoring.main(
                [
                    "--model", str(models / "base"),
                    "--device", placement.device,
                    "--dtype", dtype,
                    "--data-dir", str(data),
                    "--rounds", rounds,
                    "--stock-batch-sizes", "8" if args.quick else "8,32",
                    *(["--questions", "2"] if args.quick else []),
                ]
            )  # fmt: skip
        except SystemExit as err:  # it exits when a float32 answer differs
            failed.append(f"bench.scoring {shape}: {err}")
        print(f"\n### bench.requests ({shape})\n", flush=True)
        quick = ["--heldout", "2", "--rung", "1"] if args.quick else []
        reuse = ["--model", str(models / "base"), "--data-dir", str(data)]
        if requests.main(["--device", placement.device, *reuse, "--rounds", rounds, *quick]):
            failed.append(f"bench.requests {shape}")
        print(f"\n{shape}: {time.perf_counter() - started:.0f} s in all", flush=True)
    last = work / shapes[-1] / "models"
    # mergekit refuses one model twice among a merge's inputs: a third random model
    make_model(resolve_shape(shapes[-1]), last / "third", placement, seed=2)
    print(f"\n### bench.merge ({shapes[-1]}, {dtype})\n", flush=True)
    merge.main(
        [
            "--device", placement.device,
            "--dtype", dtype,
            "--rounds", rounds,
            "--models", f"{last / 'base'},{last / 'donor'},{last / 'third'}",
            *(["--methods", "linear,ties"] if args.quick else []),
        ]
    )  # fmt: skip
    if failed:
        print(f"\nbench.gpu: not ok: {'; '.join(failed)}", file=sys.stderr)
        return 1
    print(f"\nbench.gpu: ok ({work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
