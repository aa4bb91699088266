"""Recipe parsing and the checks that must fail before any weights are loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.recipe import load_recipe, recipe_from_dict, resolve_recipe


def slerp(a, b, t=0.5):
    return {
        "merge_method": "slerp",
        "base_model": str(a),
        "models": [{"model": str(a)}, {"model": str(b)}],
        "parameters": {"t": t},
    }


def test_bare_mergekit_config_is_a_recipe(tmp_path, tiny_models):
    path = tmp_path / "r.yaml"
    path.write_text(
        f"merge_method: slerp\nbase_model: {tiny_models['donor_a']}\nmodels:\n"
        f"  - model: {tiny_models['donor_a']}\n  - model: {tiny_models['donor_b']}\n"
        "parameters:\n  t:\n    - filter: self_attn\n      value: [0, 0.5, 0.3, 0.7, 1]\n    - value: 0.5\n"
    )
    recipe = load_recipe(path)
    assert recipe.merge["merge_method"] == "slerp"
    resolved = resolve_recipe(recipe)
    assert resolved.merge_config.merge_method == "slerp"
    assert set(resolved.model_paths) == {str(tiny_models["donor_a"]), str(tiny_models["donor_b"])}


def test_hash_ignores_name_but_not_parameters(tiny_models):
    a = recipe_from_dict({"name": "one", "merge": slerp(tiny_models["donor_a"], tiny_models["donor_b"])})
    b = recipe_from_dict({"name": "two", "merge": slerp(tiny_models["donor_a"], tiny_models["donor_b"])})
    c = recipe_from_dict({"merge": slerp(tiny_models["donor_a"], tiny_models["donor_b"], t=0.4)})
    assert a.content_hash() == b.content_hash() != c.content_hash()
    assert recipe_from_dict(a.canonical()).content_hash() == a.content_hash()  # YAML round trip


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m.update(merge_method="frobnicate"), "unknown merge method 'frobnicate'"),
        (lambda m: m["models"].append({"model": m["base_model"]}), "slerp"),
        (lambda m: m.update(parameters={"t": 1.5}), "out of range"),
        (
            lambda m: m.update(parameters={"t": [{"filter": "mlp", "value": [0, 2]}, {"value": 0.5}]}),
            "out of range",
        ),
        (lambda m: m["models"][1].update(model="/nonexistent/model"), "does not exist"),
        (lambda m: m["models"][1].update(model="nobody/no-such-model"), "could not be found"),
        (lambda m: m["models"][1].update(model="demo:no-such-demo"), "demo"),
    ],
)
def test_bad_recipes_fail_with_one_line(tiny_models, mutate, message):
    merge = slerp(tiny_models["donor_a"], tiny_models["donor_b"])
    mutate(merge)
    with pytest.raises(HarnessError, match=message) as err:
        resolve_recipe(recipe_from_dict(merge))
    assert "\n" not in str(err.value)


def test_different_shapes_cannot_be_merged(tiny_models):
    merge = {
        "merge_method": "linear",
        "models": [
            {"model": str(tiny_models["base"]), "parameters": {"weight": 0.5}},
            {"model": str(tiny_models["wide"]), "parameters": {"weight": 0.5}},
        ],
    }
    with pytest.raises(HarnessError, match="cannot be merged: hidden_size 32 != 48"):
        resolve_recipe(recipe_from_dict(merge))


def test_slice_outside_the_model_is_rejected(tiny_models):
    merge = {
        "merge_method": "passthrough",
        "slices": [{"sources": [{"model": str(tiny_models["base"]), "layer_range": [0, 9]}]}],
    }
    with pytest.raises(HarnessError, match=r"layer_range \[0, 9\] is invalid for a 4-layer model"):
        resolve_recipe(recipe_from_dict(merge))


def test_malformed_yaml_and_wrong_shape(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("merge_method: [slerp\n")
    with pytest.raises(HarnessError, match="malformed YAML at line"):
        load_recipe(bad)
    with pytest.raises(HarnessError, match="recipe file not found"):
        load_recipe(tmp_path / "missing.yaml")
    with pytest.raises(HarnessError, match="must be a YAML mapping"):
        recipe_from_dict(["a", "b"])
    with pytest.raises(HarnessError, match="unknown_key: Extra inputs"):
        recipe_from_dict({"merge": {"merge_method": "linear"}, "unknown_key": 1})


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).parents[1] / "search" / "examples").glob("*.yaml")),
    ids=lambda p: p.stem,
)
def test_example_recipes_parse(path):
    """Every shipped example is a valid recipe (schema and align ranges; models are not loaded)."""
    recipe = load_recipe(path)
    assert recipe.merge["merge_method"] and recipe.name
