"""`harness search` end to end on tiny models and fixture data (real builds, real lm-eval)."""

from __future__ import annotations

import gc
import io
import json
import re
import weakref
from pathlib import Path

import duckdb
import optuna
import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import HarnessError
from harness.search import SearchOptions, SearchRunner, load_space
from tests.fixtures.evaluate_data import build_data_dir

pytestmark = pytest.mark.usefixtures("eval_env")  # the module's private evaluation env (conftest)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return build_data_dir(tmp_path_factory.mktemp("eval_data"), parts=("arc",))


def write_space(tmp_path: Path, tiny_models, data: Path, **overrides) -> Path:
    space = {
        "name": "tiny",
        "models": {k: str(v) for k, v in tiny_models.items()},
        "methods": {
            "slerp": {
                "merge_method": "slerp",
                "base_model": "$donor_a",
                "models": [{"model": "$donor_a"}, {"model": "$donor_b"}],
                "parameters": {
                    "t": [
                        {"filter": "self_attn", "value": {"gradient": [0, 1], "points": 3}},
                        {"value": {"float": [0, 1]}},
                    ]
                },
            },
            "ties": {
                "merge_method": "ties",
                "base_model": "$base",
                "models": [
                    {
                        "model": "$donor_a",
                        "parameters": {
                            "weight": {"float": [0.1, 1]},
                            "density": {"float": [0.2, 1]},
                        },
                    },
                    {
                        "model": "$donor_b",
                        "parameters": {
                            "weight": {"float": [0.1, 1]},
                            "density": {"float": [0.2, 1]},
                        },
                    },
                ],
            },
        },
        "suites": ["arc_challenge"],
        "limit": 4,
        "data_dir": str(data),
        "objective": {"maximize": {"arc_challenge_0shot_acc": 1.0}},
        "sampler": {"name": "tpe", "seed": 3},
        "selection": {"heldout_limit": 4},
    }
    space.update(overrides)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def run(
    space_path: Path, tmp_path: Path, budget: int, console: Console | None = None, **kw
) -> tuple[SearchRunner, object]:
    options = SearchOptions(budget=budget, db=tmp_path / "lb.duckdb", **kw)
    runner = SearchRunner(load_space(space_path), options, console=console)
    return runner, runner.run()


