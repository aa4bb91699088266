"""evaluate_model on a tiny real Llama: prompts, scores vs the lm-eval CLI, aggregates."""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import datasets
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.evaluate import EvalResult, Score, evaluate_model, plan_evaluation
from harness.evaluate.tasks import default_task_index, run_task_manager
from tests.fixtures.evaluate_data import (
    HERE,
    KMMLU_SUBJECTS,
    build_data_dir,
    isolated_eval_env,
    read_jsonl,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def env(tmp_path_factory) -> Path:
    with isolated_eval_env(tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("hf_cache")) as home:
        yield home


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return build_data_dir(tmp_path_factory.mktemp("eval_data"))


@pytest.fixture(scope="module")
def tiny(tiny_models) -> tuple[Path, Any, Any]:
    path = tiny_models["base"]
    return path, AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def _rows(result: EvalResult, task: str) -> dict[str, Score]:
    return {s.metric: s for s in result.scores if s.task == task}


# --------------------------------------------------------------------------- prompts


def _official_task(name: str, splits: dict[str, list[dict]]):
    """lm-eval's own task config for ``name`` with only its documents swapped in memory."""
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(default_task_index()[name].yaml_path)
    for key in ("tag", "group", "task_list"):
        cfg.pop(key, None)
    docs = datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()})

    def download(self, *args, **kwargs) -> None:
        self.dataset = docs

    with mock.patch.object(ConfigurableTask, "download", download):
        return ConfigurableTask(config=cfg)


def _requests(task, shots: int) -> list[tuple[int, int, tuple]]:
    task.set_config(key="num_fewshot", value=shots)
    task.set_fewshot_seed(seed=1234)  # simple_evaluate's default fewshot_random_seed
    task.build_all_requests(limit=None, rank=0, world_size=1)
    return sorted((i.doc_id, i.idx, i.args) for i in task.instances)


def _ours(plan, name: str):
    return run_task_manager(str(plan.include_dir)).load([name])["tasks"][name]


def _csv_rows(name: str) -> list[dict]:
    return datasets.load_dataset("csv", data_files=str(HERE / "kmmlu/data" / name))["train"].to_list()


def test_mmlu_and_kmmlu_prompts_equal_lm_eval_own(data: Path) -> None:
    plan = plan_evaluation(["mmlu_anatomy", "kmmlu_accounting"], data_dir=data)
    dev = [r for r in read_jsonl("mmlu_dev.jsonl") if r["subject"] == "anatomy"]
    test = [r for r in read_jsonl("mmlu_test.jsonl") if r["subject"] == "anatomy"]
    official = _official_task("mmlu_anatomy", {"test": test, "dev": dev})
    assert _requests(_ours(plan, "mmlu_anatomy"), 5) == _requests(official, 5)

    kmmlu = {s: _csv_rows(f"{KMMLU_SUBJECTS[0]}-{s}.csv") for s in ("test", "dev")}
    task = _ours(plan, "kmmlu_accounting")
    ours = _requests(task, 5)
    assert ours == _requests(_official_task("kmmlu_accounting", kmmlu), 5)
    first_doc = [args for doc_id, _, args in ours if doc_id == 0]
    assert [c for _, c in first_doc] == [" A", " B", " C", " D"]
    context = first_doc[0][0]
    assert context.endswith("매출원가가 속하는 항목은?\nA. 자산\nB. 비용\nC. 부채\nD. 자본\n정답：")
    assert task.doc_to_target(task.eval_docs[0]) == 1  # CSV answer 2 -> index answer-1
    assert context.count("정답：") == 6  # five dev examples, then the question


def test_arc_hellaswag_truthfulqa_prompts_equal_lm_eval_own(data: Path) -> None:
    plan = plan_evaluation(["h4"], data_dir=data)
    arc = read_jsonl("arc_challenge.jsonl")
    hellaswag = read_jsonl("hellaswag.jsonl")
    cases = {
        "arc_challenge": {"test": arc, "train": arc, "validation": arc},
        "hellaswag": {"validation": hellaswag, "train": hellaswag},
        "truthfulqa_mc2": {"validation": read_jsonl("truthfulqa_mc.jsonl")},
    }
    for name, splits in cases.items():
        assert _requests(_ours(plan, name), 0) == _requests(_official_task(name, splits), 0), name


