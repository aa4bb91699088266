"""Faults during a real search on tiny models (issue 9): a lock on the leaderboard, a worker
killed mid-trial, two workers drawing the same recipe. Real builds, real lm-eval, real
processes; each test failed before its fix."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import duckdb
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from harness.record import Leaderboard, TrialRecord
from harness.search import SearchOptions, SearchRunner, load_space
from harness.search.study import default_journal
from tests.fixtures.evaluate_data import build_data_dir
from tests.test_record import result
from tests.test_reliability import held

pytestmark = pytest.mark.usefixtures("eval_env")  # the module's private evaluation env (conftest)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return build_data_dir(tmp_path_factory.mktemp("eval_data"), parts=("arc",))


def space_file(
    tmp_path: Path,
    tiny_models,
    data: Path,
    weights: list[float],
    name: str = "faults",
    sampler: dict | None = None,
) -> Path:
    """A linear merge of the tiny donors over ``weights`` (grid when several, else TPE)."""
    if sampler is None:
        sampler = {"name": "grid"} if len(weights) > 1 else {"name": "tpe", "seed": 0}
    space = {
        "name": name,
        "models": {k: str(v) for k, v in tiny_models.items() if k != "wide"},
        "methods": {
            "linear": {
                "merge_method": "linear",
                "models": [
                    {"model": "$donor_a", "parameters": {"weight": {"choice": weights}}},
                    {"model": "$donor_b", "parameters": {"weight": 0.5}},
                ],
            }
        },
        "suites": ["arc_challenge"],
        "limit": 3,
        "data_dir": str(data),
        "objective": {"maximize": {"arc_challenge_0shot_acc": 1.0}},
        "sampler": sampler,
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def rows(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_trials_scored_while_the_board_is_locked_are_kept_and_told(tmp_path, tiny_models, data, monkeypatch):
    db = tmp_path / "lb.duckdb"
    runner = SearchRunner(
        load_space(space_file(tmp_path, tiny_models, data, [0.3, 0.7])), SearchOptions(2, db)
    )
    monkeypatch.setenv("HARNESS_DB_LOCK_WAIT", "0.5")
    with held(db, read_only=False):  # e.g. another `harness search` writing the same --db
        outcome = runner.run()
    assert outcome.finished == 2 and outcome.failed == 0
    trials = runner.study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2  # none left RUNNING
    # Two records per trial: its search scores, then its held-out confirmation. Both wait
    # (the second once replaced the first in the spool, losing the search scores).
    assert runner.board.pending() == 4
    # The lock is gone: the next reader-side flush (report, leaderboard, next search) writes them.
    assert runner.board.flush_pending() == 0
    stored = dict(rows(db, "SELECT trial_number, objective FROM trials WHERE status = 'ok'"))
    assert stored == pytest.approx({t.number: t.value for t in trials})
    parts = rows(db, 'SELECT DISTINCT trial_id, "partition" FROM suite_scores')
    assert sorted(p for _, p in parts) == ["heldout", "heldout", "search", "search"]


def dead_pid() -> int:
    """The pid of a real process that has exited."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(done.stdout)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    return pid


def test_a_trial_of_a_killed_worker_is_closed_on_resume(tmp_path, tiny_models, data):
    db = tmp_path / "lb.duckdb"
    space = load_space(space_file(tmp_path, tiny_models, data, [0.3, 0.7]))
    killed = SearchRunner(space, SearchOptions(1, db))
    orphan = killed.study.ask()  # what a `kill -9` mid-trial leaves in the journal
    orphan.suggest_categorical("method", ["linear"])
    orphan.set_user_attr("worker", {"host": socket.gethostname(), "pid": dead_pid(), "start": "1"})
    orphan.set_user_attr("leaderboard_id", "killed000001")

    runner = SearchRunner(space, SearchOptions(1, db))
    assert runner.close_dead_trials() == 1
    first = runner.study.get_trials()[0]
    assert first.state == TrialState.FAIL and first.user_attrs["interrupted"] is True
    assert rows(db, "SELECT status, trial_number FROM trials WHERE id = 'killed000001'") == [
        ("interrupted", 0)
    ]
    queued = runner.study.get_trials()[1]  # its parameters, queued again
    assert queued.state == TrialState.WAITING and queued.params == first.params
    outcome = runner.run()  # the interrupted trial does not use up the budget; the re-run does
    assert outcome.finished == 1
    assert [t.state for t in runner.study.get_trials()] == [TrialState.FAIL, TrialState.COMPLETE]
    assert runner.study.get_trials()[1].params["method"] == "linear"