def db_rows(tmp_path: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(tmp_path / "lb.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_three_trials_then_resume_to_five(tmp_path, tiny_models, data):
    space = write_space(tmp_path, tiny_models, data)
    log = io.StringIO()
    runner, outcome = run(space, tmp_path, 3, console=Console(file=log, width=400))
    assert outcome.finished == 3
    # One line per finished trial: what a nightly CI log shows while the search runs.
    said = re.findall(
        r"^trial (\d) ok: \S+, search objective \d\.\d{3} at 4 questions per task", log.getvalue(), re.M
    )
    assert said == ["0", "1", "2"], log.getvalue()
    complete = runner.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 3
    rows = db_rows(
        tmp_path,
        "SELECT id, status, objective, recipe_yaml, trial_number FROM trials ORDER BY trial_number",
    )
    assert [r[1] for r in rows] == ["ok"] * 3 and [r[4] for r in rows] == [0, 1, 2]
    assert all(r[2] is not None and r[3] for r in rows)
    params = db_rows(tmp_path, "SELECT count(DISTINCT trial_id), count(*) FROM trial_params")
    assert params[0][0] == 3 and params[0][1] >= 3 * 2
    scores = db_rows(
        tmp_path,
        "SELECT partition, count(*) FROM scores WHERE task = 'arc_challenge' AND metric = 'acc_norm' "
        "GROUP BY ALL ORDER BY 1",
    )
    # Every trial on the search questions; all three are in the top 5 when they finish, so
    # each is confirmed on the held-out questions too.
    assert scores == [("heldout", 3), ("search", 3)]
    # Objective in DuckDB equals what Optuna was told.
    by_number = {t.number: t.value for t in complete}
    for _, _, objective, _, number in rows:
        assert objective == pytest.approx(by_number[number])
    # Its stderr (objective = arc_challenge alone) is that score's stderr.
    errors = db_rows(
        tmp_path,
        "SELECT t.objective_stderr, s.stderr FROM trials t JOIN suite_scores s ON s.trial_id = t.id "
        "WHERE s.name = 'arc_challenge_0shot_acc' AND s.partition = 'search'",
    )
    assert len(errors) == 3 and all(a is not None and a == pytest.approx(b) for a, b in errors)

    # Same command with a larger budget resumes the study: 2 more trials, not 5.
    runner, outcome = run(space, tmp_path, 5)
    assert outcome.finished == 5 and outcome.ran + outcome.reused == 2
    assert db_rows(tmp_path, "SELECT count(*) FROM trials")[0][0] == 5


def test_recorded_recipe_rebuilds_exactly(tmp_path, tiny_models, data):
    import torch

    from harness.merge import build_model
    from harness.recipe import load_recipe, resolve_recipe

    space = write_space(tmp_path, tiny_models, data)
    runner, _ = run(space, tmp_path, 1)
    trial_id, recipe_text = db_rows(tmp_path, "SELECT id, recipe_yaml FROM trials")[0]
    # What `harness leaderboard --trial ID --format yaml > r.yaml` writes for `harness build r.yaml`.
    db = str(tmp_path / "lb.duckdb")
    shown = CliRunner().invoke(app, ["leaderboard", "--db", db, "--trial", trial_id, "--format", "yaml"])
    assert shown.exit_code == 0 and shown.stdout == recipe_text
    (tmp_path / "r.yaml").write_text(shown.stdout)
    a = build_model(resolve_recipe(load_recipe(tmp_path / "r.yaml")), route="disk")
    b = build_model(resolve_recipe(load_recipe(tmp_path / "r.yaml")), route="memory")
    for name, tensor in a.model.state_dict().items():
        assert torch.equal(tensor, b.model.state_dict()[name])


TOY_PREFS = str(Path(__file__).parent / "fixtures" / "align" / "toy_standard.jsonl")
ALIGN_SPACE = {
    "none": None,
    "dpo": {
        "method": "dpo",
        "data": [TOY_PREFS],
        "beta": {"float": [0.05, 0.5], "log": True},
        "learning_rate": 1e-3,
        "max_steps": 1,
        "per_device_train_batch_size": 4,
        "warmup_ratio": 0.0,
        "max_length": 64,
        "lora": {"r": {"choice": [2, 4]}, "alpha": 8},
    },
    "sdpo": {
        "method": "sdpo",
        "data": [TOY_PREFS],
        "partition": "random",
        "steps": {"int": [2, 3]},
        "max_steps": 1,
        "per_device_train_batch_size": 4,
        "warmup_ratio": 0.0,
        "max_length": 64,
    },
}


def test_merge_and_alignment_are_searched_jointly(tmp_path, tiny_models, data):
    from harness.recipe import load_recipe

    # Seed 0: six random draws that pick each of the three candidates (draws depend on (seed, trial)).
    space = write_space(tmp_path, tiny_models, data, align=ALIGN_SPACE, sampler={"name": "random", "seed": 0})
    runner, outcome = run(space, tmp_path, 6)
    assert outcome.failed == 0
    trials = runner.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    picked = {t.params["align"] for t in trials}
    assert picked == {"none", "dpo", "sdpo"}, picked
    for t in trials:
        # Align parameters are conditional: only the chosen candidate's exist.
        align_params = {k.split(".")[1] for k in t.params if k.startswith("align.")}
        assert align_params == ({t.params["align"]} - {"none"})
    rows = db_rows(
        tmp_path,
        "SELECT t.id, t.align_method, t.recipe_yaml, count(s.trial_id) FROM trials t "
        "LEFT JOIN align_steps s ON s.trial_id = t.id GROUP BY ALL",
    )
    for _, align_method, recipe_yaml, steps in rows:
        (tmp_path / "r.yaml").write_text(recipe_yaml)
        recipe = load_recipe(tmp_path / "r.yaml")  # what `harness build` reads back
        assert (recipe.align.method if recipe.align else None) == align_method
        assert steps == (recipe.align.num_steps if recipe.align else 0)

    # `harness leaderboard --trial` shows a trial's TRL metrics per alignment step.
    trial_id, _, _, steps = next(r for r in rows if r[1] == "sdpo")
    db = str(tmp_path / "lb.duckdb")
    shown = CliRunner().invoke(app, ["leaderboard", "--db", db, "--trial", trial_id])
    assert shown.exit_code == 0 and "alignment steps" in shown.stdout and "rewards_margins" in shown.stdout
    doc = json.loads(
        CliRunner().invoke(app, ["leaderboard", "--db", db, "--trial", trial_id, "--format", "json"]).stdout
    )
    assert len(doc["align_steps"]) == steps and doc["params"]["align"] == "sdpo" and doc["scores"]
    missing = CliRunner().invoke(app, ["leaderboard", "--db", db, "--trial", "nope"])
    assert missing.exit_code == 2 and "no trial 'nope'" in missing.stderr


def test_invalid_align_space_fails_before_any_work(tmp_path, tiny_models, data):
    bad_beta = {"dpo": {**ALIGN_SPACE["dpo"], "beta": {"float": [0.0, 0.5]}}}
    with pytest.raises(HarnessError, match="leaves the legal"):
        load_space(write_space(tmp_path, tiny_models, data, align=bad_beta))
    missing = {"dpo": {**ALIGN_SPACE["dpo"], "data": [str(tmp_path / "nope.jsonl")]}}
    with pytest.raises(HarnessError, match="nope.jsonl"):
        load_space(write_space(tmp_path, tiny_models, data, align=missing))
    with pytest.raises(HarnessError, match="align is empty"):
        load_space(write_space(tmp_path, tiny_models, data, align={}))
    # A method's own fields have their legal ranges too (KTO: desirable_weight > 0), and a
    # field of another method is named.
    kto = {**ALIGN_SPACE["dpo"], "method": "kto", "desirable_weight": {"float": [0.0, 2.0]}}
    with pytest.raises(HarnessError, match="desirable_weight.*leaves the legal"):
        load_space(write_space(tmp_path, tiny_models, data, align={"kto": kto}))
    kto["desirable_weight"] = {"float": [0.5, 2.0]}
    load_space(write_space(tmp_path, tiny_models, data, align={"kto": kto}))
    ipo = {**ALIGN_SPACE["dpo"], "loss_type": {"choice": ["sigmoid", "ipo"]}, "desirable_weight": 1.0}
    with pytest.raises(HarnessError, match="unknown field 'desirable_weight' for method 'dpo'"):
        load_space(write_space(tmp_path, tiny_models, data, align={"dpo": ipo}))


def test_failing_trial_is_recorded_and_the_study_goes_on(tmp_path, tiny_models, data):
    # The grid visits every choice: the 'wide' donor has other shapes, so that build fails.
    # Validation builds both ends of each range (first and last choice), so the bad choice
    # sits in the middle, where only a trial meets it.
    methods = {
        "linear": {
            "merge_method": "linear",
            "models": [
                {"model": "$donor_a", "parameters": {"weight": 0.5}},
                {"model": {"choice": ["$donor_b", "$wide", "$base"]}, "parameters": {"weight": 0.5}},
            ],
        }
    }
    space = write_space(tmp_path, tiny_models, data, methods=methods, sampler={"name": "grid", "seed": 0})
    runner, outcome = run(space, tmp_path, 3)
    assert outcome.finished == 3 and outcome.failed == 1
    rows = dict(db_rows(tmp_path, "SELECT status, error FROM trials"))
    assert set(rows) == {"ok", "failed"} and "cannot be merged" in rows["failed"]
    states = sorted(t.state.name for t in runner.study.trials)
    assert states == ["COMPLETE", "COMPLETE", "FAIL"]


def test_what_outlives_a_trial_is_frozen_and_no_model_with_it(tmp_path, tiny_models, data, monkeypatch):
    """Each trial's end freezes the survivors so that the collections after every stage skip
    the process's long-lived state (``harness.memory.freeze_survivors``). A model or tokenizer
    still referenced then (both sit in reference cycles) would never be collected: at every
    freeze, each model and tokenizer built or loaded so far must already be gone. After the
    run nothing stays frozen."""
    import harness.merge.loading as loading
    import harness.search.confirm as confirm_module
    import harness.search.runner as runner_module
    from harness.search.runner import SearchRunner as Runner

    alive: list[weakref.ref] = []
    frozen_at: list[int] = []
    build, load, freeze = Runner._build, loading.load_pretrained, runner_module.freeze_survivors

    def watched_build(self, recipe, record):
        built = build(self, recipe, record)
        alive.extend([weakref.ref(built.model), weakref.ref(built.tokenizer)])
        return built

    def watched_load(*args, **kwargs):
        model, tokenizer, path = load(*args, **kwargs)
        alive.extend([weakref.ref(model), weakref.ref(tokenizer)])
        return model, tokenizer, path

    def checked_freeze():
        gc.collect()
        assert alive and all(ref() is None for ref in alive), "a model or tokenizer would be frozen"
        freeze()
        frozen_at.append(gc.get_freeze_count())

    monkeypatch.setattr(Runner, "_build", watched_build)
    monkeypatch.setattr(loading, "load_pretrained", watched_load)
    monkeypatch.setattr(runner_module, "freeze_survivors", checked_freeze)  # after each trial
    monkeypatch.setattr(confirm_module, "freeze_survivors", checked_freeze)  # after each confirmation
    space = write_space(tmp_path, tiny_models, data)
    _, outcome = run(space, tmp_path, 3)
    assert outcome.ran == 3
    # three trial ends and three confirmations (the top K at the end) froze the survivors
    assert len(frozen_at) == 6 and min(frozen_at) > 10_000, frozen_at
    assert gc.get_freeze_count() == 0


def test_duplicate_recipe_is_not_rescored(tmp_path, tiny_models, data):
    methods = {
        "linear": {
            "merge_method": "linear",
            "models": [
                {"model": "$donor_a", "parameters": {"weight": {"choice": [0.5]}}},
                {"model": "$donor_b", "parameters": {"weight": 0.5}},
            ],
        }
    }
    space = write_space(tmp_path, tiny_models, data, methods=methods)
    _, outcome = run(space, tmp_path, 3)
    assert outcome.ran == 1 and outcome.reused == 2
    rows = db_rows(tmp_path, "SELECT id, reused_from, objective FROM trials ORDER BY trial_number")
    first = rows[0][0]
    assert rows[0][1] is None and [r[1] for r in rows[1:]] == [first, first]
    assert len({r[2] for r in rows}) == 1
    copied = db_rows(tmp_path, f"SELECT count(*) FROM scores WHERE trial_id = '{rows[2][0]}'")
    assert copied[0][0] > 0


def test_seed_makes_the_trial_sequence_reproducible(tmp_path, tiny_models, data):
    space = write_space(tmp_path, tiny_models, data, sampler={"name": "random", "seed": 11})
    sequences = []
    for i in range(2):
        work = tmp_path / f"run{i}"
        work.mkdir()
        runner, _ = run(space, work, 3)
        sequences.append([t.params for t in runner.study.trials])
    assert sequences[0] == sequences[1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"methods": {"x": {"merge_method": "frobnicate", "models": [{"model": "$base"}]}}},
            "unknown merge method",
        ),
        (
            {
                "methods": {
                    "x": {
                        "merge_method": "linear",
                        "models": [{"model": "$base", "parameters": {"weight": {"float": [0.5, 0.5]}}}],
                    }
                }
            },
            "empty range",
        ),
        (
            {
                "methods": {
                    "x": {
                        "merge_method": "slerp",
                        "base_model": "$base",
                        "models": [{"model": "$base"}, {"model": "$donor_a"}],
                        "parameters": {"t": {"float": [0, 2]}},
                    }
                }
            },
            "leaves the legal",
        ),
        ({"objective": {"maximize": {"mmlu": 1.0}}}, "objective uses 'mmlu'"),
        (
            {"methods": {"x": {"merge_method": "linear", "models": [{"model": "$nobody"}]}}},
            "unknown model alias",
        ),
        ({"suites": ["no_such_suite"]}, "unknown suite"),
    ],
)
def test_invalid_spaces_fail_before_any_work(tmp_path, tiny_models, data, change, message):
    space = write_space(tmp_path, tiny_models, data, **change)
    with pytest.raises(HarnessError, match=message):
        load_space(space)