@pytest.mark.parametrize("name", ["arc_challenge", "hellaswag"])
def test_substitute_fewshot_uses_lm_eval_formatting_and_never_the_question(data: Path, name: str) -> None:
    """Few-shot comes from the evaluated split: blocks are lm-eval's, the question is not."""
    plan = plan_evaluation(["h4"], data_dir=data)
    ours = _ours(plan, name)
    pool = list(ours.fewshot_docs())
    formatted = {
        ours.doc_to_text(d) + ours.config.target_delimiter + ours.doc_to_choice(d)[ours.doc_to_target(d)]
        for d in pool
    }
    for doc_id, _, (context, _) in _requests(ours, 3):
        blocks = context.split(ours.config.fewshot_delimiter)
        question = ours.doc_to_text(ours.eval_docs[doc_id])
        assert blocks[-1] == question and len(blocks) == 4
        assert all(b in formatted for b in blocks[:-1])
        own = question + ours.config.target_delimiter
        assert not any(b.startswith(own) for b in blocks[:-1])


# --------------------------------------------------------------------------- scores


def _cli(model_dir: Path, args: list[str], out: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "lm_eval", "--model", "hf"]
    cmd += ["--model_args", f"pretrained={model_dir}", "--device", "cpu", "--output_path", str(out)]
    proc = subprocess.run(cmd + args, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(out.rglob("results_*.json"))
    assert files, proc.stderr[-2000:]
    return json.loads(files[-1].read_text())


def test_scores_equal_lm_eval_cli(data: Path, tiny, tmp_path) -> None:
    model_dir, model, tokenizer = tiny
    suites = ["h4", "kmmlu"]
    limit = 3
    result = evaluate_model(model, tokenizer, suites, limit=limit, data_dir=data, progress=False)
    plan = plan_evaluation(suites, data_dir=data)
    assert len(plan.runs) == 4  # 25-, 10-, 5- (mmlu + kmmlu together) and 0-shot
    ours = {(s.task, s.metric, s.num_fewshot): s for s in result.scores if s.value is not None}
    compared = 0
    for i, run in enumerate(plan.runs):
        cli = _cli(model_dir, plan.lm_eval_cli_args(run, limit=limit), tmp_path / f"run{i}")
        shots = cli["n-shot"]
        for task, metrics in cli["results"].items():
            for key, value in metrics.items():
                if "," not in key or "_stderr" in key:
                    continue
                metric = key.split(",")[0]
                n = shots.get(task, run.num_fewshot)
                if task in cli.get("groups", {}):
                    n = run.num_fewshot
                score = ours[(task, metric, n)]
                assert score.value == pytest.approx(value, abs=1e-9), (task, metric)
                stderr = metrics.get(f"{metric}_stderr,none")
                if isinstance(stderr, float):
                    assert score.stderr == pytest.approx(stderr, abs=1e-9), (task, metric)
                if task in cli["n-samples"]:
                    assert score.n_samples == cli["n-samples"][task]["effective"]
                compared += 1
        for task, version in cli["versions"].items():
            assert result.task_versions[task] == str(version)
    assert compared >= 15
    assert result.limit == limit and result.seconds > 0


def test_mmlu_micro_and_macro_from_subjects(data: Path, tiny) -> None:
    _, model, tokenizer = tiny
    result = evaluate_model(model, tokenizer, ["mmlu"], data_dir=data, progress=False)
    subjects = [_rows(result, f"mmlu_{s}")["acc"] for s in ("anatomy", "astronomy", "business_ethics")]
    assert [s.n_samples for s in subjects] == [6, 5, 4]  # unequal sizes: micro != macro
    micro = sum(s.value * s.n_samples for s in subjects) / sum(s.n_samples for s in subjects)
    macro = sum(s.value for s in subjects) / 3
    assert result.summary["mmlu"] == pytest.approx(micro, abs=1e-12)
    assert result.summary["mmlu_macro"] == pytest.approx(macro, abs=1e-12)
    group = _rows(result, "mmlu")
    assert group["acc"].aggregate and group["acc"].n_samples == 15
    assert group["acc_macro"].value == result.summary["mmlu_macro"]
    assert group["acc"].data_source.startswith("partial: 3 of 57 subtasks have data (user)")
    # Subjects without data are rows with None, never dropped and never 0.
    missing = _rows(result, "mmlu_world_religions")["acc"]
    assert missing.value is None and missing.data_source.startswith("no data: MMLU")
    humanities = _rows(result, "mmlu_humanities")["acc"]
    assert humanities.value is None and humanities.aggregate


def test_h4_is_none_with_partial_when_a_part_has_no_data(tmp_path, tiny, capfd) -> None:
    _, model, tokenizer = tiny
    data = build_data_dir(tmp_path / "data", parts=("mmlu", "arc", "hellaswag"))
    capfd.readouterr()
    result = evaluate_model(model, tokenizer, ["h4"], limit=2, data_dir=data, progress=False)
    assert "it/s]" not in capfd.readouterr().err  # progress=False: no bars
    summary = result.summary
    assert summary["h4"] is None
    assert summary["truthfulqa_mc2"] is None
    parts = [summary["arc_challenge"], summary["hellaswag"], summary["mmlu_macro"]]
    assert all(v is not None for v in parts)
    assert summary["h4_partial"] == pytest.approx(sum(parts) / 3)
    h4 = _rows(result, "h4")["mean"]
    assert h4.value is None and "missing parts truthfulqa_mc2" in h4.data_source
    partial = _rows(result, "h4_partial")["mean"]
    assert partial.data_source.startswith("partial: mean of arc_challenge, hellaswag, mmlu_macro")
    tqa = _rows(result, "truthfulqa_mc2")["acc"]
    assert tqa.value is None and tqa.num_fewshot == 0
    assert tqa.data_source.startswith("no data: TruthfulQA")
    arc = _rows(result, "arc_challenge")["acc_norm"]
    assert arc.n_samples == 2 and arc.num_fewshot == 25
    # Each headline carries the stderr and source of the row it came from; the partial
    # total pools its parts' stderrs (independent benchmarks).
    errors, sources = result.summary_stderr, result.summary_source
    assert errors["arc_challenge"] == arc.stderr and sources["arc_challenge"] == arc.data_source
    assert errors["mmlu_macro"] == _rows(result, "mmlu")["acc_macro"].stderr
    assert errors["truthfulqa_mc2"] is None and errors["h4"] is None
    pooled = math.sqrt(sum(errors[k] ** 2 for k in ("arc_challenge", "hellaswag", "mmlu_macro"))) / 3
    assert errors["h4_partial"] == pytest.approx(pooled) and partial.stderr == errors["h4_partial"]
    assert "validation split instead of test" in arc.data_source


def test_suite_with_no_data_anywhere_runs_nothing(tmp_path, tiny) -> None:
    _, model, tokenizer = tiny
    empty = tmp_path / "empty"
    empty.mkdir()
    with mock.patch("lm_eval.simple_evaluate") as run:
        result = evaluate_model(model, tokenizer, ["kmmlu"], data_dir=empty, progress=False)
    run.assert_not_called()
    assert result.summary == {"kmmlu": None, "kmmlu_micro": None}
    rows = [s for s in result.scores if s.task.startswith("kmmlu")]
    assert len({s.task for s in rows}) == 45 + 4 + 1  # subjects, categories, group
    assert all(s.value is None and s.data_source.startswith("no data:") for s in rows)


def test_every_aggregate_is_recomputable_from_the_samples(data: Path, tiny, tmp_path) -> None:
    """The samples table holds lm-eval's per-question values; every number the harness shows
    is a mean of them (per task), a size-weighted mean (lm-eval groups) or a mean of task means
    (macro numbers, H4), recomputed here in SQL from the DuckDB file alone."""
    import duckdb

    from harness.record import Leaderboard, TrialRecord

    _, model, tokenizer = tiny
    result = evaluate_model(model, tokenizer, ["h4", "kmmlu"], limit=3, data_dir=data, progress=False)
    db = tmp_path / "lb.duckdb"
    tid = Leaderboard(db).record(TrialRecord(name="tiny", source="eval"), result)
    with duckdb.connect(str(db), read_only=True) as con:
        per_task = {
            (task, metric, shots): (mean, n)
            for task, metric, shots, mean, n in con.execute(
                "SELECT task, metric, num_fewshot, avg(value), count(*) FROM samples WHERE trial_id = ? "
                "GROUP BY ALL",
                [tid],
            ).fetchall()
        }
        checked = 0
        for task, metric, shots, value, n in con.execute(
            "SELECT task, metric, num_fewshot, value, n_samples FROM scores "
            "WHERE trial_id = ? AND NOT aggregate AND value IS NOT NULL",
            [tid],
        ).fetchall():
            assert per_task[(task, metric, shots)] == (pytest.approx(value, abs=1e-12), n), (task, metric)
            checked += 1
        assert checked >= 10
        micro, macro = con.execute(
            """SELECT avg(value), (SELECT avg(m) FROM (SELECT avg(value) AS m FROM samples
                   WHERE trial_id = $1 AND task LIKE 'mmlu\\_%' ESCAPE '\\' AND metric = 'acc' GROUP BY task))
               FROM samples WHERE trial_id = $1 AND task LIKE 'mmlu\\_%' ESCAPE '\\' AND metric = 'acc'""",
            [tid],
        ).fetchone()
        kmmlu = con.execute(
            """SELECT avg(m) FROM (SELECT avg(value) AS m FROM samples
               WHERE trial_id = ? AND task LIKE 'kmmlu\\_%' ESCAPE '\\' AND metric = 'acc' GROUP BY task)""",
            [tid],
        ).fetchone()[0]
        splits = dict(con.execute("SELECT task, any_value(split) FROM samples GROUP BY task").fetchall())
        # Generic: every headline with data is sum(weight * task mean) over its summary_parts.
        recomputed = dict(
            con.execute(
                """SELECT p.name, sum(p.weight * m.mean) FROM summary_parts p JOIN
                   (SELECT task, metric, num_fewshot, avg(value) AS mean FROM samples WHERE trial_id = $1
                    GROUP BY ALL) m
                   ON p.task = m.task AND p.metric = m.metric AND p.num_fewshot IS NOT DISTINCT FROM m.num_fewshot
                   WHERE p.trial_id = $1 GROUP BY p.name""",
                [tid],
            ).fetchall()
        )
        stored = dict(
            con.execute(
                "SELECT name, value FROM suite_scores WHERE trial_id = ? AND value IS NOT NULL", [tid]
            ).fetchall()
        )
    assert result.summary["mmlu"] == pytest.approx(micro, abs=1e-12)
    assert result.summary["mmlu_macro"] == pytest.approx(macro, abs=1e-12)
    assert result.summary["kmmlu"] == pytest.approx(kmmlu, abs=1e-12)
    parts = ("arc_challenge", "hellaswag", "mmlu_macro", "truthfulqa_mc2")
    assert result.summary["h4"] == pytest.approx(sum(result.summary[k] for k in parts) / 4, abs=1e-12)
    assert set(recomputed) == set(stored) and {"h4", "mmlu", "mmlu_macro", "kmmlu", "kmmlu_micro"} <= set(
        stored
    )
    for key, value in stored.items():
        assert recomputed[key] == pytest.approx(value, abs=1e-12), key
    # The split each document came from (the fixtures have no ARC test split: validation).
    assert splits["arc_challenge"] == "validation" and splits["mmlu_anatomy"] == "test"


def test_bare_task_key_names_its_setting_and_never_fills_a_board_column(data: Path, tiny, tmp_path) -> None:
    """`harness eval M --suite arc_challenge` measures ARC-C in its YAML setting (0-shot, acc):
    stored under a key saying so, it never lands in H4's 25-shot acc_norm column."""
    from harness.record import Leaderboard, TrialRecord

    _, model, tokenizer = tiny
    result = evaluate_model(model, tokenizer, ["arc_challenge"], limit=2, data_dir=data, progress=False)
    zero_shot = _rows(result, "arc_challenge")["acc"]
    assert zero_shot.num_fewshot == 0
    assert result.summary == {"arc_challenge_0shot_acc": zero_shot.value}
    db = tmp_path / "lb.duckdb"
    Leaderboard(db).record(TrialRecord(name="tiny", source="eval"), result)
    (row,) = Leaderboard(db).ranking()
    assert row["arc_challenge"] is None and row["average"] is None
    assert row["arc_challenge_0shot_acc"] == zero_shot.value


def _fresh_task_managers() -> None:
    run_task_manager.cache_clear()  # the data folder's manager: the one that loads tasks


def _numbers(result: EvalResult) -> tuple[list[tuple], list[tuple]]:
    scores = sorted((s.task, s.metric, s.num_fewshot, s.value, s.stderr) for s in result.scores)
    samples = sorted((s.task, s.num_fewshot, s.doc_id, s.doc_hash, s.metric, s.value) for s in result.samples)
    return scores, samples


def test_tasks_are_built_once_per_process_and_reuse_gives_fresh_numbers(data: Path, tiny) -> None:
    """Rungs, trials and reference models re-run the same tasks: they are built once, and every
    later run (other questions, other shots of the same task) equals one on freshly built tasks."""
    from lm_eval.api.task import ConfigurableTask

    _, model, tokenizer = tiny
    calls = [(["h4"], 2), (["hellaswag", "arc_challenge"], 3), (["h4"], 4)]

    def run(suites: list[str], limit: int) -> EvalResult:
        return evaluate_model(model, tokenizer, suites, limit=limit, data_dir=data, progress=False)

    fresh = []
    for suites, limit in calls:
        _fresh_task_managers()
        fresh.append(_numbers(run(suites, limit)))

    _fresh_task_managers()
    built = mock.patch.object(
        ConfigurableTask, "__init__", side_effect=ConfigurableTask.__init__, autospec=True
    )
    with built as init:
        reused = [_numbers(run(suites, limit)) for suites, limit in calls]
    assert reused == fresh
    leaves = {"arc_challenge", "hellaswag", "truthfulqa_mc2"} | {
        f"mmlu_{s}" for s in ("anatomy", "astronomy", "business_ethics")
    }
    names = [c.args[0].config.task for c in init.call_args_list]
    assert leaves <= set(names)
    # h4's tasks once each, plus the bare tasks' own list (another load key) once.
    assert len(names) == len(set(names)) + 2, sorted(names)


def test_reused_task_gets_its_own_shots_back(data: Path) -> None:
    """simple_evaluate leaves a run's shots on a task when the next run names none: reuse
    must hand the task out with the shots a fresh build has."""
    plan = plan_evaluation(["arc_challenge"], data_dir=data)
    manager = run_task_manager(str(plan.include_dir))
    task = manager.load(["arc_challenge"])["tasks"]["arc_challenge"]
    own = task.get_config("num_fewshot")
    task.set_config(key="num_fewshot", value=25)
    again = manager.load(["arc_challenge"])["tasks"]["arc_challenge"]
    assert again is task and again.get_config("num_fewshot") == own


def test_the_machine_is_described_once_per_process(data: Path, tiny, monkeypatch) -> None:
    """simple_evaluate describes the machine (torch's collect_env: pip, compilers, nvidia-smi;
    0.5 s a call) at the end of every call; a process describes it once and reuses that."""
    import lm_eval.evaluator
    import torch.utils.collect_env

    from harness.evaluate import lm_eval_compat

    _, model, tokenizer = tiny
    described = mock.Mock(wraps=torch.utils.collect_env.get_pretty_env_info)
    monkeypatch.setattr(torch.utils.collect_env, "get_pretty_env_info", described)
    monkeypatch.setattr(lm_eval_compat, "_described", {})
    upstream = lm_eval.evaluator.add_env_info
    for limit in (2, 3):  # h4 is 4 simple_evaluate calls (25-, 10-, 5- and 0-shot runs)
        evaluate_model(model, tokenizer, ["h4"], limit=limit, data_dir=data, progress=False)
    assert described.call_count == 1
    assert "pretty_env_info" in lm_eval_compat._described
    assert lm_eval.evaluator.add_env_info is upstream  # the swap ends with the call


def test_prompt_templates_are_compiled_once_with_the_same_prompts(data: Path, tiny, monkeypatch) -> None:
    """lm-eval compiles a task's Jinja template for every document; inside evaluate_model each
    template is compiled once. The scores and every logged prompt stay lm-eval's own, and the
    swap ends with the call. Fails when lm-eval stops rendering through ``utils.apply_template``."""
    import lm_eval.utils

    from harness.evaluate import lm_eval_compat

    _, model, tokenizer = tiny
    upstream = lm_eval.utils.apply_template
    compiled = mock.Mock(wraps=lm_eval.utils.env.from_string)
    monkeypatch.setattr(lm_eval.utils.env, "from_string", compiled)
    lm_eval_compat._compiled_template.cache_clear()
    kw = {"limit": 3, "data_dir": data, "progress": False}
    ours = evaluate_model(model, tokenizer, ["arc_challenge"], **kw)
    assert 0 < compiled.call_count <= 4  # one per distinct template, not one per document
    assert lm_eval.utils.apply_template is upstream
    with monkeypatch.context() as m:  # lm-eval's own rendering, compiling per document
        m.setattr(lm_eval_compat, "templates_compiled_once", contextlib.nullcontext)
        m.setattr(lm_eval_compat, "REUSE_REQUESTS", False)  # its prompts rendered again too
        stock = evaluate_model(model, tokenizer, ["arc_challenge"], **kw)
    assert compiled.call_count > 4 * 3
    assert ours.scores == stock.scores
    assert [(s.task, s.doc_id, s.value) for s in ours.samples] == [
        (s.task, s.doc_id, s.value) for s in stock.samples
    ]


def test_chosen_documents_are_upstreams_without_reading_the_rest(data: Path) -> None:
    """A reused task picks ``samples=`` documents by index; lm-eval's own ``doc_iterator``
    decodes the whole split to find them. Both must yield the same (position, document) pairs:
    this fails when an lm-eval upgrade changes what ``samples=`` means."""
    plan = plan_evaluation(["arc_challenge"], data_dir=data)
    task = _ours(plan, "arc_challenge")
    assert "doc_iterator" in vars(task)  # the harness's, not the class's
    upstream = type(task).doc_iterator
    n = len(task.eval_docs)
    for samples in ([3, 0, 5], [n - 1, 1, 1], list(range(n))):
        for rank, world_size in ((0, 1), (1, 2)):
            kwargs = {"rank": rank, "world_size": world_size, "samples": samples}
            assert list(task.doc_iterator(**kwargs)) == list(upstream(task, **kwargs))
    assert list(task.doc_iterator(limit=2)) == list(upstream(task, limit=2))
    with pytest.raises(AssertionError):
        list(task.doc_iterator(samples=[n]))


def test_lm_eval_prints_nothing_about_git_outside_a_checkout(data: Path, tiny, tmp_path, capfd, monkeypatch):
    """lm-eval asks git for the working directory's commit on every call, with the terminal as
    git's stderr: outside a checkout that printed ``fatal: not a git repository`` each time."""
    import lm_eval.evaluator

    from harness.evaluate import lm_eval_compat

    _, model, tokenizer = tiny
    monkeypatch.chdir(tmp_path)  # not a git checkout
    monkeypatch.setattr(lm_eval_compat, "_commit", [])
    capfd.readouterr()
    evaluate_model(model, tokenizer, ["arc_challenge"], limit=1, data_dir=data, progress=False)
    assert "not a git repository" not in capfd.readouterr().err
    assert lm_eval_compat._commit == [None]  # asked once, lm-eval's own answer outside a checkout
    assert lm_eval.evaluator.get_git_commit_hash is not lm_eval_compat._git_commit_once  # undone


def test_the_scoring_path_is_said_once_and_recorded_on_every_row(data: Path, tiny, tmp_path, caplog):
    """Shared-prefix, stock because the model cannot be served (a warning once, in plain words,
    with the cost), and stock asked for: each row with data records which, and `harness
    leaderboard --trial` and the report show it."""
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.evaluate import fast_lm
    from harness.evaluate import transformers_compat as tc
    from harness.evaluate.runner import STOCK_ASKED_FOR
    from harness.record import Leaderboard, TrialRecord
    from harness.report import generate_report

    _, model, tokenizer = tiny
    kwargs: dict[str, Any] = {"limit": 2, "data_dir": data, "progress": False}
    fast = evaluate_model(model, tokenizer, ["h4"], **kwargs)
    assert fast.scoring_path == "shared-prefix"
    asked = evaluate_model(model, tokenizer, ["h4"], fast=False, **kwargs)
    assert asked.scoring_path == STOCK_ASKED_FOR
    reason = "forward takes no logits_to_keep"
    with (
        mock.patch.object(tc, "shares_prefixes", return_value=reason),
        mock.patch.object(fast_lm, "_TOLD", set()),
    ):
        with caplog.at_level("WARNING", logger="harness.evaluate.fast_lm"):
            fallback = [evaluate_model(model, tokenizer, ["h4"], **kwargs) for _ in range(2)]
    told = [r.getMessage() for r in caplog.records if "stock HFLM" in r.getMessage()]
    assert len(told) == 1 and "slower, same numbers" in told[0] and reason in told[0]
    assert fallback[0].scoring_path == f"stock: the model's {reason}"
    assert fallback[0].summary == asked.summary == pytest.approx(fast.summary)

    board = Leaderboard(tmp_path / "lb.duckdb")
    ids = [
        board.record(TrialRecord(name=n, source="eval"), r)
        for n, r in (("fast", fast), ("slow", fallback[0]))
    ]
    for trial_id, result in zip(ids, (fast, fallback[0]), strict=True):
        rows = board.scores(trial_id)
        assert {r["scoring_path"] for r in rows if r["value"] is not None} == {result.scoring_path}
        assert all(r["scoring_path"] is None for r in rows if r["value"] is None)  # TruthfulQA: no data
    shown = CliRunner().invoke(app, ["leaderboard", "--db", str(board.path), "--trial", ids[1]])
    assert shown.exit_code == 0 and f"scored by: stock: the model's {reason}" in shown.stdout
    copy_id = board.record_copy(TrialRecord(name="copy", source="eval"), ids[0])
    assert {r["scoring_path"] for r in board.scores(copy_id) if r["value"] is not None} == {"shared-prefix"}
    html = generate_report(board, tmp_path / "index.html").html.read_text()
    assert html.count(f"stock: the model&#39;s {reason}") >= 2 and "shared-prefix" in html


def test_a_second_model_reuses_the_requests_and_their_tokens_with_the_same_numbers(
    data: Path, tiny, tiny_models
):
    """Every trial of a study scores the same requests with another model (issue 33): lm-eval's
    requests are built, and their tokens computed, by the first model's call only. A second
    model, with the same tokenizer loaded again (another object), computes neither, and its
    numbers equal a run that rebuilt and re-tokenised everything."""
    from lm_eval.models.huggingface import HFLM

    from harness.evaluate import encodings, lm_eval_compat

    _, first, tokenizer = tiny
    second = AutoModelForCausalLM.from_pretrained(tiny_models["donor_a"])
    second_tokenizer = AutoTokenizer.from_pretrained(tiny_models["donor_a"])

    def run(model: Any, tok: Any) -> EvalResult:
        return evaluate_model(model, tok, ["h4"], limit=3, data_dir=data, progress=False)

    _fresh_task_managers()
    encodings._encodings.clear()
    with mock.patch.object(lm_eval_compat, "REUSE_REQUESTS", False):
        rebuilt = _numbers(run(second, second_tokenizer))
    _fresh_task_managers()
    run(first, tokenizer)
    with (
        mock.patch.object(HFLM, "tok_encode", side_effect=HFLM.tok_encode, autospec=True) as tokenised,
        mock.patch("lm_eval.api.task.ConfigurableTask.fewshot_context", autospec=True) as contexts,
    ):
        reused = _numbers(run(second, second_tokenizer))
    assert tokenised.call_count == 0 and contexts.call_count == 0
    assert reused == rebuilt and reused[1]  # every score and every question's result


def test_the_request_internals_reuse_relies_on_are_lm_evals() -> None:
    """What reusing requests reads of lm-eval (``lm_eval_compat.requests_built_once`` and
    ``ReusesEncodings``): an upgrade that moves any of it fails here by name, not as stale
    requests. A new ``build_all_requests`` argument could change the requests without
    changing the key: the argument list is pinned."""
    import dataclasses
    import inspect

    from lm_eval.api.instance import Instance
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.task import Task

    assert "self._encode_pair(" in inspect.getsource(TemplateLM.loglikelihood)
    assert list(inspect.signature(TemplateLM._encode_pair).parameters) == ["self", "context", "continuation"]
    assert list(inspect.signature(Task.build_all_requests).parameters) == [
        "self",
        "limit",
        "samples",
        "rank",
        "world_size",
        "cache_requests",
        "rewrite_requests_cache",
        "system_instruction",
        "apply_chat_template",
        "fewshot_as_multiturn",
        "chat_template",
        "tokenizer_name",
    ]
    assert "self._instances = flattened_instances" in inspect.getsource(Task.build_all_requests)
    fields = {f.name for f in dataclasses.fields(Instance)}
    assert {"resps", "filtered_resps", "arguments", "doc"} <= fields
    seeding = inspect.getsource(Task.set_fewshot_seed)
    assert "self.fewshot_rnd = random.Random(seed)" in seeding and "self.sampler.set_rnd(seed)" in seeding
