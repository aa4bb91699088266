"""DPO / sDPO on tiny Llamas: margins move, references are M(t-1), LoRA and full, records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import trl
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.align import AlignConfig, AlignmentError, align_model, apply_alignment
from harness.align.data import load_sources
from harness.align.trainer import RECORD_KEYS, partition
from harness.errors import HarnessError

FIXTURES = Path(__file__).parent / "fixtures" / "align"
TOY = str(FIXTURES / "toy_standard.jsonl")
RECORD_COLUMNS = {
    "step",
    "method",
    "chunk",
    "examples",
    "train_steps",
    "seconds",
    "lora",
    "loss",
    "rewards_chosen",
    "rewards_rejected",
    "rewards_margins",
    "rewards_accuracies",
    "metrics",
}
# Small and fast: 4 pairs per batch, no warmup (a 1-step warmup would waste half a 2-step run).
FAST = {
    "per_device_train_batch_size": 4,
    "warmup_ratio": 0.0,
    "max_length": 64,
    "learning_rate": 1e-2,
}


def _load(path: Path):
    model = AutoModelForCausalLM.from_pretrained(path)
    # A merge lives in memory: its config points at no checkpoint TRL could reload.
    model.config._name_or_path = "/nonexistent/merged-model"
    return model, AutoTokenizer.from_pretrained(path)


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_dpo_full_finetune_on_separable_pairs(tiny_models, monkeypatch):
    model, tok = _load(tiny_models["base"])
    start = _weights(model)

    def refuse(*args, **kwargs):
        raise AssertionError("the reference was re-loaded from disk")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr("trl.trainer.dpo_trainer.create_model_from_path", refuse)
    cfg = AlignConfig(method="dpo", data=TOY, max_steps=8, **FAST)
    result = align_model(model, tok, cfg)

    (record,) = result.steps
    assert set(record) == RECORD_COLUMNS
    first = record["metrics"]["first"]
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # policy == reference
    assert record["rewards_margins"] > 0.5 > first["rewards/margins"]
    assert record["rewards_accuracies"] == 1.0
    assert record["loss"] < first["loss"]
    assert record["train_steps"] == 8 and record["examples"] == 16 and record["lora"] is False
    assert record["chunk"] == "toy_standard" and record["method"] == "dpo"
    assert len(record["metrics"]["log_history"]) >= 2
    json.dumps(record["metrics"])  # stored as JSON in align_steps
    assert result.model is model  # full fine-tuning trains in place
    assert not _same(start, _weights(result.model))
    assert "forward" not in vars(result.model)  # TRL's fused-head patch is removed
    assert not result.model.training


def test_dpo_lora_returns_a_plain_merged_model(tiny_models):
    model, tok = _load(tiny_models["base"])
    start = _weights(model)
    cfg = AlignConfig(
        method="dpo",
        data=TOY,
        max_steps=4,
        lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        **FAST,
    )
    result = align_model(model, tok, cfg)
    (record,) = result.steps
    assert record["lora"] is True and record["metrics"]["lora"]["r"] == 4
    assert record["rewards_margins"] > 0
    merged = result.model
    assert type(merged).__name__ == "LlamaForCausalLM"
    assert not any("lora" in name for name in merged.state_dict())
    after = _weights(merged)
    assert after.keys() == start.keys()
    changed = {k for k in start if not torch.equal(start[k], after[k])}
    # Only the adapted projections changed, and they did.
    assert changed and all(("q_proj" in k or "v_proj" in k) for k in changed)


def test_precomputed_reference_is_the_starting_model(tiny_models, monkeypatch):
    model, tok = _load(tiny_models["base"])

    def refuse(*args, **kwargs):
        raise AssertionError("the reference was re-loaded from disk")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    cfg = AlignConfig(method="dpo", data=TOY, max_steps=4, precompute_ref_log_probs=True, **FAST)
    result = align_model(model, tok, cfg)
    assert result.steps[0]["rewards_margins"] > 0


def test_reference_reload_is_refused(tiny_models):
    """The guard: if TRL ever reaches its reload path, alignment fails loudly."""
    from harness.align.trl_compat import no_reference_reload

    with no_reference_reload(), pytest.raises(AlignmentError, match="re-load the reference model"):
        trl.trainer.dpo_trainer.create_model_from_path("/nonexistent")


def record_weights(monkeypatch, name: str) -> list[dict[str, dict[str, torch.Tensor]]]:
    """Replace ``trl.<name>`` by a subclass that records, for each run, the reference's and the
    policy's weights when it starts and when it ends."""
    seen: list[dict[str, dict[str, torch.Tensor]]] = []

    class Recording(getattr(trl, name)):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append({"ref": _weights(self.ref_model), "start": _weights(self.model)})

        def train(self, *args, **kwargs):
            out = super().train(*args, **kwargs)
            seen[-1]["end"] = _weights(self.model)
            seen[-1]["ref_end"] = _weights(self.ref_model)
            return out

    monkeypatch.setattr(trl, name, Recording)
    return seen