def test_cli_bad_inputs_exit_2_and_write_nothing(tmp_path, tiny_models, data):
    cli = CliRunner()
    db = tmp_path / "out" / "lb.duckdb"
    space = write_space(tmp_path, tiny_models, data)
    cases = [
        ["search", "--space", str(space), "--budget", "0", "--db", str(db)],
        ["search", "--space", str(tmp_path / "missing.yaml"), "--db", str(db)],
        [
            "search",
            "--space",
            str(space),
            "--db",
            str(db),
            "--storage",
            "postgresql://nobody@127.0.0.1:9/x",
        ],
    ]
    for args in cases:
        result = cli.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("harness: error:") and result.stderr.count("\n") == 1
        assert not db.exists()


@pytest.mark.parametrize(("name", "layers"), [("demo", 30), ("sakura-solar", 4), ("solar-dus", 32)])
def test_example_spaces_validate_with_local_stand_ins(tmp_path, name, layers):
    """The shipped spaces are complete: with tiny local stand-ins for their models (hub or
    demo) and preference data, every method, alignment candidate and reference resolves."""
    from tests.tiny import make_tiny_llama

    repo = Path(__file__).parent.parent
    space = yaml.safe_load((repo / "search" / f"{name}.yaml").read_text())
    space["models"] = {
        alias: str(make_tiny_llama(tmp_path / alias, seed=i, num_layers=layers))
        for i, alias in enumerate(space["models"])
    }
    for template in space.get("align", {}).values():
        if template:
            for source in template["data"]:  # keep each source's own name (sDPO chunks)
                source.setdefault("name", source["path"].removeprefix("demo:").split("/")[-1])
                source["path"] = TOY_PREFS
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space))
    loaded = load_space(path)
    assert loaded.methods and loaded.align


