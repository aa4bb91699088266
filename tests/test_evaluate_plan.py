"""Suites and data resolution, without a model: names, layouts, substitutes, "no data"."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import pytest
import yaml

import harness.evaluate.datasources as datasources
import harness.evaluate.tasks as tasks
from harness.errors import HarnessError
from harness.evaluate import (
    CPU_QUICK,
    PROFILES,
    SUITES,
    parse_suites,
    plan_evaluation,
    summary_keys,
)
from tests.fixtures.evaluate_data import build_data_dir, isolated_eval_env


@pytest.fixture(scope="module", autouse=True)
def env(tmp_path_factory) -> Path:
    with isolated_eval_env(tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("hf_cache")) as home:
        yield home


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return build_data_dir(tmp_path_factory.mktemp("eval_data"))


def _leaf(plan, name: str, shots: int | None = None):
    for target in plan.targets.values():
        for node in target.node.walk():
            if node.name == name:
                return node
    raise KeyError(name)


# --------------------------------------------------------------------------- suites


def test_parse_suites_accepts_suites_and_lm_eval_names() -> None:
    assert parse_suites(" h4, mmlu,,kmmlu ,h4") == ["h4", "mmlu", "kmmlu"]
    assert parse_suites("mmlu_anatomy,arc_easy") == ["mmlu_anatomy", "arc_easy"]
    assert parse_suites(["kmmlu"]) == ["kmmlu"]


@pytest.mark.parametrize("text", ["h5", "mmlu,not_a_task", "", " , "])
def test_bad_suite_name_is_a_harness_error(text: str) -> None:
    with pytest.raises(HarnessError) as err:
        parse_suites(text)
    assert "\n" not in str(err.value)


def test_unknown_suite_suggests_close_names() -> None:
    with pytest.raises(HarnessError, match="did you mean.*h4"):
        parse_suites("h44")


def test_registry_is_data_and_summary_keys_follow_it() -> None:
    assert set(SUITES) == {"h4", "mmlu", "kmmlu"}
    h4 = SUITES["h4"]
    assert [(p.task, p.num_fewshot, p.metric) for p in h4.parts] == [
        ("arc_challenge", 25, "acc_norm"),
        ("hellaswag", 10, "acc_norm"),
        ("mmlu", 5, "acc"),
        ("truthfulqa_mc2", 0, "acc"),
    ]
    assert summary_keys(["h4", "kmmlu"]) == {
        "arc_challenge",
        "hellaswag",
        "mmlu",
        "mmlu_macro",
        "truthfulqa_mc2",
        "h4",
        "h4_partial",
        "kmmlu",
        "kmmlu_micro",
    }
    assert summary_keys(["arc_easy"]) == {"arc_easy_0shot_acc"}  # a bare task: its setting in the key
    assert summary_keys(["tinyArc"]) == {"tinyArc_25shot_acc_norm"}
    assert CPU_QUICK["limit"] == 20 and PROFILES["cpu-quick"] is CPU_QUICK


# --------------------------------------------------------------------------- resolution


def test_fixture_layouts_resolve_to_local_yaml(data: Path) -> None:
    plan = plan_evaluation(["h4", "kmmlu"], data_dir=data)
    arc = _leaf(plan, "arc_challenge").source
    assert arc.kind == "local" and arc.origin == "user"
    assert arc.overrides["test_split"] == "validation"
    assert arc.overrides["fewshot_split"] == "validation"
    assert "validation split instead of test" in arc.data_source
    assert "few-shot from validation (excluding the question) instead of train" in arc.data_source
    hellaswag = _leaf(plan, "hellaswag").source
    assert "few-shot from validation" in hellaswag.data_source
    assert "instead of test" not in hellaswag.data_source  # lm-eval scores validation too
    anatomy = _leaf(plan, "mmlu_anatomy").source
    assert anatomy.data_source == f"user:{data}/hails/mmlu_no_train/anatomy/test"
    assert anatomy.notes == ()
    kmmlu = _leaf(plan, "kmmlu_accounting").source
    assert kmmlu.local.builder == "csv"
    assert kmmlu.data_source.endswith("HAERAE-HUB/KMMLU/data/Accounting-test.csv")
    tqa = _leaf(plan, "truthfulqa_mc2").source
    assert tqa.local.builder == "parquet"

    # The generated YAML includes lm-eval's own file and overrides only the data.
    body = yaml.safe_load((plan.include_dir / "kmmlu_accounting.yaml").read_text())
    assert body["include"].endswith("lm_eval/tasks/kmmlu/default/kmmlu_accounting.yaml")
    assert set(body) == {"include", "task", "tag", "dataset_path", "dataset_name", "dataset_kwargs"}
    assert body["dataset_path"] == "csv" and set(body["dataset_kwargs"]["data_files"]) == {
        "test",
        "dev",
    }
    # Partial groups are re-declared with the subtasks that have data only.
    group = yaml.safe_load((plan.include_dir / "mmlu_stem.yaml").read_text())
    assert group["group"] == "mmlu_stem" and group["task"] == ["mmlu_anatomy", "mmlu_astronomy"]
    assert not (plan.include_dir / "mmlu_humanities.yaml").exists()  # nothing to run there


def test_include_dir_is_deterministic(data: Path) -> None:
    first = plan_evaluation(["mmlu"], data_dir=data).include_dir
    assert plan_evaluation(["mmlu"], data_dir=data).include_dir == first
    assert first.parent == tasks.harness_home() / "lm_eval_tasks"


def test_runs_share_tasks_and_group_by_fewshot(data: Path) -> None:
    plan = plan_evaluation(["h4", "mmlu", "mmlu_anatomy", "kmmlu"], data_dir=data)
    runs = {(r.num_fewshot, tuple(r.tasks)) for r in plan.runs}
    # mmlu appears once at 5-shot (h4 and mmlu share it), with kmmlu in the same call;
    # mmlu_anatomy in its YAML setting (0-shot, named in its key) joins the 0-shot run.
    assert (5, ("mmlu", "kmmlu")) in runs or (5, ("kmmlu", "mmlu")) in runs
    assert (0, ("truthfulqa_mc2", "mmlu_anatomy")) in runs
    assert sum(1 for r in plan.runs for t in r.tasks if t == "mmlu") == 1


def test_nested_request_is_not_run_twice(data: Path) -> None:
    plan = plan_evaluation(["mmlu", "mmlu_anatomy"], data_dir=data)
    assert [r.tasks for r in plan.runs if r.num_fewshot == 5] == [["mmlu"]]


def test_user_data_wins_over_demo_and_demo_over_hub(data: Path, tmp_path, monkeypatch) -> None:
    demo = tmp_path / "demo"
    shutil.copytree(data / "hails", demo / "hails")
    monkeypatch.setattr(datasources, "demo_datasets_root", lambda: demo)
    user = tmp_path / "user"
    shutil.copytree(data / "hails/mmlu_no_train/anatomy", user / "cais/mmlu/anatomy")
    plan = plan_evaluation(["mmlu_anatomy", "mmlu_astronomy"], data_dir=user)
    assert _leaf(plan, "mmlu_anatomy").source.data_source.startswith(f"user:{user}/cais/mmlu")
    assert _leaf(plan, "mmlu_astronomy").source.data_source == "demo:hails/mmlu_no_train/astronomy/test"


def test_env_data_dir_is_used(data: Path, monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_DATA_DIR", str(data))
    plan = plan_evaluation(["mmlu_anatomy"])
    assert _leaf(plan, "mmlu_anatomy").source.origin == "user"


def test_missing_data_dir_is_a_harness_error(tmp_path) -> None:
    with pytest.raises(HarnessError, match="not a folder"):
        plan_evaluation(["mmlu_anatomy"], data_dir=tmp_path / "nope")


def test_hub_is_used_only_when_online(tmp_path, monkeypatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    offline = plan_evaluation(["truthfulqa_mc2"], data_dir=empty)
    source = _leaf(offline, "truthfulqa_mc2").source
    assert source.kind == "none" and offline.runs == []
    assert source.data_source.startswith("no data: TruthfulQA (truthfulqa/truthful_qa/")
    assert "truthfulqa/truthful_qa/multiple_choice/validation" in source.data_source
    assert "--data-dir" in source.data_source

    monkeypatch.setattr(tasks, "hub_offline", lambda: False)
    online = plan_evaluation(["truthfulqa_mc2"], data_dir=empty)
    assert _leaf(online, "truthfulqa_mc2").source.data_source == (
        "hub:truthfulqa/truthful_qa/multiple_choice"
    )
    assert online.include_dir is None  # lm-eval's own task, untouched
    assert [r.tasks for r in online.runs] == [["truthfulqa_mc2"]]


def test_unregistered_dataset_offline_is_no_data(tmp_path) -> None:
    plan = plan_evaluation(["piqa"], data_dir=None)
    source = _leaf(plan, "piqa").source
    assert source.kind == "none" and "offline" in source.data_source


def test_missing_column_names_the_column(data: Path, tmp_path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(data / "HAERAE-HUB", broken / "HAERAE-HUB")
    path = broken / "HAERAE-HUB/KMMLU/data/Biology-test.csv"
    with path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["question", "A", "B", "C", "D"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in writer.fieldnames} for r in rows)
    with pytest.raises(HarnessError, match=r"Biology-test\.csv has no column 'answer'"):
        plan_evaluation(["kmmlu_biology"], data_dir=broken)


def test_missing_column_in_save_to_disk_layout(tmp_path) -> None:
    import datasets

    root = tmp_path / "data"
    rows = [{"question": "q", "choices": ["a", "b", "c", "d"], "solution": 0}]
    for split in ("test", "dev"):
        datasets.Dataset.from_list(rows).save_to_disk(str(root / f"cais/mmlu/anatomy/{split}"))
    with pytest.raises(HarnessError, match="no column 'answer'"):
        plan_evaluation(["mmlu_anatomy"], data_dir=root)


def test_expected_lm_eval_warnings_are_dropped_others_kept(caplog):
    import harness.evaluate.runner  # noqa: F401  (installs the filter)

    with caplog.at_level("WARNING"):
        logging.getLogger("lm_eval.evaluator").warning("Overwriting default num_fewshot of x from None to 0")
        logging.getLogger("lm_eval.models.huggingface").warning(
            "Passed an already-initialized model through `pretrained`, assuming single-process call"
        )
        logging.getLogger("lm_eval.evaluator").warning("a warning the user must see")
    assert [r.getMessage() for r in caplog.records] == ["a warning the user must see"]