def test_a_trial_recorded_just_before_its_worker_died_keeps_its_score(tmp_path, tiny_models, data):
    db = tmp_path / "lb.duckdb"
    space = load_space(space_file(tmp_path, tiny_models, data, [0.3, 0.7]))
    runner = SearchRunner(space, SearchOptions(1, db))
    orphan = runner.study.ask()
    orphan.set_user_attr("worker", {"host": socket.gethostname(), "pid": dead_pid(), "start": "1"})
    orphan.set_user_attr("leaderboard_id", "recorded0001")
    scored = result(0.625, 0.4)
    scored.partition = "search"  # a trial's objective is measured on the study's search questions
    scored.summary["arc_challenge_0shot_acc"] = 0.625  # the space's objective key
    runner.board.record(
        TrialRecord(name="faults#0", source="search", study="faults", trial_number=0, id="recorded0001"),
        scored,
    )
    assert runner.close_dead_trials() == 1
    assert runner.study.get_trials()[0].state == TrialState.COMPLETE
    assert runner.study.get_trials()[0].value == pytest.approx(0.625)
    assert rows(db, "SELECT status FROM trials WHERE id = 'recorded0001'") == [("ok",)]


def test_a_live_workers_trial_is_left_alone(tmp_path, tiny_models, data):
    space = load_space(space_file(tmp_path, tiny_models, data, [0.3, 0.7]))
    runner = SearchRunner(space, SearchOptions(1, tmp_path / "lb.duckdb"))
    busy = runner.study.ask()
    busy.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid(), "start": None})
    assert runner.close_dead_trials() == 0
    assert runner.study.get_trials()[0].state == TrialState.RUNNING


def test_two_workers_never_score_one_recipe_twice(tmp_path, tiny_models, data, eval_env):
    """Two `harness search` processes started together on one --db, with a space that has a single
    recipe: one builds and scores it, the other waits for its claim and reuses the scores."""
    space = space_file(tmp_path, tiny_models, data, [0.5])
    db = tmp_path / "lb.duckdb"
    cmd = [sys.executable, "-m", "harness.cli", "search", "--space", str(space), "--db", str(db)]
    cmd += ["--budget", "2", "--no-report"]
    environ = {**os.environ, "HARNESS_HOME": str(eval_env), "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    workers = [
        subprocess.Popen(cmd, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    logs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs
    scored = rows(db, "SELECT id FROM trials WHERE status = 'ok' AND reused_from IS NULL")
    reused = rows(db, "SELECT reused_from FROM trials WHERE status = 'ok' AND reused_from IS NOT NULL")
    assert len(scored) == 1, logs
    assert len(reused) >= 1 and {r[0] for r in reused} == {scored[0][0]}
    study = optuna.load_study(
        study_name="faults",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(default_journal(db, "faults")))
        ),
    )
    assert {t.state for t in study.get_trials()} == {TrialState.COMPLETE}
    assert Leaderboard(db).pending() == 0


def test_a_study_created_by_another_worker_meanwhile_is_joined(tmp_path, tiny_models, data, monkeypatch):
    """Two workers started together both find no study; the one that appends its create second
    joins the first one's study (Optuna raises DuplicatedStudyError there: CI once saw a worker
    of `test_two_workers_never_score_one_recipe_twice` die of it, exit 1)."""
    db = tmp_path / "lb.duckdb"
    journal = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(default_journal(db, "faults")))
    )
    optuna.create_study(study_name="faults", storage=journal, direction="maximize")  # the other worker
    lookup = optuna.storages.JournalStorage.get_study_id_from_name
    looked: list[str] = []

    def not_there_yet(storage, name):  # this worker looked just before the other one created it
        if not looked:
            looked.append(name)
            raise KeyError(name)
        return lookup(storage, name)

    monkeypatch.setattr(optuna.storages.JournalStorage, "get_study_id_from_name", not_there_yet)
    runner = SearchRunner(load_space(space_file(tmp_path, tiny_models, data, [0.5])), SearchOptions(1, db))
    assert looked == ["faults"]
    assert [s.study_name for s in optuna.get_all_study_summaries(journal)] == ["faults"]
    assert runner.study.user_attrs["split_rule"]
