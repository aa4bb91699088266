"""``harness doctor``: what a user runs first on a new machine, and what CI runs on CPU.

It builds random-weight models of a real shape (:mod:`harness.doctor.models`) and synthetic
benchmark data in the real schemas (:mod:`harness.doctor.data`), then runs a small search end
to end through the same code as ``harness search``: reference models loaded and scored, each
trial merged in memory, aligned with LoRA DPO and scored on H4 settings (25-shot ARC-C,
10-shot HellaSwag, 5-shot MMLU over 57 subjects, TruthfulQA mc2) in rungs, the best one kept
and confirmed on held-out questions, into a throw-away leaderboard. Every stage reports where
it computed (:mod:`harness.stages`), and the doctor prints, per stage: device, dtype, seconds,
peak GPU memory and the scoring path; the GPU's busy share over the run; and a verdict. It
exits 0 when every stage ran on the chosen device and every score took the shared-prefix path,
1 otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.doctor.data import write_benchmark_data, write_preference_pairs
from harness.doctor.models import SHAPES, make_model, resolve_shape
from harness.evaluate.fast_lm import SHARED_PREFIX
from harness.placement import Placement, same_device
from harness.stages import StageLog, listening, stage

H4_TASKS = ("arc_challenge", "hellaswag", "mmlu", "truthfulqa_mc2")

__all__ = ["SHAPES", "DoctorReport", "run_doctor"]


@dataclass
class DoctorReport:
    placement: Placement
    shape: str
    log: StageLog
    seconds: float
    busy_share: float | None  # the GPU's mean utilisation over the run; None: not measured
    problems: list[str] = field(default_factory=list)
    num_parameters: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def run_doctor(
    *,
    device: str | None = None,
    shape: str = "tiny",
    dtype: str = "auto",
    trials: int = 2,
    questions: int = 4,
    tokenizer: str | None = None,
    keep: Path | None = None,
    console: Console | None = None,
) -> DoctorReport:
    """Run the doctor's search; ``keep``: a folder for the models, data and board (reused by a
    later run: the models are made once per shape), else a temporary one."""
    from harness.search import SearchOptions, SearchRunner, load_space

    console = console or Console(stderr=True)
    placement = Placement.decide(device, dtype)
    chosen = resolve_shape(shape, tokenizer)
    workspace = keep or Path(tempfile.mkdtemp(prefix="harness-doctor-"))
    workspace.mkdir(parents=True, exist_ok=True)
    console.print(
        f"harness doctor: shape {escape(chosen.name)} on {escape(placement.describe())}; tokenizer "
        f"{escape(chosen.tokenizer_source)}; {trials} trials, {questions} questions per task",
        soft_wrap=True,
    )
    start = time.perf_counter()
    try:
        with listening() as log, busy_share(placement) as busy:
            with stage("make models"):
                models = {
                    name: make_model(chosen, workspace / "models" / name, placement, seed)
                    for seed, name in enumerate(("base", "donor"))
                }
            data = workspace / "data"
            if not data.is_dir():
                write_benchmark_data(list(H4_TASKS), data, questions=3 * questions + 2)
            prefs = write_preference_pairs(workspace / "pairs.jsonl")
            space = workspace / "doctor.yaml"
            space.write_text(yaml.safe_dump(_space(models, data, prefs, questions, dtype)), encoding="utf-8")
            db = workspace / "board.duckdb"
            for old in workspace.glob("board.duckdb*"):  # a fresh board: every stage runs again
                old.unlink()
            for old in workspace.glob("optuna-*"):
                old.unlink()
            runner = SearchRunner(
                load_space(space),
                SearchOptions(budget=trials, db=db, device=placement.device, confirm_top=1),
                console=console,
            )
            outcome = runner.run()
        report = DoctorReport(placement, chosen.name, log, time.perf_counter() - start, busy.share)
        report.num_parameters = next((r.num_parameters for r in outcome.references if r.num_parameters), None)
        report.problems = _problems(report, outcome)
        return report
    finally:
        if keep is None:
            shutil.rmtree(workspace, ignore_errors=True)


def _space(models: dict[str, Path], data: Path, prefs: Path, questions: int, dtype: str) -> dict[str, Any]:
    """A search space on H4 settings: SLERP or linear merges of the two models, each aligned
    with LoRA DPO, rungs and a held-out confirmation, both models as references."""
    rung = max(1, questions // 2)
    return {
        "name": "doctor",
        "models": {name: str(path) for name, path in models.items()},
        "methods": {
            "slerp": {
                "merge_method": "slerp",
                "base_model": "$base",
                "models": [{"model": "$base"}, {"model": "$donor"}],
                "parameters": {"t": {"float": [0.2, 0.8]}},
            },
            "linear": {
                "merge_method": "linear",
                "models": [
                    {"model": "$base", "parameters": {"weight": {"float": [0.2, 0.8]}}},
                    {"model": "$donor", "parameters": {"weight": 0.5}},
                ],
            },
        },
        "align": {
            "lora-dpo": {
                "method": "dpo",
                "data": [str(prefs)],
                "beta": 0.1,
                "learning_rate": 1e-5,
                "max_steps": 2,
                "per_device_train_batch_size": 4,
                "warmup_ratio": 0.0,
                "max_length": 256,
                "lora": {"r": 8, "alpha": 16},
            }
        },
        "references": ["$base", "$donor"],
        "suites": ["h4"],
        "limit": questions,
        "data_dir": str(data),
        "dtype": dtype,
        "selection": {
            "rungs": [rung] if rung < questions else [],
            "heldout_limit": questions,
            "confirm_top": 1,
        },
        "objective": {"maximize": {"h4": 1.0}},
        "sampler": {"name": "random", "seed": 0},
    }


def _problems(report: DoctorReport, outcome: Any) -> list[str]:
    """Why the verdict is not ok: a stage off the device, a score off the fast path, a trial
    or reference that failed."""
    import torch

    problems: list[str] = []
    want = torch.device(report.placement.device)
    for run in report.log.runs:
        if run.device is not None and not same_device(torch.device(run.device), want):
            problems.append(f"{run.stage} ran on {run.device}, not {report.placement.device}")
        if run.stage.startswith("score") and run.scoring_path not in (SHARED_PREFIX, None):
            problems.append(f"{run.stage} was scored by {run.scoring_path}")
    if outcome.failed:
        problems.append(f"{outcome.failed} trial(s) failed (see the lines above)")
    failed_refs = [r.name for r in outcome.references if r.status != "ok"]
    if failed_refs:
        problems.append(f"reference(s) failed: {', '.join(failed_refs)}")
    for needed in ("load reference", "merge", "align", "score search", "score held-out"):
        if not report.log.of(needed):
            problems.append(f"stage {needed!r} never ran")
    return list(dict.fromkeys(problems))


def render(report: DoctorReport, console: Console) -> None:
    """The per-stage table and the verdict line."""
    table = Table(title=f"harness doctor: {report.shape} on {report.placement.describe()}")
    for column in ("stage", "runs", "device", "dtype", "seconds", "peak GPU memory", "scoring"):
        table.add_column(column, justify="right" if column in ("runs", "seconds") else "left")
    for name in report.log.names():
        runs = report.log.of(name)
        peaks = [r.peak_gpu_bytes for r in runs if r.peak_gpu_bytes is not None]
        table.add_row(
            name,
            str(len(runs)),
            ", ".join(sorted({r.device for r in runs if r.device})) or "-",
            ", ".join(sorted({r.dtype for r in runs if r.dtype})) or "-",
            f"{sum(r.seconds for r in runs):.1f}",
            f"{max(peaks) / 2**30:.2f} GiB" if peaks else "-",
            ", ".join(sorted({r.scoring_path for r in runs if r.scoring_path})) or "-",
        )
    console.print(table)
    busy = (
        "n/a (not a GPU run)"
        if not report.placement.is_cuda
        else (
            "unknown (neither NVML nor nvidia-smi answered)"
            if report.busy_share is None
            else f"{report.busy_share:.0%}"
        )
    )
    size = f", {report.num_parameters / 1e6:.1f}M parameters" if report.num_parameters else ""
    console.print(f"run: {report.seconds:.1f} s{size}; GPU busy share: {busy}")
    if report.ok:
        console.print(
            f"[green]verdict: ok[/]: every stage ran on {escape(report.placement.device)} and every "
            "score took the shared-prefix path"
        )
    else:
        console.print("[red]verdict: not ok[/]: " + escape("; ".join(report.problems)), soft_wrap=True)


class _Busy:
    def __init__(self) -> None:
        self.samples: list[float] = []

    @property
    def share(self) -> float | None:
        return sum(self.samples) / len(self.samples) / 100 if self.samples else None


@contextmanager
def busy_share(placement: Placement, interval: float = 0.2) -> Iterator[_Busy]:
    """Sample the GPU's utilisation (NVML through torch, else ``nvidia-smi``) every
    ``interval`` seconds inside the context; nothing on a CPU run."""
    busy = _Busy()
    if not placement.is_cuda:
        yield busy
        return
    import torch

    stop = threading.Event()
    device = torch.device(placement.device)

    def sample() -> None:
        try:
            torch.cuda.utilization(device)  # NVML through pynvml, when installed
        except Exception:  # noqa: BLE001  (no pynvml: nvidia-smi's own loop)
            smi = _nvidia_smi(device.index or 0, interval)
            if smi is None or smi.stdout is None:
                return
            try:
                for line in smi.stdout:
                    if stop.is_set():
                        break
                    busy.samples.append(float(line.strip() or 0))
            finally:
                smi.terminate()
            return
        while not stop.is_set():
            busy.samples.append(float(torch.cuda.utilization(device)))
            stop.wait(interval)

    thread = threading.Thread(target=sample, name="gpu-busy", daemon=True)
    thread.start()
    try:
        yield busy
    finally:
        stop.set()
        thread.join(timeout=5)


def _nvidia_smi(index: int, interval: float) -> subprocess.Popen[str] | None:
    try:
        return subprocess.Popen(
            [
                "nvidia-smi",
                f"--id={index}",
                "--query-gpu=utilization.gpu",
                "--format=csv,noheader,nounits",
                "-lms",
                str(max(1, round(interval * 1000))),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
    except OSError:
        return None
