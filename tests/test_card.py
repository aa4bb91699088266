"""From the board to a model people can use (issue 37): `harness build --trial ID` rebuilds a
recorded trial into a folder the ecosystem expects of a merge (weights, config, tokenizer,
mergekit_config.yml, recipe.yaml, a model card made with huggingface_hub), every file as the
umask says; the card read back with huggingface_hub gives the board's numbers exactly."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.repocard import metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results
from safetensors.torch import load_file
from typer.testing import CliRunner

from harness.cli import app
from harness.record import Leaderboard, TrialRecord
from tests.fixtures.evaluate_data import build_data_dir
from tests.test_search import ALIGN_SPACE, run, write_space

pytestmark = pytest.mark.usefixtures("eval_env")  # the module's private evaluation env (conftest)

CLI = CliRunner()
LOCK = Path(__file__).resolve().parents[1] / "requirements.lock"
# What a merge folder holds besides the tokenizer's own files.
FOLDER = {
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "mergekit_config.yml",
    "recipe.yaml",
    "README.md",
}


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return build_data_dir(tmp_path_factory.mktemp("eval_data"), parts=("arc",))


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_models, data) -> dict:
    """A tiny search (seed 0: trial 0 merges and aligns with DPO, trials 1 and 2 merge only),
    confirmed on held-out questions, with the base model scored beside it as a reference."""
    root = tmp_path_factory.mktemp("study")
    dpo = {**ALIGN_SPACE["dpo"], "beta": 0.1, "lora": {"r": 2, "alpha": 8}}
    space = write_space(
        root,
        tiny_models,
        data,
        align={"none": None, "dpo": dpo},
        references=["$base"],
        sampler={"name": "random", "seed": 0},
    )
    run(space, root, 3)
    board = Leaderboard(root / "lb.duckdb")
    rows = [r for r in board.ranking() if r["trial_number"] is not None and r["status"] == "ok"]
    return {
        "db": root / "lb.duckdb",
        "board": board,
        "dpo": next(r["id"] for r in rows if r["align_method"] == "dpo"),
        "merge": next(r["id"] for r in rows if r["align_method"] is None),
        "reference": next(r for r in board.ranking() if r["trial_number"] is None),
    }


def build_trial(study: dict, trial_id: str, out: Path, *extra: str):
    with umask(0o022):
        result = CLI.invoke(
            app, ["build", "--trial", trial_id, "--db", str(study["db"]), "--out", str(out), *extra]
        )
    assert result.exit_code == 0, result.output
    return result


def expected_results(board: Leaderboard, trial_id: str, limit: int | None) -> set[tuple]:
    """The board's score rows as the card must give them (the metric names written out)."""
    out = set()
    for r in board.scores(trial_id):
        if r["value"] is None:  # no data: absent from the card, never 0
            continue
        where = {"heldout": "held-out", "search": f"search, limit {limit}", "all": f"eval, limit {limit}"}
        name = f"{r['metric']} (0-shot, {r['n_samples']} questions, {where[r['partition']]}, offline substitute data)"
        out.add((r["task"], r["task"], r["metric"], r["value"], name))
    return out


def card_results(folder: Path) -> tuple[str, set[tuple]]:
    meta = metadata_load(folder / "README.md")
    name, results = model_index_to_eval_results(meta["model-index"])
    assert {e.task_type for e in results} == {"text-generation"}
    return name, {
        (e.dataset_type, e.dataset_name, e.metric_type, e.metric_value, e.metric_name) for e in results
    }


def recipe_block(text: str) -> dict:
    return yaml.safe_load(re.search(r"## Recipe\n.*?```yaml\n(.*?)```", text, re.S).group(1))


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(path)))
    return out


def assert_modes(folder: Path, mode: int) -> None:
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in folder.iterdir() if p.is_file()}
    assert set(modes.values()) == {oct(mode)}, modes


