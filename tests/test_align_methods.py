"""The registered alignment methods (issue 34): every method is complete, and each trains a
tiny model for real with its TRL trainer (KTO, ORPO, IPO; an IA3 adapter; KTO on the sDPO
schedule against M(t-1)); bad combinations fail at the door."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import trl
from pydantic import BaseModel

from harness.align import AlignConfig, align_model, parameter_ranges
from harness.align.methods import METHODS, AlignMethod, method_names
from harness.errors import HarnessError
from harness.recipe import recipe_from_dict
from tests.test_align_trainer import FAST, TOY, _load, _same, _weights, _write, record_weights


def test_every_registered_method_is_complete():
    """A method without options, ranges, TRL classes or metrics fails here by name."""
    assert set(METHODS) == {"dpo", "kto", "orpo"} and "sdpo" in method_names()
    for name, method in METHODS.items():
        assert isinstance(method, AlignMethod) and method.name == name
        assert issubclass(method.options, BaseModel), f"{name}: options is not a pydantic model"
        assert method.options.model_config.get("extra") == "forbid", f"{name}: options accept typos"
        assert method.summary and method.metrics, f"{name}: no summary or metrics"
        assert isinstance(method.needs_reference, bool)
        config_class, trainer_class = method.trl_classes()
        assert hasattr(trainer_class, "train"), f"{name}: no TRL trainer"
        ranges = parameter_ranges(name)
        for field, info in method.options.model_fields.items():
            if info.annotation in (int, float):
                assert field in ranges, f"{name}.{field}: a number without a legal range"
        assert {"beta", "learning_rate"} <= set(ranges)


@pytest.mark.parametrize(
    ("align", "needle"),
    [
        ({"method": "orpo", "schedule": "sdpo"}, "orpo trains without a reference"),
        ({"method": "orpo", "precompute_ref_log_probs": True}, "no reference"),
        ({"method": "dpo", "lora": {"r": 4}, "ia3": {}}, "one adapter at most"),
        ({"method": "kto", "per_device_train_batch_size": 1}, "KL term"),
        ({"method": "kto", "label_smoothing": 0.1}, "unknown field 'label_smoothing' for method 'kto'"),
        ({"method": "dpo", "desirable_weight": 2.0}, "unknown field 'desirable_weight' for method 'dpo'"),
        ({"method": "kto", "desirable_weight": 0}, "desirable_weight"),
        ({"method": "ppo"}, "unknown method 'ppo'"),
        ({"method": "sdpo", "schedule": "sdpo"}, "drop schedule"),
        ({"method": "kto", "steps": 2}, "sdpo schedule"),
        ({"method": "dpo", "ia3": {"feedforward_modules": ["down_proj"]}}, "needs target_modules"),
        (
            {"method": "dpo", "ia3": {"target_modules": ["k_proj"], "feedforward_modules": ["down_proj"]}},
            "not among",
        ),
        ({"method": "dpo", "data": [{"path": "x.jsonl", "max_new_tokens": 8}]}, "on_policy only"),
    ],
)
def test_bad_combinations_fail_at_the_door(tiny_models, align, needle):
    data = {
        "merge": {
            "merge_method": "linear",
            "models": [{"model": str(tiny_models["base"]), "parameters": {"weight": 1.0}}],
        },
        "align": {"data": TOY, **align},
    }
    with pytest.raises(HarnessError, match=needle):
        recipe_from_dict(data)


def test_dpo_and_sdpo_spellings_are_one_recipe():
    one = AlignConfig(method="dpo", schedule="sdpo", data=["a.jsonl", "b.jsonl"])
    two = AlignConfig(method="sdpo", data=["a.jsonl", "b.jsonl"])
    assert one.model_dump(exclude_none=True) == two.model_dump(exclude_none=True)
    assert one.num_steps == 2 and one.trainer is METHODS["dpo"]


def _trained(tiny_models, **align):
    model, tok = _load(tiny_models["base"])
    before = _weights(model)
    result = align_model(model, tok, AlignConfig(data=TOY, **{**FAST, **align}))
    return before, result


def test_kto_trains_on_unpaired_examples_from_pairs(tiny_models):
    before, result = _trained(tiny_models, method="kto", max_steps=2)
    step = result.steps[0]
    assert step["method"] == "kto" and step["examples"] == 32  # 16 pairs -> 16 desirable + 16 not
    assert set(step["metrics"]["method_metrics"]) == {
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "kl",
    }
    assert step["metrics"]["loss_type"] == "kto" and step["metrics"]["reference"] == "M0"
    assert step["loss"] is not None and not _same(before, _weights(result.model))


def test_orpo_trains_without_a_reference(tiny_models, monkeypatch):
    def no_copy(model):
        raise AssertionError("ORPO needs no reference copy")

    monkeypatch.setattr("harness.align.trainer.frozen_copy", no_copy)
    before, result = _trained(tiny_models, method="orpo", max_steps=2)
    step = result.steps[0]
    assert step["method"] == "orpo" and "reference" not in step["metrics"]
    assert step["metrics"]["method_metrics"]["nll_loss"] is not None
    assert step["rewards_accuracies"] is not None and not _same(before, _weights(result.model))


def test_ipo_is_dpo_with_its_loss(tiny_models, monkeypatch):
    seen: list[list[str]] = []

    class Recording(trl.DPOTrainer):
        def __init__(self, *args, **kwargs):
            seen.append(list(kwargs["args"].loss_type))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(trl, "DPOTrainer", Recording)
    _, result = _trained(tiny_models, method="dpo", loss_type="ipo", max_steps=1)
    assert seen == [["ipo"]] and result.steps[0]["metrics"]["loss_type"] == "ipo"


def test_ia3_trains_vectors_and_merges_them_back(tiny_models):
    before, result = _trained(tiny_models, method="dpo", ia3={}, max_steps=2)
    after = _weights(result.model)
    assert set(after) == set(before)  # a plain model again: no adapter weights left
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    # PEFT's IA3 for Llama rescales k_proj, v_proj (outputs) and down_proj (inputs).
    assert changed and all(k.split(".")[-2] in {"k_proj", "v_proj", "down_proj"} for k in changed), changed
    assert result.steps[0]["metrics"]["ia3"] == {"target_modules": None, "feedforward_modules": None}


def test_kto_on_the_sdpo_schedule_steps_from_the_previous_model(tiny_models, monkeypatch, tmp_path):
    seen = record_weights(monkeypatch, "KTOTrainer")
    rows = [json.loads(x) for x in Path(TOY).read_text().splitlines()]
    a, b = _write(tmp_path / "a.jsonl", rows[:8]), _write(tmp_path / "b.jsonl", rows[8:16])
    model, tok = _load(tiny_models["base"])
    cfg = AlignConfig(method="kto", schedule="sdpo", data=[a, b], partition="as_listed", max_steps=2, **FAST)
    result = align_model(model, tok, cfg)
    assert [s["metrics"]["reference"] for s in result.steps] == ["M0", "M1"]
    assert _same(seen[1]["ref"], seen[0]["end"]) and _same(seen[1]["start"], seen[0]["end"])


EXAMPLES = sorted((Path(__file__).parent.parent / "search" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_recipe_is_valid(path):
    """The shipped examples (issue 34 adds kto, orpo, ia3, on-policy) parse and validate."""
    from harness.recipe import load_recipe

    recipe = load_recipe(path)
    assert recipe.name


def test_the_example_methods_are_what_their_names_say():
    from harness.recipe import load_recipe

    folder = Path(__file__).parent.parent / "search" / "examples"
    assert load_recipe(folder / "demo-kto.yaml").align.trainer.name == "kto"
    assert load_recipe(folder / "demo-orpo.yaml").align.trainer.name == "orpo"
    assert load_recipe(folder / "demo-ia3.yaml").align.ia3 is not None
    assert load_recipe(folder / "demo-on-policy.yaml").align.data[0].rejected == "on_policy"


def test_a_step_is_described_in_one_line():
    from harness.align.trainer import describe_step

    line = describe_step(
        {
            "step": 1,
            "method": "dpo",
            "chunk": "sciq",
            "train_steps": 4,
            "examples": 64,
            "loss": 0.5,
            "rewards_margins": 0.25,
            "seconds": 3.0,
            "metrics": {
                "on_policy": {"sciq": {"pairs": 60, "dropped_equal": 4, "generated": 64, "cached": 0}}
            },
        }
    )
    assert line == (
        "align step 1 (dpo, sciq): 4 optimizer steps on 64 examples, loss 0.500, margin 0.250, "
        "sciq: 60 on-policy pairs (4 answers equal to the label dropped, 64 generated, 0 cached), 3.0 s"
    )
    made = {"pairs": 26, "dropped_equal": 0, "dropped_empty": 38, "generated": 64, "cached": 0}
    line = describe_step({"step": 2, "metrics": {"on_policy": {"obqa": made}}})
    assert "obqa: 26 on-policy pairs (0 answers equal to the label and 38 empty ones dropped" in line