def test_reference_models_are_scored_once_beside_the_trials(tmp_path, tiny_models, data):
    """The base and donors are scored on the same suites (rows beside the trials, objective
    included) once per study: never Optuna trials, never rescored on resume."""
    space = write_space(tmp_path, tiny_models, data, references=["$base", "$donor_a"])
    runner, outcome = run(space, tmp_path, 2)
    assert [r.model_ref for r in outcome.references] == [
        str(tiny_models["base"]),
        str(tiny_models["donor_a"]),
    ]
    assert len(runner.study.trials) == 2  # references are not trials
    rows = db_rows(
        tmp_path,
        "SELECT model_ref, source, study, objective, objective_stderr FROM trials WHERE trial_number IS NULL",
    )
    assert len(rows) == 2 and all(r[1] == "eval" and r[2] == "tiny" and r[3] is not None for r in rows)
    runner, outcome = run(space, tmp_path, 3)
    assert outcome.references == [] and db_rows(tmp_path, "SELECT count(*) FROM trials")[0][0] == 5
    with pytest.raises(HarnessError, match=r"references\[0\]: unknown model alias \$nobody"):
        load_space(write_space(tmp_path, tiny_models, data, references=["$nobody"]))


def test_timeout_stops_starting_trials_and_keeps_the_running_one(tmp_path, tiny_models, data):
    space = write_space(tmp_path, tiny_models, data, selection={"heldout_limit": 4, "confirm_top": 0})
    run(space, tmp_path, 1)  # warm: tasks built, donors read
    _, warm = run(space, tmp_path, 2)
    assert warm.finished == 2 and not warm.timed_out
    one_trial = warm.seconds
    # Half a trial's time: the trial that starts at once runs to its end and is recorded, and
    # no other starts; the budget (4) is not reached.
    _, outcome = run(space, tmp_path, 4, timeout=one_trial / 2)
    assert outcome.timed_out and outcome.ran == 1 and outcome.finished == 3
    assert db_rows(tmp_path, "SELECT count(*) FROM trials WHERE status = 'ok'")[0][0] == 3
    # The same command without the limit goes on to the budget.
    _, outcome = run(space, tmp_path, 4)
    assert outcome.finished == 4 and not outcome.timed_out