def test_sdpo_step_two_uses_step_one_output_as_reference(tiny_models, monkeypatch, tmp_path):
    seen = record_weights(monkeypatch, "DPOTrainer")
    model, tok = _load(tiny_models["base"])
    m0 = _weights(model)
    a = _write(tmp_path / "a.jsonl", [json.loads(x) for x in Path(TOY).read_text().split("\n")[:8]])
    b = _write(tmp_path / "b.jsonl", [json.loads(x) for x in Path(TOY).read_text().split("\n")[8:16]])
    cfg = AlignConfig(method="sdpo", data=[a, b], steps=2, partition="as_listed", max_steps=3, **FAST)
    result = align_model(model, tok, cfg)

    assert len(seen) == 2 and [s["step"] for s in result.steps] == [1, 2]
    assert [s["chunk"] for s in result.steps] == ["a", "b"]
    step1, step2 = seen
    assert _same(step1["ref"], m0) and _same(step1["start"], m0)  # M0 is the starting model
    assert not _same(step1["end"], m0)  # step 1 trained
    assert _same(step2["ref"], step1["end"])  # reference of step 2 = M1
    assert _same(step2["start"], step1["end"])  # target of step 2 starts from M1
    assert _same(step2["ref_end"], step2["ref"])  # the reference stays frozen
    assert not _same(step2["end"], step1["end"])
    assert _same(_weights(result.model), step2["end"])
    assert result.steps[1]["metrics"]["reference"] == "M1"
    assert result.steps[1]["metrics"]["order"] == ["a", "b"]


def test_sdpo_lora_two_steps(tiny_models, tmp_path):
    model, tok = _load(tiny_models["base"])
    m0 = _weights(model)
    rows = [json.loads(x) for x in Path(TOY).read_text().splitlines()]
    a = _write(tmp_path / "a.jsonl", rows[:8])
    b = _write(tmp_path / "b.jsonl", rows[8:])
    cfg = AlignConfig(
        method="sdpo",
        data=[a, b],
        partition="as_listed",
        max_steps=2,
        lora={"r": 2, "target_modules": ["q_proj"]},
        **FAST,
    )
    ticks: list[tuple[int, int, int]] = []
    result = align_model(model, tok, cfg, on_progress=lambda *tick: ticks.append(tick))
    assert ticks == [(1, 1, 2), (1, 2, 2), (2, 1, 2), (2, 2, 2)]  # every optimizer step, per sDPO step
    assert [s["lora"] for s in result.steps] == [True, True]
    assert type(result.model).__name__ == "LlamaForCausalLM"
    assert not _same(_weights(result.model), m0)


