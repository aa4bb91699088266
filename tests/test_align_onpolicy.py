"""On-policy rejected answers: the model's own greedy answer is ``rejected``, the label ``chosen``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.align import PreferenceSource
from harness.align.data import load_source
from harness.align.onpolicy import GenerationCache, model_fingerprint, normalize_answer, on_policy_pairs
from harness.errors import HarnessError
from tests.tiny import make_tiny_llama

MAX_NEW = 8

STANDARD = [
    {"prompt": "Question: Which gas do plants absorb?\nAnswer:", "chosen": " carbon dioxide"},
    {"prompt": "Hi", "chosen": " hello", "rejected": " ignored"},
    {"prompt": "0123456789 the quick brown fox jumps over the lazy dog. Answer:", "chosen": " D"},
]
CHAT = [
    {
        "prompt": [{"role": "user", "content": "Which gas do plants absorb?"}],
        "chosen": [{"role": "assistant", "content": "carbon dioxide"}],
    },
    {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "The capital of France is?"},
        ],
        "chosen": [{"role": "assistant", "content": "Paris"}],
    },
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("onpolicy") / "m", seed=5)


def _load(folder: Path) -> tuple[Any, Any]:
    return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def _alone(model: Any, tokenizer: Any, prompt: Any, max_new_tokens: int = MAX_NEW) -> str:
    """The greedy answer to ``prompt`` generated alone (no batch, no padding): the oracle."""
    if isinstance(prompt, list):
        ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)["input_ids"]
    else:
        ids = tokenizer(prompt)["input_ids"]
    out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=max_new_tokens)
    new = out[0, len(ids) :].tolist()
    if tokenizer.eos_token_id in new:
        new = new[: new.index(tokenizer.eos_token_id)]
    return tokenizer.decode(new, skip_special_tokens=True)


@pytest.mark.parametrize("rows", [STANDARD, CHAT], ids=["standard", "conversational"])
def test_rejected_is_the_greedy_answer_of_each_prompt_alone(tiny, rows):
    model, tokenizer = _load(tiny)
    model.train()  # restored after
    pairs, stats = on_policy_pairs(model, tokenizer, rows, max_new_tokens=MAX_NEW, batch_size=16)
    assert model.training and tokenizer.padding_side == "right"
    model.eval()
    assert stats.rows == stats.prompts == stats.generated == stats.pairs == len(rows)
    assert stats.cached == stats.dropped_equal == stats.dropped_empty == 0
    for row, pair in zip(rows, pairs, strict=True):
        assert pair["prompt"] == row["prompt"] and pair["chosen"] == row["chosen"]
        answer = _alone(model, tokenizer, row["prompt"])
        assert answer.strip()
        if isinstance(row["chosen"], list):
            assert pair["rejected"] == [{"role": "assistant", "content": answer.strip()}]
        else:
            assert pair["rejected"] == answer
    assert json.loads(json.dumps(stats.as_record()))["pairs"] == len(rows)


def test_an_answer_equal_to_the_label_is_dropped_and_counted(tiny):
    model, tokenizer = _load(tiny)
    first, _ = on_policy_pairs(model, tokenizer, STANDARD + CHAT, max_new_tokens=MAX_NEW)
    # Labels that are the model's answer up to case, spacing and a full stop.
    same_std = {**STANDARD[0], "chosen": "  " + first[0]["rejected"].strip() + " ."}
    same_chat = {
        **CHAT[0],
        "chosen": [{"role": "assistant", "content": first[3]["rejected"][0]["content"] + "!"}],
    }
    rows = [same_std, STANDARD[1], same_chat, CHAT[1]]
    pairs, stats = on_policy_pairs(model, tokenizer, rows, max_new_tokens=MAX_NEW)
    assert (stats.pairs, stats.dropped_equal, stats.dropped_empty) == (2, 2, 0)
    assert [p["chosen"] for p in pairs] == [STANDARD[1]["chosen"], CHAT[1]["chosen"]]
    assert normalize_answer("  Carbon\u00a0 DIOXIDE ?! ") == "carbon dioxide"


def test_an_empty_answer_is_dropped_and_counted(tiny):
    model, tokenizer = _load(tiny)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every logit ties: greedy takes token 0, the eos
    assert tokenizer.eos_token_id == 0
    pairs, stats = on_policy_pairs(model, tokenizer, STANDARD, max_new_tokens=MAX_NEW)
    assert pairs == [] and stats.dropped_empty == len(STANDARD) and stats.dropped_equal == 0


def test_the_cache_answers_a_second_call_and_misses_on_other_settings_or_weights(tiny, tmp_path):
    model, tokenizer = _load(tiny)
    cache = GenerationCache(tmp_path / "gen")
    rows = STANDARD + [dict(STANDARD[0], chosen=" oxygen")]  # a repeated prompt is decoded once
    first, stats = on_policy_pairs(model, tokenizer, rows, max_new_tokens=MAX_NEW, cache=cache)
    assert (stats.prompts, stats.generated, stats.cached, stats.pairs) == (3, 3, 0, 4)

    again, stats = on_policy_pairs(model, tokenizer, rows, max_new_tokens=MAX_NEW, cache=cache)
    assert again == first and (stats.generated, stats.cached) == (0, 3)
    reloaded, _ = _load(tiny)  # same content, another object: same fingerprint
    assert model_fingerprint(reloaded) == model_fingerprint(model)
    _, stats = on_policy_pairs(reloaded, tokenizer, rows, max_new_tokens=MAX_NEW, cache=cache)
    assert stats.generated == 0

    _, stats = on_policy_pairs(model, tokenizer, rows, max_new_tokens=MAX_NEW + 1, cache=cache)
    assert (stats.generated, stats.cached) == (3, 0)

    before = model_fingerprint(model)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] += 0.01
    assert model_fingerprint(model) != before
    _, stats = on_policy_pairs(model, tokenizer, rows, max_new_tokens=MAX_NEW, cache=cache)
    assert (stats.generated, stats.cached) == (3, 0)
    files = sorted(p.name for p in (tmp_path / "gen").iterdir())
    assert len(files) == 3 and not any(name.startswith(".") for name in files)  # no temp debris


def test_a_corrupt_cache_file_is_ignored_and_rewritten(tiny, tmp_path):
    model, tokenizer = _load(tiny)
    cache = GenerationCache(tmp_path / "gen")
    first, _ = on_policy_pairs(model, tokenizer, STANDARD, max_new_tokens=MAX_NEW, cache=cache)
    [path] = list((tmp_path / "gen").iterdir())
    path.write_text('{"answers": {"trunc', encoding="utf-8")
    again, stats = on_policy_pairs(model, tokenizer, STANDARD, max_new_tokens=MAX_NEW, cache=cache)
    assert again == first and (stats.generated, stats.cached) == (len(STANDARD), 0)
    assert len(json.loads(path.read_text(encoding="utf-8"))["answers"]) == len(STANDARD)
    _, stats = on_policy_pairs(model, tokenizer, STANDARD, max_new_tokens=MAX_NEW, cache=cache)
    assert stats.generated == 0


def test_a_row_without_a_label_is_a_harness_error(tiny):
    model, tokenizer = _load(tiny)
    rows = [STANDARD[0], {"prompt": "Hi", "rejected": " x"}]
    with pytest.raises(HarnessError, match=r"row 2 has no label 'chosen' \(has: prompt, rejected\); give"):
        on_policy_pairs(model, tokenizer, rows, max_new_tokens=MAX_NEW)


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_on_policy_sources_load_without_rejected_but_need_chosen(tmp_path):
    labelled = _write(tmp_path / "labelled.jsonl", [{"prompt": "Q?\nAnswer:", "chosen": " yes"}])
    src = load_source(PreferenceSource(path=str(labelled), rejected="on_policy"))
    assert src.on_policy and not src.conversational and len(src) == 1
    with pytest.raises(HarnessError, match="missing column 'rejected'"):  # unchanged without on_policy
        load_source(PreferenceSource(path=str(labelled)))

    unlabelled = _write(tmp_path / "unlabelled.jsonl", [{"prompt": "Q?\nAnswer:", "answer": " yes"}])
    with pytest.raises(HarnessError) as err:
        load_source(PreferenceSource(path=str(unlabelled), rejected="on_policy"))
    message = str(err.value)
    assert "on-policy pairs need a label column 'chosen' (has: answer, prompt)" in message
    assert "\n" not in message


def test_an_on_policy_build_answers_once_and_a_second_build_generates_nothing(
    tiny_models, isolated_home, monkeypatch
):
    """The alignment stage end to end (issue 34): the step's starting model answers every
    prompt, its answers are the pairs' ``rejected``, the record says so; the same build again
    (same weights, prompts, settings) takes every answer from the cache."""
    import trl

    from harness.align import AlignConfig, align_model
    from tests.test_align_trainer import FAST, TOY
    from tests.test_align_trainer import _load as load_merged

    trained_on: list[list[Any]] = []

    class Recording(trl.DPOTrainer):
        def __init__(self, *args, **kwargs):
            trained_on.append(list(kwargs["train_dataset"]["rejected"]))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(trl, "DPOTrainer", Recording)
    config = AlignConfig(
        method="dpo", data=[{"path": TOY, "rejected": "on_policy", "max_new_tokens": 4}], max_steps=1, **FAST
    )
    model, tokenizer = load_merged(tiny_models["base"])
    expected, _ = on_policy_pairs(
        model, tokenizer, [json.loads(x) for x in Path(TOY).read_text().splitlines()], max_new_tokens=4
    )
    first = align_model(model, tokenizer, config).steps[0]["metrics"]["on_policy"]["toy_standard"]
    # One optimizer step of 4 pairs reads 4 pairs: only a seeded sample of 4 is answered.
    assert first["generated"] == first["prompts"] == 4 and first["cached"] == 0
    assert first["sampled_from"] == 16
    assert first["pairs"] + first["dropped_equal"] + first["dropped_empty"] == 4
    answers = {p["prompt"]: p["rejected"] for p in expected}
    assert len(trained_on[0]) == first["pairs"] and " B B B" not in trained_on[0]
    assert set(trained_on[0]) <= set(answers.values())

    model, tokenizer = load_merged(tiny_models["base"])
    again = align_model(model, tokenizer, config).steps[0]["metrics"]["on_policy"]["toy_standard"]
    assert again["generated"] == 0 and again["cached"] == 4
    assert trained_on[1] == trained_on[0]


def test_each_model_is_fingerprinted_once_per_build(tiny_models, isolated_home, monkeypatch, tmp_path):
    """sDPO over two on-policy sources ordered by reward accuracy: M0's fingerprint (a pass over
    every weight) serves both sources' ordering and step 1; M1 gets one for step 2."""
    import harness.align.trainer as trainer
    from harness.align import AlignConfig, align_model
    from tests.test_align_trainer import FAST, TOY, _write
    from tests.test_align_trainer import _load as load_merged

    rows = [json.loads(x) for x in Path(TOY).read_text().splitlines()]
    a, b = _write(tmp_path / "a.jsonl", rows[:8]), _write(tmp_path / "b.jsonl", rows[8:16])
    passes: list[int] = []

    def counted(model: Any) -> str:
        passes.append(id(model))
        return model_fingerprint(model)

    monkeypatch.setattr(trainer, "model_fingerprint", counted)
    config = AlignConfig(
        method="sdpo",
        data=[{"path": p, "rejected": "on_policy", "max_new_tokens": 4} for p in (a, b)],
        partition="reward_accuracy",
        difficulty_sample=4,
        max_steps=1,
        **FAST,
    )
    model, tokenizer = load_merged(tiny_models["base"])
    result = align_model(model, tokenizer, config)
    assert [s["step"] for s in result.steps] == [1, 2]
    assert len(passes) == 2, passes
