"""The TRL boundary (``harness/align/trl_compat.py``): fails by name when an upgrade moves an internal."""

from __future__ import annotations

import pytest
import torch
import trl.trainer.utils as trl_utils
from transformers import AutoModelForCausalLM

from harness.align.methods import METHODS
from harness.align.trl_compat import labelled_positions_only, strip_trl_patches

from .tiny import make_tiny_llama


def test_trl_still_has_the_internals_the_harness_patches():
    import trl.trainer.dpo_trainer as dpo_module

    assert callable(getattr(trl_utils, "_use_triton", None)), "trl.trainer.utils._use_triton moved"
    assert callable(getattr(trl_utils, "add_fused_lm_head", None)), (
        "trl.trainer.utils.add_fused_lm_head moved"
    )
    assert hasattr(trl_utils, "_ChunkedLogProbFunction"), "TRL's chunked log-prob kernel moved"
    assert callable(getattr(dpo_module, "create_model_from_path", None)), "TRL's reference reload moved"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_finds_its_trl_trainer(name):
    """Each method's TRL classes import, and where its trainer would re-load a reference from
    disk the guard has a hook to replace (ORPO has no reference)."""
    import importlib

    method = METHODS[name]
    config_class, trainer_class = method.trl_classes()
    assert config_class.__name__.endswith("Config") and trainer_class.__name__.endswith("Trainer")
    module = importlib.import_module(method.trl_module)
    assert getattr(module, trainer_class.__name__) is trainer_class, f"{method.trl_module} moved"
    if method.needs_reference:
        assert callable(getattr(module, "create_model_from_path", None)), (
            f"{method.trl_module}.create_model_from_path (the reference reload) moved"
        )


@pytest.fixture
def fused_model(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(make_tiny_llama(tmp_path / "tiny"))
    model.eval()
    trl_utils.add_fused_lm_head(model)
    yield model
    strip_trl_patches(model)


def _score(model, monkeypatch) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """TRL's fused forward on a DPO-shaped batch; the rows its LM-head kernel was given."""
    rows: list[int] = []
    kernel = trl_utils._ChunkedLogProbFunction.apply

    def spy(hidden, *args):
        rows.append(hidden.shape[0])
        return kernel(hidden, *args)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", spy)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 200, (4, 24), generator=generator)
    attention = torch.ones_like(ids)
    attention[2:, 18:] = 0  # right padding
    labels = ids.clone()
    labels[:, :15] = -100  # the prompt
    labels[attention == 0] = -100
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=attention, labels=labels, fused_lm_head=True)
    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", kernel)
    return out.log_probs, out.loss, rows


def test_cpu_scores_only_labelled_positions_with_the_same_numbers(fused_model, monkeypatch):
    stock_logps, stock_loss, stock_rows = _score(fused_model, monkeypatch)
    with labelled_positions_only():
        logps, loss, rows = _score(fused_model, monkeypatch)
    # Labelled after the shift: positions 15..23 of rows 0-1, 15..17 of rows 2-3.
    assert stock_rows == [4 * 23]
    assert rows == [2 * 9 + 2 * 3]
    assert torch.allclose(logps, stock_logps, atol=1e-5)
    assert torch.allclose(loss, stock_loss, atol=1e-6)


def test_the_patch_is_undone(fused_model):
    original = trl_utils._use_triton
    with labelled_positions_only():
        assert trl_utils._use_triton is not original
        assert trl_utils._use_triton(torch.device("cpu"))
    assert trl_utils._use_triton is original
