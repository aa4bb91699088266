"""Faults and bad input found by the reliability probe (issue 9): each test failed before its fix.

Store faults use a real second process holding the DuckDB file; dead workers are real
processes that have exited; every bad input goes through the CLI and must give one line on
stderr, exit code 2 and no file written.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import optuna
import pytest
import yaml
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import HarnessError
from harness.evaluate.results import EvalResult, Score
from harness.record import Leaderboard, TrialRecord
from harness.record.spool import Spool
from harness.report import generate_report
from harness.search.study import TrialSeededSampler, _seeded_sampler, make_sampler
from tests.test_record import result

CLI = CliRunner()


@contextmanager
def held(db: Path, read_only: bool = True) -> Iterator[subprocess.Popen]:
    """Another process holding ``db`` open (as `python -c "duckdb.connect(...); sleep"` would)
    until the block ends."""
    code = (
        "import duckdb, sys; c = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == '1'); "
        "print('held', flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(db), "1" if read_only else "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def count(db: Path, sql: str) -> int:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchone()[0]


def one_line_exit_2(res) -> str:
    """The CLI's bad-input contract: exit 2, a single `harness: error:` line, no traceback."""
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("harness: error: "), res.stderr
    return lines[0]


# --- 1. a store fault never loses a record ---------------------------------------------------


def test_a_record_waits_for_a_short_lock(tmp_path, monkeypatch):
    db = tmp_path / "lb.duckdb"
    board = Leaderboard(db)
    board.record(TrialRecord(name="first", source="eval"), result(0.5, 0.4))
    monkeypatch.setenv("HARNESS_DB_LOCK_WAIT", "30")
    code = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); time.sleep(2)"
    proc = subprocess.Popen([sys.executable, "-c", code, str(db)])
    try:
        import time

        time.sleep(1.0)  # the holder has the file
        board.record(TrialRecord(name="second", source="eval"), result(0.3, 0.2))
    finally:
        proc.wait(timeout=30)
    assert board.pending() == 0
    assert count(db, "SELECT count(*) FROM trials") == 2


def test_a_record_outlasting_the_lock_wait_is_spooled_then_written(tmp_path, monkeypatch):
    db = tmp_path / "lb.duckdb"
    warnings: list[str] = []
    board = Leaderboard(db, warn=warnings.append)
    board.record(TrialRecord(name="first", source="eval"), result(0.5, 0.4))
    monkeypatch.setenv("HARNESS_DB_LOCK_WAIT", "0.5")
    with held(db):
        tid = board.record(TrialRecord(name="scored", source="search", objective=0.7), result(0.7, 0.6))
        assert board.pending() == 1
        assert "kept in" in warnings[-1] and tid in warnings[-1]
        # Readers share a read-only holder's lock: the board still reads (without the spooled row).
        assert [r["name"] for r in board.ranking()] == ["first"]
    # The next write inserts the spooled record first; nothing is lost or doubled.
    board.record(TrialRecord(name="third", source="eval"), result(0.1, 0.1))
    assert board.pending() == 0
    assert count(db, "SELECT count(*) FROM trials") == 3
    assert count(db, f"SELECT count(*) FROM scores WHERE trial_id = '{tid}'") == 4
    assert board.suite_summary(tid)["arc_challenge"] == pytest.approx(0.7)
    assert not any(p.exists() for p in board.spool.folders)


def test_report_and_leaderboard_write_pending_records(tmp_path, monkeypatch):
    db = tmp_path / "lb.duckdb"
    board = Leaderboard(db, warn=lambda m: None)
    board.record(TrialRecord(name="first", source="eval"), result(0.5, 0.4))
    monkeypatch.setenv("HARNESS_DB_LOCK_WAIT", "0.3")
    with held(db):
        board.record(TrialRecord(name="spooled", source="eval"), result(0.6, 0.4))
    assert board.pending() == 1
    files = generate_report(db, tmp_path / "site" / "index.html")
    assert files.trials == 2 and board.pending() == 0


def test_a_reader_waits_while_another_process_writes(tmp_path, monkeypatch):
    db = tmp_path / "lb.duckdb"
    Leaderboard(db).record(TrialRecord(name="first", source="eval"), result(0.5, 0.4))
    monkeypatch.setenv("HARNESS_DB_LOCK_WAIT", "30")
    code = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('w', flush=True); time.sleep(2)"
    proc = subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "w"
        res = CLI.invoke(app, ["report", "--db", str(db), "--out", str(tmp_path / "r.html")])
    finally:
        proc.wait(timeout=30)
    assert res.exit_code == 0, res.output