def assert_loads(folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert AutoModelForCausalLM.from_pretrained(folder).config.num_hidden_layers == 4
    assert AutoTokenizer.from_pretrained(folder)("Paris").input_ids


@pytest.mark.parametrize("route", ["memory", "disk"])
def test_a_merge_only_trial_rebuilds_into_a_hub_folder(study, tmp_path, route):
    board, trial_id = study["board"], study["merge"]
    row = board.trial(trial_id)
    out = tmp_path / "best"
    build_trial(study, trial_id, out, "--route", route)

    assert FOLDER <= {p.name for p in out.iterdir()}
    assert_modes(out, 0o644)  # save_pretrained alone leaves the weights -rw-------
    assert (out / "recipe.yaml").read_text() == row["recipe_yaml"]  # exactly as recorded
    assert_loads(out)

    # mergekit's own command on mergekit_config.yml gives the folder's tensors.
    theirs = tmp_path / "mergekit"
    mergekit_yaml = Path(sys.executable).parent / "mergekit-yaml"
    done = subprocess.run(
        [str(mergekit_yaml), str(out / "mergekit_config.yml"), str(theirs), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ours, reference = tensors(out), tensors(theirs)
    assert set(ours) == set(reference)
    for name, tensor in reference.items():
        assert ours[name].dtype == tensor.dtype == torch.float32
        assert torch.equal(ours[name], tensor), name

    # The card, read back with huggingface_hub: the board's numbers and settings.
    meta = metadata_load(out / "README.md")
    assert meta["tags"] == ["merge", "mergekit"] and meta["library_name"] == "transformers"
    assert "base_model" not in meta and "datasets" not in meta  # local folders are not hub ids
    name, results = card_results(out)
    assert name == row["name"]
    assert results == expected_results(board, trial_id, row["eval_limit"])
    text = ModelCard.load(out / "README.md").text
    assert recipe_block(text) == {**yaml.safe_load(row["recipe_yaml"]), "seed": 0}
    assert f"harness build --trial {trial_id} --db {study['db']} --out {out}" in text
    assert "hf upload YOUR_NAME/" in text
    # the study's reference model beside it, with the paired test on the held-out questions
    reference = study["reference"]["name"]
    assert f"| {reference} | vs {reference} (paired) |" in text
    held_out = [
        line for line in text.splitlines() if line.startswith("| arc_challenge | acc_norm | 0 | 4 | held-out")
    ]
    assert len(held_out) == 1 and re.search(
        r"\| [+-]\d\.\d{4} \[[+-]\d\.\d{4}, [+-]\d\.\d{4}\], p [\d.e-]+ \|$", held_out[0]
    )
    locked = re.search(r"^transformers==(\S+)$", LOCK.read_text(), re.M).group(1)
    assert f"| transformers | {locked} |" in text


def test_a_merge_and_dpo_trial_carries_its_alignment(study, tmp_path):
    board, trial_id = study["board"], study["dpo"]
    row = board.trial(trial_id)
    out = tmp_path / "aligned"
    build_trial(study, trial_id, out)

    assert FOLDER <= {p.name for p in out.iterdir()}
    assert_modes(out, 0o644)
    assert (out / "recipe.yaml").read_text() == row["recipe_yaml"]
    assert_loads(out)
    meta = metadata_load(out / "README.md")
    assert meta["tags"] == ["merge", "mergekit", "dpo"]
    assert "datasets" not in meta  # a local preference file: listed in the body instead
    name, results = card_results(out)
    assert name == row["name"] and results == expected_results(board, trial_id, row["eval_limit"])
    text = ModelCard.load(out / "README.md").text
    recorded = yaml.safe_load(row["recipe_yaml"])
    block = recipe_block(text)
    assert block["align"] == recorded["align"] and block["seed"] == recorded.get("seed", 0)
    assert block["align"]["beta"] == 0.1 and block["align"]["max_steps"] == 1
    assert f"`{ALIGN_SPACE['dpo']['data'][0]}` (local file" in text
    # the merge part alone is what mergekit_config.yml holds: no alignment in it
    assert "align" not in yaml.safe_load((out / "mergekit_config.yml").read_text())


def test_bad_ids_exit_2_and_write_nothing(tmp_path, tiny_models):
    db = tmp_path / "lb.duckdb"
    board = Leaderboard(db)
    recipe = yaml.safe_dump(
        {
            "merge": {
                "merge_method": "linear",
                "models": [{"model": str(tiny_models["base"]), "parameters": {"weight": 1.0}}],
            }
        }
    )
    for status in ("pruned", "failed"):
        board.record(TrialRecord(name=status, source="search", status=status, id=status, recipe_yaml=recipe))
    board.record(TrialRecord(name="eval", source="eval", id="evaluated", model_ref=str(tiny_models["base"])))
    (tmp_path / "r.yaml").write_text(recipe)
    out = tmp_path / "out"
    cases = {
        "unknown": (["--trial", "nope", "--db", str(db)], "no trial 'nope'"),
        "pruned": (["--trial", "pruned", "--db", str(db)], "trial 'pruned' is pruned"),
        "failed": (["--trial", "failed", "--db", str(db)], "trial 'failed' is failed"),
        "no recipe": (["--trial", "evaluated", "--db", str(db)], "has no recipe"),
        "no board": (["--trial", "x", "--db", str(tmp_path / "none.duckdb")], "no leaderboard database"),
        "both": (
            [str(tmp_path / "r.yaml"), "--trial", "failed", "--db", str(db)],
            "either a recipe file or --trial",
        ),
        "neither": (["--db", str(db)], "either a recipe file or --trial"),
        "rescoring": (["--trial", "failed", "--db", str(db), "--suite", "h4"], "--suite with --trial"),
    }
    for case, (args, says) in cases.items():
        result = CLI.invoke(app, ["build", *args, "--out", str(out)])
        assert result.exit_code == 2, (case, result.output)
        assert result.stderr.startswith("harness: error:") and result.stderr.count("\n") == 1, case
        assert says in result.stderr, (case, result.stderr)
        assert not out.exists(), case
    assert not (tmp_path / "none.duckdb").exists()


def test_a_scored_build_carries_its_scores_and_the_report_links_its_card(
    tmp_path, tiny_models, data, monkeypatch
):
    """`harness build RECIPE --suite` scores and records the folder: its card has the new row's
    numbers (a --limit run on offline substitute data, marked so) and the report links it."""
    from harness.report import generate_report

    monkeypatch.setenv("HARNESS_DATA_DIR", str(data))
    merge = {
        "merge_method": "linear",
        "models": [
            {"model": str(tiny_models[k]), "parameters": {"weight": 0.5}} for k in ("donor_a", "donor_b")
        ],
        "dtype": "float32",
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"merge": merge, "seed": 3}))
    db, out = tmp_path / "lb.duckdb", tmp_path / "model"
    with umask(0o022):
        result = CLI.invoke(
            app,
            [
                "build",
                str(tmp_path / "r.yaml"),
                "--out",
                str(out),
                "--suite",
                "arc_challenge,hellaswag",  # no HellaSwag in the data: a row without data
                "--limit",
                "3",
                "--db",
                str(db),
            ],
        )
    assert result.exit_code == 0, result.output
    assert_modes(out, 0o644)
    board = Leaderboard(db)
    (row,) = board.ranking()
    assert {r["value"] for r in board.scores(row["id"]) if r["task"] == "hellaswag"} == {None}
    name, results = card_results(out)
    assert results == expected_results(board, row["id"], 3) and len(results) == 2
    assert {r[0] for r in results} == {"arc_challenge"}
    assert all(", eval, limit 3, offline substitute data)" in r[4] for r in results)
    text = ModelCard.load(out / "README.md").text
    assert f"harness build --trial {row['id']} --db {db} --out {out}" in text
    assert "A limited run: at most 3 questions per task" in text and "† offline substitute data" in text
    assert recipe_block(text)["seed"] == 3

    html = generate_report(db, tmp_path / "report" / "index.html").html.read_text()
    assert f'href="{(out / "README.md").resolve().as_uri()}"' in html


def test_hub_inputs_and_data_go_to_the_front_matter(tmp_path):
    """Hub ids among the merge inputs are base_model, hub preference data are datasets; a demo
    model and a local folder (not hub ids) are listed in the body only."""
    from mergekit.config import MergeConfiguration

    from harness.merge import write_card
    from harness.recipe import recipe_from_dict

    local = tmp_path / "donor"
    local.mkdir()
    written = {
        "merge_method": "linear",
        "models": [
            {"model": "someone/model-a", "parameters": {"weight": 0.5}},
            {"model": "demo:smollm2-135m-instruct", "parameters": {"weight": 0.5}},
        ],
    }
    resolved = {
        **written,
        "models": [written["models"][0], {"model": str(local), "parameters": {"weight": 0.5}}],
    }
    recipe = recipe_from_dict(
        {
            "merge": written,
            "align": {
                "method": "sdpo",
                "data": [{"path": "someone/prefs"}, {"path": "demo:sciq"}],
                "steps": 2,
            },
            "seed": 5,
        }
    )
    folder = tmp_path / "card"
    folder.mkdir()
    write_card(folder, recipe, MergeConfiguration.model_validate(resolved))
    meta = metadata_load(folder / "README.md")
    assert meta["base_model"] == ["someone/model-a"] and meta["datasets"] == ["someone/prefs"]
    assert meta["tags"] == ["merge", "mergekit", "sdpo"] and "model-index" not in meta
    text = ModelCard.load(folder / "README.md").text
    assert "`demo:smollm2-135m-instruct`: the harness's offline demo model" in text
    assert "`demo:sciq` (offline demo set" in text and "Not scored" in text
    assert recipe_block(text)["seed"] == 5


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_a_kept_model_is_the_same_folder_and_follows_the_umask(study, tiny_models, tmp_path, mask, mode):
    """A search's kept models (confirm.py) are written like `harness build`'s folders."""
    from harness.merge.loading import load_pretrained
    from harness.search.confirm import KeptModels

    row = study["board"].trial(study["merge"])
    model, tokenizer, _ = load_pretrained(str(tiny_models["base"]), device="cpu")
    kept = KeptModels(tmp_path / ".lb.duckdb.kept" / "tiny")
    record = TrialRecord(name=row["name"], source="search", id="t1", recipe_yaml=row["recipe_yaml"])
    with umask(mask):
        entry = kept.keep(record, model, tokenizer)
    assert FOLDER <= {p.name for p in entry.path.iterdir()}
    assert_modes(entry.path, mode)
    assert (entry.path / "recipe.yaml").read_text() == row["recipe_yaml"]
    text = ModelCard.load(entry.path / "README.md").text
    assert f"harness build --trial t1 --db {tmp_path / 'lb.duckdb'} --out" in text
