"""Many workers, one study, on a real PostgreSQL server (issue 12): three `harness search`
processes share an RDB-storage study and one leaderboard (written through the shared log from
two DuckDB files, as from two machines); one is killed with SIGKILL mid-trial.
Real builds, real lm-eval, real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import duckdb
import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from typer.testing import CliRunner

from harness.cli import app
from harness.record import Leaderboard, RecordLog
from tests.fixtures.evaluate_data import build_data_dir
from tests.test_reliability_search import space_file

pytestmark = pytest.mark.usefixtures("eval_env")
CLI = CliRunner()
WEIGHTS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return build_data_dir(tmp_path_factory.mktemp("eval_data"), parts=("arc",))


def _space(tmp_path: Path, tiny_models, data: Path) -> Path:
    return space_file(
        tmp_path, tiny_models, data, WEIGHTS, name="many", sampler={"name": "random", "seed": 0}
    )


def _workers(
    dbs: list[Path], tmp_path: Path, space: Path, url: str, budget: int, eval_env: Path
) -> list[subprocess.Popen]:
    """One `harness search` per entry of ``dbs``: workers with the same file are on one
    machine, workers with different files stand for several machines (they share only the
    PostgreSQL server, as on a cluster)."""
    environ = {**os.environ, "HARNESS_HOME": str(eval_env), "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    workers = []
    for db in dbs:
        cmd = [sys.executable, "-m", "harness.cli", "search", "--space", str(space), "--db", str(db)]
        cmd += ["--storage", url, "--budget", str(budget), "--heartbeat", "1", "--no-report"]
        workers.append(
            subprocess.Popen(cmd, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    return workers


def _one_board(tmp_path: Path, url: str, dbs: list[Path]) -> Path:
    """Every machine's file, synced from the log, holds the same rows as a fresh reader's."""
    reader = tmp_path / "reader.duckdb"
    res = CLI.invoke(app, ["leaderboard", "--db", str(reader), "--storage", url, "--format", "json"])
    assert res.exit_code == 0, res.output
    for db in dbs:
        Leaderboard(db, log=RecordLog(url)).refresh()
        assert _board(db) == _board(reader), db
    return reader


def _board(db: Path) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "SELECT trial_number, status, id FROM trials WHERE source = 'search' ORDER BY trial_number"
        ).fetchall()


def _finished_once(study: optuna.Study, db: Path) -> None:
    """Every finished Optuna trial has exactly one leaderboard row, with its outcome."""
    board = _board(db)
    numbers = [n for n, _, _ in board]
    assert len(numbers) == len(set(numbers)), board
    status = {n: s for n, s, _ in board}
    for t in study.get_trials():
        assert t.state != TrialState.RUNNING, t.number
        if t.state == TrialState.COMPLETE:
            assert status.get(t.number) == "ok", (t.number, board)
    assert Leaderboard(db).pending() == 0


def test_three_workers_share_one_study_and_one_board(tmp_path, tiny_models, data, postgres, eval_env):
    url = postgres.database()
    machines = [tmp_path / "a.duckdb", tmp_path / "a.duckdb", tmp_path / "b.duckdb"]
    workers = _workers(machines, tmp_path, _space(tmp_path, tiny_models, data), url, 6, eval_env)
    logs = [w.communicate(timeout=900)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], logs
    study = optuna.load_study(study_name="many", storage=url)
    complete = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert 6 <= len(complete) <= 8, [t.state for t in study.get_trials()]  # each stops at the budget
    hosts = {t.user_attrs["worker"]["pid"] for t in complete}
    assert len(hosts) >= 2, "the trials were not shared between the workers"
    _finished_once(study, _one_board(tmp_path, url, machines[1:]))


def test_a_killed_worker_loses_nothing_and_its_trial_is_retried(
    tmp_path, tiny_models, data, postgres, eval_env
):
    url = postgres.database()
    machines = [tmp_path / "b.duckdb", tmp_path / "a.duckdb", tmp_path / "a.duckdb"]  # the victim alone on b
    workers = _workers(machines, tmp_path, _space(tmp_path, tiny_models, data), url, 6, eval_env)
    victim, killed = workers[0], None
    deadline = time.monotonic() + 300
    while killed is None and time.monotonic() < deadline and victim.poll() is None:
        try:
            study = optuna.load_study(study_name="many", storage=url)
        except KeyError:  # not created yet
            time.sleep(0.2)
            continue
        for t in study.get_trials(states=(TrialState.RUNNING,)):
            # Once its recipe is fully sampled (method and weight): killed while it builds or scores.
            if t.user_attrs.get("worker", {}).get("pid") == victim.pid and len(t.params) >= 2:
                os.kill(victim.pid, signal.SIGKILL)  # mid-trial: built or scoring, not recorded
                killed = t.number
                break
        time.sleep(0.05)
    assert killed is not None, "the victim never ran a trial"
    victim.wait(timeout=60)
    logs = [w.communicate(timeout=900)[0] for w in workers[1:]]
    assert [w.returncode for w in workers[1:]] == [0, 0], logs

    study = optuna.load_study(study_name="many", storage=url)
    trials = {t.number: t for t in study.get_trials()}
    # Failed by a survivor: after the heartbeat grace period, or at once by the pid check of a
    # worker on the same host that starts after the kill; either way its parameters re-run.
    assert trials[killed].state == TrialState.FAIL
    with warnings.catch_warnings():  # Optuna flags the retry helpers experimental
        warnings.simplefilter("ignore")
        retries = [
            t for t in trials.values() if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed
        ]
    assert len(retries) == 1 and retries[0].params == trials[killed].params, logs
    assert retries[0].state == TrialState.COMPLETE
    db = _one_board(tmp_path, url, machines[:2])
    status = {n: s for n, s, _ in _board(db)}
    assert status[killed] == "interrupted" and status[retries[0].number] == "ok"
    _finished_once(study, db)
    # The budget counts finished trials; the killed one (re-run) does not count.
    finished = [t for t in trials.values() if t.state == TrialState.COMPLETE]
    assert len(finished) >= 6