def test_a_lasting_lock_at_start_is_a_fault_not_bad_input(tmp_path, monkeypatch):
    db = tmp_path / "lb.duckdb"
    Leaderboard(db).record(TrialRecord(name="first", source="eval"), result(0.5, 0.4))
    monkeypatch.setenv("HARNESS_DB_LOCK_WAIT", "0.3")
    with held(db, read_only=False):  # a writer excludes readers too
        res = CLI.invoke(app, ["leaderboard", "--db", str(db)])
    assert res.exit_code == 1
    assert res.stderr.startswith("harness: store unavailable: ") and len(res.stderr.splitlines()) == 1


# --- 2. the report of a board with no objective and no benchmark -----------------------------


def test_report_of_eval_rows_on_non_leaderboard_tasks(tmp_path):
    db = tmp_path / "y.duckdb"
    scores = [Score("arc_easy", "acc", 1.0, None, 1, 0, "demo:ai2_arc/ARC-Easy/validation")]
    Leaderboard(db).record(
        TrialRecord(name="m", source="eval", model_ref="m"),
        EvalResult(scores=scores, summary={"arc_easy": 1.0}, limit=1),
    )
    res = CLI.invoke(app, ["report", "--db", str(db), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    assert "arc_easy" in (tmp_path / "r.html").read_text()


# --- 3. user strings are never terminal markup ------------------------------------------------


def test_markup_in_names_and_errors_is_printed_as_text(tmp_path):
    db = tmp_path / "lb.duckdb"
    board = Leaderboard(db)
    tid = board.record(TrialRecord(name="[/]oops [bold]x", source="eval"), result(0.5, 0.4))
    board.record(TrialRecord(name="[red]broken", source="eval", status="failed", error="bad [/] thing"))
    res = CLI.invoke(app, ["leaderboard", "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert "[/]oops [bold]x" in res.stdout and "[red]broken" in res.stdout
    shown = CLI.invoke(app, ["leaderboard", "--db", str(db), "--trial", tid])
    assert shown.exit_code == 0 and "[/]oops [bold]x" in shown.stdout


# --- 4. a resumed or parallel search continues the sampler's sequence ------------------------


@pytest.mark.parametrize("name", ["tpe", "random", "cmaes", "nsga2"])
def test_a_new_process_does_not_repeat_the_seeded_draws(tmp_path, name):
    journal = str(tmp_path / "s.journal")

    def new_process_study():
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        sampler = TrialSeededSampler(functools.partial(_seeded_sampler, name, {}), 7)
        storage = JournalStorage(JournalFileBackend(journal))
        return optuna.create_study(study_name="s", storage=storage, sampler=sampler, load_if_exists=True)

    def one_trial(study) -> dict:
        trial = study.ask()
        params = {"x": trial.suggest_float("x", 0, 1), "m": trial.suggest_categorical("m", list("abcdefgh"))}
        study.tell(trial, params["x"])
        return params

    first = one_trial(new_process_study())
    resumed = one_trial(new_process_study())  # a new sampler object, same seed: what a rerun builds
    assert resumed != first
    # Each trial's draws are a function of (seed, trial number): a fresh study replays them.
    replay = tmp_path / "replay.journal"
    journal = str(replay)
    assert one_trial(new_process_study()) == first


def test_a_misspelt_sampler_option_fails_before_anything_is_written(tmp_path, tiny_models):
    space = _tiny_space(tmp_path, tiny_models, sampler={"name": "tpe", "n_startup_trial": 3})
    res = CLI.invoke(app, ["search", "--space", str(space), "--db", str(tmp_path / "r" / "lb.duckdb")])
    assert "sampler" in one_line_exit_2(res)
    space = _tiny_space(tmp_path, tiny_models, sampler={"name": "tpe", "options": {"n_startup_trial": 3}})
    res = CLI.invoke(app, ["search", "--space", str(space), "--db", str(tmp_path / "r" / "lb.duckdb")])
    assert "n_startup_trial" in one_line_exit_2(res)
    assert not (tmp_path / "r").exists()


# --- 6. storages that could never resume, or are not storages --------------------------------


@pytest.mark.parametrize(
    ("storage", "says"),
    [
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("::::", "neither a storage URL"),
        ("results/study.db", "neither a storage URL"),
        ("journal://", "names no file"),
    ],
)
def test_bad_storage_is_refused_and_nothing_is_written(tmp_path, tiny_models, storage, says):
    space = _tiny_space(tmp_path, tiny_models)
    out = tmp_path / "r"
    res = CLI.invoke(
        app, ["search", "--space", str(space), "--db", str(out / "lb.duckdb"), "--storage", storage]
    )
    assert says in one_line_exit_2(res)
    assert not out.exists() and not Path("::::").exists()


def test_sqlite_file_storage_is_warned_about():
    from harness.search.study import check_storage

    warned: list[str] = []
    assert check_storage("sqlite:///x.db", Path("d.journal"), warned.append) == "sqlite:///x.db"
    assert len(warned) == 1 and "not safe for several concurrent workers" in warned[0]


# --- 7. spaces that would fail every trial fail validation ----------------------------------


def _tiny_space(tmp_path: Path, tiny_models, **overrides) -> Path:
    space = {
        "name": "tiny",
        "models": {k: str(v) for k, v in tiny_models.items()},
        "methods": {
            "linear": {
                "merge_method": "linear",
                "models": [
                    {"model": "$donor_a", "parameters": {"weight": {"float": [0.1, 1]}}},
                    {"model": "$donor_b", "parameters": {"weight": 0.5}},
                ],
            }
        },
        "suites": ["arc_challenge"],
        "limit": 2,
        "objective": {"maximize": {"arc_challenge_0shot_acc": 1.0}},
    }
    space.update(overrides)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def _load(tmp_path, tiny_models, **overrides) -> str:
    from harness.search import load_space

    with pytest.raises(HarnessError) as err:
        load_space(_tiny_space(tmp_path, tiny_models, **overrides))
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "space.yaml") in message
    return message


def test_an_unknown_task_in_a_space_suite_is_caught(tmp_path, tiny_models):
    suite = {"name": "proxy", "parts": [{"task": "arc_easyy", "num_fewshot": 0}], "total": "proxy"}
    message = _load(tmp_path, tiny_models, suites=[suite], objective={"maximize": {"proxy": 1}})
    assert "unknown lm-eval task 'arc_easyy'" in message and "arc_easy" in message


@pytest.mark.parametrize(
    ("dist", "says"),
    [
        ({"float": [0.1, 1], "step": 0}, "step must be a number > 0"),
        ({"float": [0.1, 1], "step": -0.1}, "step must be a number > 0"),
        ({"float": [0.1, 0.2], "step": 0.5}, "larger than the range"),
        ({"uniform": [0, 1]}, "unknown distribution 'uniform'"),
        ({"float": [0, 1], "int": [0, 1]}, "two distribution kinds"),
        ({"flaot": [0, 1], "log": True}, "unknown distribution 'flaot'"),
    ],
)
def test_bad_distributions_are_named(tmp_path, tiny_models, dist, says):
    methods = {
        "linear": {
            "merge_method": "linear",
            "models": [
                {"model": "$donor_a", "parameters": {"weight": dist}},
                {"model": "$donor_b", "parameters": {"weight": 0.5}},
            ],
        }
    }
    assert says in _load(tmp_path, tiny_models, methods=methods)


def test_the_high_end_of_a_layer_range_is_validated(tmp_path, tiny_models):
    methods = {
        "dus": {
            "merge_method": "passthrough",
            "slices": [
                {"sources": [{"model": "$base", "layer_range": [0, {"int": [2, 9]}]}]},
                {"sources": [{"model": "$base", "layer_range": [1, 4]}]},
            ],
        }
    }
    message = _load(tmp_path, tiny_models, methods=methods)
    assert "layer_range [0, 9]" in message and "high end of the ranges" in message


def test_an_out_of_range_align_constant_names_the_file(tmp_path, tiny_models):
    toy = str(Path(__file__).parent / "fixtures" / "align" / "toy_standard.jsonl")
    align = {"none": None, "dpo": {"method": "dpo", "data": [toy], "beta": -1.0}}
    message = _load(tmp_path, tiny_models, align=align)
    assert "align.dpo" in message and "beta" in message


# --- 8-10. bad input through the CLI: one line, exit 2, nothing written ---------------------


def _recipe(tmp_path: Path, tiny_models, **merge) -> Path:
    data = {
        "merge_method": "linear",
        "models": [
            {"model": str(tiny_models["donor_a"]), "parameters": {"weight": 0.5}},
            {"model": str(tiny_models["donor_b"]), "parameters": {"weight": 0.5}},
        ],
    }
    data.update(merge)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"merge": data}))
    return path