def test_partition_orders_sources_easy_to_hard_by_reward_accuracy(tiny_models, tmp_path):
    # A random tiny model prefers the shorter completion: "easy" has short chosen answers.
    easy = _write(
        tmp_path / "easy.jsonl",
        [{"prompt": f"Q{i}:", "chosen": " A", "rejected": " B B B B B B B B"} for i in range(6)],
    )
    hard = _write(
        tmp_path / "hard.jsonl",
        [{"prompt": f"Q{i}:", "chosen": " A A A A A A A A", "rejected": " B"} for i in range(6)],
    )
    model, tok = _load(tiny_models["base"])
    from harness.align.trainer import source_difficulty

    cfg = AlignConfig(method="sdpo", data=[hard, easy], max_steps=1, **FAST)
    sources = load_sources(cfg)
    difficulty = source_difficulty(model, tok, sources, cfg)
    assert difficulty == {"hard": 0.0, "easy": 1.0}
    chunks = partition(sources, cfg, difficulty=difficulty)
    assert [c.name for c in chunks] == ["easy", "hard"]
    listed = partition(sources, cfg.model_copy(update={"partition": "as_listed"}))
    assert [c.name for c in listed] == ["hard", "easy"]
    # End to end: the records carry the order and the measured accuracies.
    result = align_model(model, tok, cfg)
    assert [s["chunk"] for s in result.steps] == ["easy", "hard"]
    assert result.steps[0]["metrics"]["difficulty"] == {"hard": 0.0, "easy": 1.0}


def test_partition_sizes_for_other_step_counts(tmp_path):
    rows = [json.loads(x) for x in Path(TOY).read_text().splitlines()]
    a = _write(tmp_path / "a.jsonl", rows[:10])
    b = _write(tmp_path / "b.jsonl", rows[10:])
    base = AlignConfig(method="sdpo", data=[a, b], partition="as_listed", steps=3)
    sources = load_sources(base)
    chunks = partition(sources, base)
    assert [len(c.rows) for c in chunks] == [6, 5, 5]
    assert [c.name for c in chunks] == ["a", "a+b", "b"]
    shuffled = partition(sources, base.model_copy(update={"partition": "random", "steps": 2}))
    assert [len(c.rows) for c in shuffled] == [8, 8]
    assert shuffled[0].name == "random1of2"
    one = partition(sources, AlignConfig(method="dpo", data=[a, b]))
    assert len(one) == 1 and one[0].name == "a+b" and len(one[0].rows) == 16
    with pytest.raises(HarnessError, match="only 16 pairs"):
        partition(sources, base.model_copy(update={"steps": 17}))


def test_conversational_implicit_prompt_trains(tiny_models):
    model, tok = _load(tiny_models["base"])
    cfg = AlignConfig(method="dpo", data=str(FIXTURES / "toy_chat_implicit.jsonl"), max_steps=2, **FAST)
    result = align_model(model, tok, cfg)
    assert result.steps[0]["examples"] == 8


def test_nan_loss_raises(tiny_models):
    model, tok = _load(tiny_models["base"])
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    cfg = AlignConfig(method="dpo", data=TOY, max_steps=2, **FAST)
    with pytest.raises(AlignmentError, match="loss is nan"):
        align_model(model, tok, cfg)


def test_prompts_longer_than_max_length_are_a_clear_error(tiny_models, tmp_path):
    long = _write(
        tmp_path / "long.jsonl",
        [{"prompt": "word " * 200, "chosen": " A", "rejected": " B"} for _ in range(4)],
    )
    model, tok = _load(tiny_models["base"])
    cfg = AlignConfig(method="dpo", data=long, max_steps=1, **{**FAST, "max_length": 16})
    with pytest.raises(AlignmentError, match="longer than max_length=16"):
        align_model(model, tok, cfg)