def test_cli_rejects_a_timeout_that_is_not_positive(tmp_path, tiny_models, data):
    db = tmp_path / "out" / "lb.duckdb"
    space = write_space(tmp_path, tiny_models, data)
    result = CliRunner().invoke(app, ["search", "--space", str(space), "--db", str(db), "--timeout", "0"])
    assert result.exit_code == 2, result.output
    assert "--timeout must be > 0" in result.stderr and result.stderr.count("\n") == 1
    assert not db.exists()


def test_a_second_board_in_the_folder_runs_its_own_study(tmp_path, tiny_models, data):
    """Two --db files in one folder with spaces of the same name: each gets its own journal
    (named after the board). A journal under the old study-only name is still resumed by its
    own board, and refused (one line, exit 2, nothing written) by a board that never saw its
    trials."""
    from harness.search.study import default_journal

    space = write_space(tmp_path, tiny_models, data, selection={"heldout_limit": 4, "confirm_top": 0})
    first, second = tmp_path / "first.duckdb", tmp_path / "second.duckdb"
    for db in (first, second):
        outcome = SearchRunner(load_space(space), SearchOptions(budget=1, db=db)).run()
        assert outcome.ran == 1 and outcome.finished == 1  # the second board ran its own trial
    assert default_journal(first, "tiny").name == "optuna-first-tiny.journal"
    assert default_journal(first, "tiny").exists() and default_journal(second, "tiny").exists()

    older = tmp_path / "optuna-tiny.journal"  # as a search before this change named it
    default_journal(first, "tiny").rename(older)
    assert default_journal(first, "tiny") == older
    resumed = SearchRunner(load_space(space), SearchOptions(budget=1, db=first)).run()
    assert resumed.ran == 0 and resumed.finished == 1  # its own board: resumed, budget met
    third = tmp_path / "third.duckdb"
    before = older.stat().st_size
    res = CliRunner().invoke(app, ["search", "--space", str(space), "--db", str(third), "--no-report"])
    assert res.exit_code == 2, res.output
    assert "has 1 finished trials that" in res.stderr and "never recorded" in res.stderr
    assert res.stderr.count("\n") == 1
    assert not third.exists() and older.stat().st_size == before


def test_the_report_is_written_while_the_search_runs(tmp_path, tiny_models, data):
    """Issue 35's first run: the report is rewritten after every finished trial (a newcomer
    opens it minutes in), said once on the console, and skipped when nothing changed."""
    from harness.report.live import LiveReport

    space = write_space(tmp_path, tiny_models, data)
    options = SearchOptions(budget=2, db=tmp_path / "lb.duckdb")
    runner = SearchRunner(load_space(space), options)
    said: list[str] = []
    out = tmp_path / "report" / "index.html"
    live = LiveReport(runner.board, out, said.append)
    seen: list[int] = []

    def after_record() -> None:
        live()
        seen.append(len(json.loads(out.with_suffix(".json").read_text())["trials"]) if out.exists() else -1)

    runner.after_record = after_record
    runner.run()
    assert seen == [-1, 1, 2] and live.writes == 2  # no references: nothing to show before trial 0
    assert said == [f"report: {out} (open it now: it is rewritten after every trial)"]
    live()  # the end-of-run confirmations changed the board
    live()  # nothing new since: not rewritten
    assert live.writes == 3