def _broken_copy(src: Path, dst: Path, how: str) -> Path:
    import shutil

    shutil.copytree(src, dst)
    if how == "truncated":
        weights = dst / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "config":
        config = yaml.safe_load((dst / "config.json").read_text())
        config["hidden_size"] = 33  # not a multiple of the heads: transformers rejects it
        (dst / "config.json").write_text(yaml.safe_dump(config))
    return dst


@pytest.mark.parametrize(
    ("how", "says"), [("truncated", "truncated"), ("config", "rejected by transformers")]
)
def test_broken_checkpoints_are_one_line_for_build_and_eval(tmp_path, tiny_models, how, says):
    broken = _broken_copy(tiny_models["donor_b"], tmp_path / "broken", how)
    recipe = _recipe(
        tmp_path,
        tiny_models,
        models=[
            {"model": str(tiny_models["donor_a"]), "parameters": {"weight": 0.5}},
            {"model": str(broken), "parameters": {"weight": 0.5}},
        ],
    )
    res = CLI.invoke(app, ["build", str(recipe), "--out", str(tmp_path / "out")])
    assert says in one_line_exit_2(res) and not (tmp_path / "out").exists()
    db = tmp_path / "lb.duckdb"
    res = CLI.invoke(app, ["eval", str(broken), "--suite", "arc_challenge", "--limit", "1", "--db", str(db)])
    assert says in one_line_exit_2(res) and not db.exists()