def test_out_of_memory_becomes_an_alignment_error(tiny_models, monkeypatch):
    def oom(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    monkeypatch.setattr(trl.DPOTrainer, "train", oom)
    model, tok = _load(tiny_models["base"])
    cfg = AlignConfig(method="dpo", data=TOY, max_steps=1, **FAST)
    with pytest.raises(AlignmentError, match="out of memory.*per_device_train_batch_size"):
        align_model(model, tok, cfg)


def test_apply_alignment_on_a_built_merge_and_record(tiny_models, tmp_path):
    from harness.merge import build_model
    from harness.recipe import recipe_from_dict, resolve_recipe
    from harness.record import Leaderboard, TrialRecord

    recipe = recipe_from_dict(
        {
            "merge": {
                "merge_method": "linear",
                "models": [
                    {"model": str(tiny_models["donor_a"]), "parameters": {"weight": 0.5}},
                    {"model": str(tiny_models["donor_b"]), "parameters": {"weight": 0.5}},
                ],
            },
            "align": {"method": "dpo", "data": TOY, "max_steps": 2, **FAST},
        }
    )
    built = build_model(resolve_recipe(recipe))
    merged = _weights(built.model)
    steps = apply_alignment(built, recipe)
    assert len(steps) == 1 and not _same(merged, _weights(built.model))
    assert built.seconds > 0
    assert apply_alignment(built, recipe.model_copy(update={"align": None})) == []

    board = Leaderboard(tmp_path / "lb.duckdb")
    trial = TrialRecord(name="aligned", source="test", align_method="dpo", align_steps=steps)
    board.record(trial)
    (row,) = board.align_steps(trial.id)
    assert row["method"] == "dpo" and row["train_steps"] == 2
    assert row["rewards_margins"] == pytest.approx(steps[0]["rewards_margins"])
    assert set(RECORD_KEYS.values()) <= set(row)


@pytest.mark.slow
def test_two_dpo_steps_on_the_real_demo_model():
    from harness.assets import prepare_assets, resolve_model

    prepare_assets()
    path = resolve_model("demo:smollm2-135m-instruct")
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    cfg = AlignConfig(
        method="dpo",
        data=[{"path": "demo:sciq", "limit": 16}],
        max_steps=2,
        per_device_train_batch_size=4,
        max_length=128,
        learning_rate=1e-5,
        warmup_ratio=0.0,
    )
    result = align_model(model, tok, cfg)
    (record,) = result.steps
    assert record["train_steps"] == 2 and record["examples"] == 16
    assert all(record[k] is not None for k in RECORD_KEYS.values())
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tok(prompt, return_tensors="pt")
    out = result.model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1] :])


@pytest.mark.parametrize("route", ["memory", "disk"])
def test_build_with_align_saves_the_aligned_model(tiny_models, tmp_path, route):
    """build_model aligns after the merge, and --out holds the aligned weights on both routes."""
    from transformers import AutoModelForCausalLM

    from harness.merge import build_model
    from harness.recipe import recipe_from_dict, resolve_recipe

    merge = {
        "merge_method": "linear",
        "models": [
            {"model": str(tiny_models["donor_a"]), "parameters": {"weight": 0.5}},
            {"model": str(tiny_models["donor_b"]), "parameters": {"weight": 0.5}},
        ],
    }
    plain = build_model(resolve_recipe(recipe_from_dict({"merge": merge})))
    recipe = recipe_from_dict(
        {"merge": merge, "align": {"method": "dpo", "data": TOY, "max_steps": 1, **FAST}}
    )
    out = tmp_path / route
    built = build_model(resolve_recipe(recipe), out_dir=out, route=route)
    assert len(built.align_steps) == 1
    saved = _weights(AutoModelForCausalLM.from_pretrained(out))
    assert _same(saved, _weights(built.model)) and not _same(saved, _weights(plain.model))


def test_gradient_checkpointing_trains_the_same_model_quietly(tiny_models):
    """``gradient_checkpointing: true`` trades time for memory (a 56-layer DPO trial of the demo
    peaks at 6.2 instead of 8.0 GiB) and must not change the result; transformers 5's renamed-API
    FutureWarnings, which TRL 1.16 and the model's own overrides still trigger, stay off."""
    import warnings

    def train(checkpointing: bool):
        model, tok = _load(tiny_models["base"])
        torch.manual_seed(0)
        cfg = AlignConfig(
            method="dpo", data=TOY, max_steps=4, gradient_checkpointing=checkpointing, seed=0, **FAST
        )
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            result = align_model(model, tok, cfg)
        renamed = [str(w.message) for w in seen if "gradient_checkpointing" in str(w.message)]
        return result, renamed

    plain, _ = train(False)
    checkpointed, renamed = train(True)
    assert checkpointed.steps[0]["loss"] == pytest.approx(plain.steps[0]["loss"], abs=1e-6)
    assert _same(_weights(plain.model), _weights(checkpointed.model))
    assert not renamed, renamed
    assert not checkpointed.model.is_activation_checkpointing  # a training setting, removed after
