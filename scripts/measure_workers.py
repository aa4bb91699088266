"""Measure a multi-worker demo study (issue 12): N `harness search` workers on one PostgreSQL
study, each as its own "machine" (its own --db file), then one fresh reader.

Starts a throw-away PostgreSQL server on 127.0.0.1 (``tests/postgres.py``, the tests' own
fixture: Debian's server binaries, installed by ``make test``), runs the workers at once on
``--space`` with ``--budget`` finished trials in total, and prints a Markdown summary: wall
time, trials by state and by worker, rows on each board and on a fresh reader's, and whether
every finished trial is there exactly once.

    .venv/bin/python scripts/measure_workers.py --workers 2 --budget 6
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.record import Leaderboard  # noqa: E402
from harness.record.log import RecordLog  # noqa: E402
from tests.postgres import running_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default=str(REPO / "search" / "demo.yaml"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--budget", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="workers-"))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    with running_server() as server:
        url = server.database()
        started = time.perf_counter()
        procs = []
        for i in range(args.workers):
            cmd = [
                sys.executable,
                "-m",
                "harness.cli",
                "search",
                "--space",
                args.space,
                "--budget",
                str(args.budget),
            ]
            cmd += [
                "--storage",
                url,
                "--db",
                str(out / f"machine{i}.duckdb"),
                "--no-report",
                "--device",
                "cpu",
            ]
            log = (out / f"worker{i}.log").open("w")
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
        codes = [p.wait() for p in procs]
        wall = time.perf_counter() - started
        print(f"| wall time | {wall:.0f} s ({wall / 60:.1f} min); exit codes {codes} |", flush=True)
        reader = Leaderboard(out / "reader.duckdb", log=RecordLog(url))
        reader.refresh()
        boards = [Leaderboard(out / f"machine{i}.duckdb", log=RecordLog(url)) for i in range(args.workers)]
        for board in boards:
            board.refresh()
    summarise(out, args.workers)


def _trials(path: Path) -> list[dict]:
    return Leaderboard(path).snapshot({"trials": "id"}).get("trials", [])


def summarise(out: Path, workers: int) -> None:
    """Rows of the fresh reader's board (every machine's must be equal)."""
    trials = _trials(out / "reader.duckdb")
    search = [t for t in trials if t["source"] == "search"]
    states = Counter(f"{t['status']} at {t['fidelity']}" for t in search)
    writers = Counter(str(t["written_by"]).split(":")[-1] for t in search)
    per_trial = Counter((t["study"], t["trial_number"]) for t in search)
    heldout = sum(1 for t in search if t["heldout_objective"] is not None)
    same = all(_trials(out / f"machine{i}.duckdb") == trials for i in range(workers))
    print(f"| search rows by status and fidelity (questions per task) | {dict(states)} |")
    print(f"| search rows by worker (pid) | {dict(writers)} |")
    print(f"| confirmed on held-out questions | {heldout} |")
    print(f"| other rows (reference models) | {len(trials) - len(search)} |")
    print(f"| Optuna trials with more than one row | {sum(1 for n in per_trial.values() if n > 1)} |")
    print(f"| every machine's board equals a fresh reader's | {same} |")
    print(f"logs: {out}")


if __name__ == "__main__":
    main()