def test_empty_slices_are_one_line(tmp_path, tiny_models):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"merge": {"merge_method": "passthrough", "slices": []}}))
    res = CLI.invoke(app, ["build", str(path), "--out", str(tmp_path / "out")])
    assert "invalid mergekit configuration" in one_line_exit_2(res)


def test_build_out_that_is_a_file(tmp_path, tiny_models):
    (tmp_path / "model.bin").write_text("keep me")
    res = CLI.invoke(
        app,
        ["build", str(_recipe(tmp_path, tiny_models)), "--out", str(tmp_path / "model.bin"), "--overwrite"],
    )
    assert "is a file, not a folder" in one_line_exit_2(res)
    assert (tmp_path / "model.bin").read_text() == "keep me"


def test_eval_unknown_device(tmp_path, tiny_models):
    db = tmp_path / "lb.duckdb"
    res = CLI.invoke(app, ["eval", str(tiny_models["base"]), "--device", "tpu9", "--db", str(db)])
    assert "unknown device 'tpu9'" in one_line_exit_2(res) and not db.exists()


def _board(tmp_path: Path) -> Path:
    db = tmp_path / "lb.duckdb"
    Leaderboard(db).record(TrialRecord(name="a", source="eval"), result(0.5, 0.4))
    return db


@pytest.mark.parametrize("where", ["folder", "unwritable", "under-a-file"])
def test_report_out_that_cannot_be_written(tmp_path, where):
    db = _board(tmp_path)
    (tmp_path / "site").mkdir()
    (tmp_path / "afile").write_text("x")
    out = {
        "folder": tmp_path / "site",
        "unwritable": Path("/proc/harness-report/index.html"),  # read-only even for root
        "under-a-file": tmp_path / "afile" / "index.html",
    }[where]
    res = CLI.invoke(app, ["report", "--db", str(db), "--out", str(out)])
    one_line_exit_2(res)
    assert not list((tmp_path / "site").iterdir())


def test_search_report_out_is_checked_before_the_search(tmp_path, tiny_models):
    space = _tiny_space(tmp_path, tiny_models)
    res = CLI.invoke(
        app,
        [
            "search",
            "--space",
            str(space),
            "--db",
            str(tmp_path / "r" / "lb.duckdb"),
            "--report-out",
            "/proc/harness-report/index.html",
        ],
    )
    assert "--report-out" in one_line_exit_2(res)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("study", ["/../../../escaped", "a/b", "[/]s", "", ".hidden"])
