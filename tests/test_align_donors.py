"""DPO-made demo donors: specs are valid, a donor is built once, atomically, as demo:<name>."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.align import AlignConfig, parameter_ranges
from harness.align import donors as donors_module
from harness.align.donors import DEMO_DONORS, DonorSpec, donor_ready, donor_training, prepare_demo_donors
from harness.errors import HarnessError

TOY = str(Path(__file__).parent / "fixtures" / "align" / "toy_standard.jsonl")


def test_demo_donor_specs_are_valid_and_use_unscored_data():
    assert set(DEMO_DONORS) == {"smollm2-135m-dpo-science", "smollm2-135m-dpo-commonsense"}
    sources = set()
    for spec in DEMO_DONORS.values():
        cfg = spec.config()
        assert cfg.lora is None and cfg.max_steps is not None  # bounded CPU budget
        sources |= {s.path for s in cfg.data}
    assert sources == {
        "demo:sciq",
        "demo:openbookqa",
        "demo:piqa",
        "demo:social_iqa",
        "demo:commonsense_qa",
    }
    assert DEMO_DONORS["smollm2-135m-dpo-science"].config().method == "sdpo"


@pytest.mark.parametrize("method", ["sdpo", "kto", "orpo"])
def test_parameter_ranges_are_legal_values(method):
    """Both ends of every range a search space may sample are values the config accepts."""
    lora_keys = {"r", "alpha", "dropout"}
    ranges = parameter_ranges(method)
    assert {"beta", "learning_rate", "max_steps", "r"} <= set(ranges)
    for name, (low, high) in ranges.items():
        for value in (low, high):
            if method == "orpo" and name == "steps":
                continue  # orpo has no sDPO schedule, so no T
            data = {"method": method, "data": "x.jsonl"}
            if method == "kto":
                data.update(per_device_train_batch_size=2, schedule="sdpo")
            if name in lora_keys:
                data["lora"] = {name: value}
            elif name == "label_smoothing":
                data.update(loss_type="robust", label_smoothing=value)
            elif name == "per_device_train_batch_size" and method == "kto":
                data.update(loss_type="apo_zero_unpaired", per_device_train_batch_size=value)
            else:
                data[name] = value
            AlignConfig.model_validate(data)


def test_unknown_donor_name():
    with pytest.raises(HarnessError, match="unknown demo donor"):
        prepare_demo_donors(names=["nope"])


def test_a_donor_is_built_once_and_registered(isolated_home, tiny_models, monkeypatch):
    from harness.assets import demo_model_dir, resolve_model

    spec = DonorSpec(
        name="tiny-dpo",
        description="tiny test donor",
        base=str(tiny_models["base"]),
        align={
            "method": "dpo",
            "data": TOY,
            "max_steps": 2,
            "per_device_train_batch_size": 4,
            "warmup_ratio": 0.0,
            "learning_rate": 1e-2,
            "max_length": 64,
        },
    )
    monkeypatch.setattr(donors_module, "DEMO_DONORS", {spec.name: spec})
    monkeypatch.setattr("harness.assets.prepare_assets", lambda console=None: None)

    info = prepare_demo_donors()
    path = demo_model_dir("tiny-dpo")
    assert info.built == ["tiny-dpo"] and info.models == {"tiny-dpo": path}
    assert resolve_model("demo:tiny-dpo") == str(path.resolve())
    assert donor_ready(path, spec)
    marker = json.loads((path / "harness_demo.json").read_text(encoding="utf-8"))
    assert marker["kind"] == "dpo-donor" and marker["steps"][0]["train_steps"] == 2
    assert (path / "align.yaml").is_file()
    assert not list(path.parent.glob(".tiny-dpo*"))  # no staging debris
    # A leaderboard row of this donor carries how it was trained.
    method, steps = donor_training(path)
    assert method == "dpo" and steps == marker["steps"] and "rewards_margins" in steps[0]
    assert donor_training(tiny_models["base"]) == (None, [])  # not a donor

    again = prepare_demo_donors()
    assert again.built == []  # cached
    changed = DonorSpec(**{**spec.__dict__, "seed": 1})
    assert not donor_ready(path, changed)  # a different spec is rebuilt
