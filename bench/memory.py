"""Peak memory of a search vs the bytes of the models it must hold.

Runs ``harness search`` on a space in a child process (its own study, leaderboard and report
folder under a temporary directory) and reads the child's peak resident set size. What the
search must hold at its peak is counted from the space: the donor weights it keeps resident
(every model its merges read), the largest trial model it can build (depth up-scaling makes
it larger than its sources), and, when the space aligns with full fine-tuning, the DPO
reference copy, the gradients and Adam's two moments of that model.
The ratio is the harness's (and its libraries') memory on top of the weights: Python,
torch, lm-eval's datasets, activations, the few-shot and request caches.

    python -m bench.memory                          # search/demo.yaml, 3 trials (~12 min)
    python -m bench.memory --space search/demo.yaml --budget 5
    python -m bench.memory --only ties+dpo --budget 2   # the demo's heaviest trial (~6 min)

It also samples the child's RSS every 50 ms and prints the stages (the lines the search
logged) during which it was highest, so a peak is put down to a stage, not guessed at.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
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


def layer_bytes(ref: str) -> tuple[int, int]:
    """(bytes outside the decoder layers, bytes of one decoder layer) of a model as stored,
    read from its safetensors headers: what a passthrough merge copies per layer it lists."""
    from harness.assets import resolve_model
    from harness.assets.checkpoint import safetensors_header

    outside = inside = 0
    layers: set[str] = set()
    for file in Path(resolve_model(ref)).glob("*.safetensors"):
        for name, info in safetensors_header(file).items():
            begin, end = info["data_offsets"]
            match = re.search(r"\.layers\.(\d+)\.", name)
            if match:
                inside += end - begin
                layers.add(match.group(1))
            else:
                outside += end - begin
    return outside, inside // max(len(layers), 1)


def largest_passthrough(template: dict) -> int:
    """Bytes of the largest model a passthrough template can build: every slice at its longest
    (the lowest start with the highest end, which neither end of every range gives; depth
    up-scaling makes models larger than its sources), the embeddings and head of the first
    source once."""
    from harness.search.distributions import EndValues, materialize

    total = 0
    first: tuple[int, int] | None = None
    for piece in template.get("slices", []):
        source = piece["sources"][0]
        outside, per_layer = layer_bytes(source["model"])
        first = first or (outside, per_layer)
        start, end = source["layer_range"]
        lowest, highest = materialize(start, EndValues("low"), ""), materialize(end, EndValues("high"), "")
        total += (highest - lowest) * per_layer
    return total + (first[0] if first else 0)


def must_hold(space_path: Path) -> tuple[int, str]:
    """(bytes, how they were counted) for a space's peak: the models its merges read (kept
    resident) + the largest trial model, and a full-fine-tune alignment's reference, gradients
    and two Adam moments of it."""
    from harness.recipe.validate import weight_references
    from harness.search.space import load_space

    space = load_space(space_path)
    templates = [space.template(method) for method in space.methods]
    # The build keeps a model resident from the first merge that reads it (DonorPool).
    donors = {ref: model_bytes(ref) for template in templates for ref in weight_references(template)}
    trial = max(donors.values())  # a merge of these models is their size ...
    for template in templates:  # ... unless depth up-scaling makes it larger
        if template.get("merge_method") == "passthrough":
            trial = max(trial, largest_passthrough(template))
    full_ft = any(t is not None and t.get("lora") is None for t in (space.align or {}).values())
    copies = 5 if full_ft else 1  # model + reference + gradients + Adam exp_avg, exp_avg_sq
    total = sum(donors.values()) + copies * trial
    how = f"{len(donors)} resident models + {copies} × the largest trial model ({trial / 2**30:.2f} GiB)" + (
        " (model, DPO reference, gradients, Adam's two moments)" if full_ft else ""
    )
    return total, how


def reduced_space(space: Path, only: str, folder: Path) -> Path:
    """A copy of a space file with one merge method and one alignment candidate (or none) and
    no reference models: every trial is then the same kind, e.g. the heaviest one."""
    import yaml

    method, _, align = only.partition("+")
    data = yaml.safe_load(space.read_text())
    if method not in data.get("methods", {}) or (align and align not in (data.get("align") or {})):
        sys.exit(
            f"--only {only}: {space} has methods {list(data['methods'])}, align {list(data.get('align') or {})}"
        )
    data["methods"] = {method: data["methods"][method]}
    data["align"] = {align: data["align"][align]} if align else None
    data["references"] = []
    out = folder / f"{data['name']}-{method}{'-' + align if align else ''}.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


class RssTimeline:
    """The child's resident set size sampled every 50 ms beside the lines it logs, so a peak
    can be put down to a stage ("after the line `trial 1: aligning`") instead of guessed at."""

    def __init__(self, child: subprocess.Popen[bytes]) -> None:
        self.child = child
        self.start = time.perf_counter()
        self.samples: list[tuple[float, int]] = []
        self.lines: list[tuple[float, str]] = []
        self._done = threading.Event()
        self._threads = [threading.Thread(target=self._sample), threading.Thread(target=self._read)]
        for thread in self._threads:
            thread.start()

    def _sample(self) -> None:
        status = Path(f"/proc/{self.child.pid}/status")
        while not self._done.wait(0.05):
            try:
                text = status.read_text()
            except OSError:
                return  # the child has exited
            kib = next((int(line.split()[1]) for line in text.splitlines() if line.startswith("VmRSS:")), 0)
            self.samples.append((time.perf_counter() - self.start, kib * 1024))

    def _read(self) -> None:
        assert self.child.stderr is not None
        for raw in self.child.stderr:
            # Progress bars redraw with carriage returns; a stage is a line that is not a bar.
            for part in raw.decode(errors="replace").replace("\r", "\n").splitlines():
                if part.strip() and "it/s]" not in part and "%|" not in part:
                    self.lines.append((time.perf_counter() - self.start, part.strip()))

    def stop(self) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join()

    def describe(self, top: int = 6, first: int = 14) -> str:
        """The stages (logged lines) with the highest RSS while they ran, and RSS at the first line."""
        if not self.samples:
            return "no RSS samples (the child ended within 50 ms?)"
        marks = [(0.0, "(start-up, imports)"), *self.lines]
        stages: list[tuple[int, float, str]] = []
        for i, (at, line) in enumerate(marks):
            until = marks[i + 1][0] if i + 1 < len(marks) else float("inf")
            during = [rss for t, rss in self.samples if at <= t < until]
            if during:
                stages.append((max(during), at, line))
        out = []
        if self.lines:  # the imports are done by then: the libraries' own share
            at, line = self.lines[0]
            out.append(f"RSS when the first line was logged ({line[:60]!r}): {_gib(self._rss_at(at))}")
        out.append("highest RSS by stage (the logged line it followed):")
        for rss, at, line in sorted(stages, reverse=True)[:top]:
            out.append(f"  {_gib(rss)} at {at:6.1f} s  {line[:100]}")
        out.append(f"the first {first} stages in order (RSS when each began -> highest during it):")
        for rss, at, line in stages[:first]:
            out.append(f"  {_gib(self._rss_at(at))} -> {_gib(rss)}  {at:6.1f} s  {line[:100]}")
        return "\n".join(out)

    def _rss_at(self, at: float) -> int:
        return next((rss for t, rss in self.samples if t >= at), self.samples[-1][1])


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default=str(_REPO / "search/demo.yaml"))
    parser.add_argument("--budget", type=int, default=3)
    parser.add_argument(
        "--only",
        metavar="METHOD[+ALIGN]",
        help="Reduce the space to one merge method and one alignment candidate, without "
        "reference models: e.g. ties+dpo, the demo's heaviest trial.",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        if args.only:
            args.space = str(reduced_space(Path(args.space), args.only, Path(tmp)))
        need, how = must_hold(Path(args.space))
        cmd = [
            sys.executable,
            "-m",
            "bench.stages",  # the harness CLI, with a line at each stage of a trial
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
        child = subprocess.Popen(
            cmd,
            cwd=_REPO,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        timeline = RssTimeline(child)
        returncode = child.wait()
        timeline.stop()
        wall = time.perf_counter() - started
    if returncode != 0:
        last = timeline.lines[-1][1] if timeline.lines else "(nothing on stderr)"
        sys.exit(f"search failed ({returncode}): {last}")
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
    print()
    print(timeline.describe())


if __name__ == "__main__":
    main()