def test_bad_study_names_write_nothing(tmp_path, tiny_models, study):
    space = _tiny_space(tmp_path, tiny_models)
    res = CLI.invoke(
        app, ["search", "--space", str(space), "--db", str(tmp_path / "r" / "lb.duckdb"), "--study", study]
    )
    assert "study name" in one_line_exit_2(res)
    assert not (tmp_path / "r").exists() and not (tmp_path.parent / "escaped.journal").exists()


def test_grid_error_leaves_no_journal(tmp_path, tiny_models):
    space = _tiny_space(tmp_path, tiny_models, sampler={"name": "grid"})
    res = CLI.invoke(app, ["search", "--space", str(space), "--db", str(tmp_path / "r" / "lb.duckdb")])
    assert "grid sampler" in one_line_exit_2(res)
    assert not (tmp_path / "r").exists()


def test_a_file_that_is_not_duckdb_is_named_as_such(tmp_path):
    db = tmp_path / "junk.duckdb"
    db.write_bytes(os.urandom(4096))
    res = CLI.invoke(app, ["leaderboard", "--db", str(db)])
    line = one_line_exit_2(res)
    assert "not a DuckDB database file" in line and "another process" not in line


@pytest.mark.parametrize("written", [0, 4096], ids=["empty", "first-header-block"])
def test_a_file_another_process_is_still_creating_is_waited_for(tmp_path, monkeypatch, written):
    """DuckDB creates its file empty, then writes three 4 KiB headers: a process opening it in
    between (two workers sharing one --db) waits, as for a lock, rather than calling it "not a
    DuckDB database file" (which failed the concurrent-writers test once)."""
    import threading

    real = tmp_path / "real.duckdb"
    duckdb.connect(str(real)).close()
    complete = real.read_bytes()
    db = tmp_path / "lb.duckdb"
    db.write_bytes(complete[:written])
    monkeypatch.setenv("HARNESS_DB_LOCK_WAIT", "10")
    finish = threading.Timer(0.5, db.write_bytes, [complete])  # the creating process finishes
    finish.start()
    try:
        with Leaderboard(db).connect() as con:
            assert con.execute("SELECT 1").fetchone() == (1,)
    finally:
        finish.join()


def test_an_empty_file_that_stays_empty_is_not_a_database(tmp_path, monkeypatch):
    db = tmp_path / "lb.duckdb"
    db.touch()
    monkeypatch.setenv("HARNESS_DB_LOCK_WAIT", "0.3")
    with pytest.raises(HarnessError, match="not a DuckDB database file"):
        with Leaderboard(db).connect():
            pass


def test_an_unbuilt_demo_donor_says_how_to_build_it(isolated_home):
    from harness.assets import resolve_model

    with pytest.raises(HarnessError, match=r"harness assets --donors"):
        resolve_model("demo:smollm2-135m-dpo-science")


def test_make_sampler_rejects_options_of_the_grid(tmp_path, tiny_models):
    from harness.search import load_space

    path = _tiny_space(
        tmp_path,
        tiny_models,
        sampler={"name": "grid", "options": {"x": 1}},
        methods={
            "linear": {
                "merge_method": "linear",
                "models": [
                    {"model": "$donor_a", "parameters": {"weight": {"choice": [0.5, 1.0]}}},
                    {"model": "$donor_b", "parameters": {"weight": 0.5}},
                ],
            }
        },
    )
    with pytest.raises(HarnessError, match="takes no options"):
        make_sampler(load_space(path))


def test_a_record_whose_folder_is_gone_is_kept_under_harness_home(tmp_path, isolated_home):
    """The leaderboard's folder replaced by a file mid-run: neither the file nor the pending folder
    beside it can be written, so the record goes to $HARNESS_HOME/pending and waits there."""
    blocked = tmp_path / "results"
    blocked.write_text("not a folder any more")
    board = Leaderboard(blocked / "lb.duckdb", warn=lambda m: None)
    tid = board.record(TrialRecord(name="scored", source="search"), result(0.5, 0.4))
    assert board.pending() == 1
    kept = board.spool.pending()[0]
    assert kept.is_relative_to(isolated_home) and Spool.read(kept)["trial_id"] == tid
