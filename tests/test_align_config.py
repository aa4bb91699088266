"""The align part of a recipe: schema ranges at the door, round-trips, cheap pre-work checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.align import AlignConfig
from harness.errors import HarnessError
from harness.recipe import Recipe, load_recipe, recipe_from_dict, resolve_recipe

FIXTURES = Path(__file__).parent / "fixtures" / "align"
TOY = str(FIXTURES / "toy_standard.jsonl")


def _recipe(tiny_models, **align) -> dict:
    return {
        "merge": {
            "merge_method": "linear",
            "models": [
                {"model": str(tiny_models["donor_a"]), "parameters": {"weight": 0.5}},
                {"model": str(tiny_models["donor_b"]), "parameters": {"weight": 0.5}},
            ],
        },
        "align": {"method": "dpo", "data": TOY, **align},
    }


def test_defaults_and_shorthand():
    cfg = AlignConfig(method="sdpo", data=["a.jsonl", {"path": "demo:sciq", "name": "sci"}])
    assert [s.name for s in cfg.data] == ["a", "sci"]
    assert cfg.num_steps == 2  # sdpo: one step per source by default
    assert AlignConfig(method="dpo", data="x.parquet").num_steps == 1
    kwargs = cfg.trl_kwargs()
    assert kwargs["loss_type"] == ["sigmoid"] and kwargs["max_steps"] == -1
    assert kwargs["warmup_steps"] == cfg.warmup_ratio  # transformers 5: a float < 1 is a ratio


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"beta": 0}, "beta"),
        ({"beta": -1}, "beta"),
        ({"learning_rate": 5}, "learning_rate"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"steps": 0}, "steps"),
        ({"method": "dpo", "steps": 3}, "sdpo"),
        ({"max_steps": 0}, "max_steps"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size"),
        ({"warmup_ratio": 1.5}, "warmup_ratio"),
        ({"label_smoothing": 0.1}, "label_smoothing"),
        ({"loss_type": "exo_pair"}, "label_smoothing"),
        ({"loss_type": "nope"}, "loss_type"),
        ({"lora": {"r": 0}}, "r"),
        ({"lora": {"target_modules": ["lm_head"]}}, "lm_head"),
        ({"lora": {"dropout": 1.0}}, "dropout"),
        ({"data": []}, "data"),
        ({"data": ["a.jsonl", "b/a.jsonl"]}, "unique"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_values_fail_at_the_door(tiny_models, change, needle):
    data = _recipe(tiny_models)
    data["align"].update({"method": "sdpo", **change})
    with pytest.raises(HarnessError, match=needle):
        recipe_from_dict(data)


def test_recipe_with_align_round_trips(tiny_models, tmp_path):
    recipe = recipe_from_dict(
        _recipe(
            tiny_models,
            method="sdpo",
            data=[{"path": TOY, "name": "a"}, {"path": TOY, "name": "b", "limit": 4}],
            steps=2,
            partition="as_listed",
            beta=0.2,
            max_steps=3,
            lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        )
    )
    path = tmp_path / "r.yaml"
    path.write_text(recipe.to_yaml(), encoding="utf-8")
    again = load_recipe(path)
    assert again == recipe
    assert again.content_hash() == recipe.content_hash()
    assert again.align.lora.target_modules == ["q_proj", "v_proj"]
    assert again.align.data[1].limit == 4
    # Align parameters are part of the hash; the display name is not.
    changed = recipe.model_copy(update={"align": recipe.align.model_copy(update={"beta": 0.3})})
    assert changed.content_hash() != recipe.content_hash()
    renamed = recipe.model_copy(update={"name": "other"})
    assert renamed.content_hash() == recipe.content_hash()
    no_align = Recipe(merge=recipe.merge)
    assert no_align.content_hash() != recipe.content_hash()


def test_resolve_accepts_a_valid_align(tiny_models):
    resolved = resolve_recipe(recipe_from_dict(_recipe(tiny_models)))
    assert resolved.recipe.align is not None


def test_resolve_rejects_more_steps_than_pairs(tiny_models):
    data = _recipe(tiny_models, method="sdpo", steps=17)  # the toy set has 16 pairs
    with pytest.raises(HarnessError, match="only 16 pairs"):
        resolve_recipe(recipe_from_dict(data))


def test_resolve_names_the_missing_column(tiny_models):
    data = _recipe(tiny_models)
    data["align"]["data"] = str(FIXTURES / "missing_rejected.jsonl")
    with pytest.raises(HarnessError, match="missing column 'rejected'"):
        resolve_recipe(recipe_from_dict(data))


def test_resolve_rejects_missing_and_empty_data(tiny_models, tmp_path):
    data = _recipe(tiny_models)
    data["align"]["data"] = str(tmp_path / "nope.jsonl")
    with pytest.raises(HarnessError, match="not found"):
        resolve_recipe(recipe_from_dict(data))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    data["align"]["data"] = str(empty)
    with pytest.raises(HarnessError, match="empty"):
        resolve_recipe(recipe_from_dict(data))


def test_resolve_rejects_mixed_formats(tiny_models, tmp_path):
    chat = tmp_path / "chat.jsonl"
    shutil.copy(FIXTURES / "toy_chat_implicit.jsonl", chat)
    data = _recipe(tiny_models, method="sdpo")
    data["align"]["data"] = [TOY, str(chat)]
    with pytest.raises(HarnessError, match="mixes conversational and standard"):
        resolve_recipe(recipe_from_dict(data))


def test_unknown_demo_set(tiny_models):
    data = _recipe(tiny_models)
    data["align"]["data"] = "demo:mmlu"
    with pytest.raises(HarnessError, match="unknown demo preference set"):
        resolve_recipe(recipe_from_dict(data))


def test_conversational_data_needs_a_chat_template(tiny_models, tmp_path):
    data = _recipe(tiny_models)
    for i, entry in enumerate(data["merge"]["models"]):  # whichever gives the tokenizer
        plain = tmp_path / f"plain_tok_{i}"
        shutil.copytree(entry["model"], plain)
        (plain / "chat_template.jinja").unlink(missing_ok=True)
        config = plain / "tokenizer_config.json"
        cfg = json.loads(config.read_text(encoding="utf-8"))
        cfg.pop("chat_template", None)
        config.write_text(json.dumps(cfg), encoding="utf-8")
        entry["model"] = str(plain)
    data["align"]["data"] = str(FIXTURES / "toy_chat_implicit.jsonl")
    with pytest.raises(HarnessError, match="no chat template"):
        resolve_recipe(recipe_from_dict(data))
    # With a chat_template in the merge config, or standard data, it is fine.
    data["merge"]["chat_template"] = "chatml"
    resolve_recipe(recipe_from_dict(data))
    del data["merge"]["chat_template"]
    data["align"]["data"] = TOY
    resolve_recipe(recipe_from_dict(data))
