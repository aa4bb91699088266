"""One device decision per run, applied to every stage (issue 33, ``harness.placement``).

This machine has no GPU, so "the stage honours the run's device" is shown two ways: stages
that can run on torch's ``meta`` device are run there (a stage that ignored the device would
leave its tensors on the CPU), and a search is watched at every stage boundary: each stage
must be handed the run's one decision and each model must be on that device when it is
scored."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from harness.errors import HarnessError
from harness.placement import Placement, pick_dtype, strays
from tests.fixtures.evaluate_data import build_data_dir
from tests.test_search import ALIGN_SPACE, db_rows, run, write_space
from tests.tiny import tiny_llama_config

pytestmark = pytest.mark.usefixtures("eval_env")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return build_data_dir(tmp_path_factory.mktemp("eval_data"), parts=("arc",))


def test_the_decision_is_checked_and_the_dtype_rule_is_one_rule():
    assert Placement.decide() == Placement("cpu", "auto")  # no GPU visible here
    assert Placement.decide("cpu", "bfloat16").torch_dtype == torch.bfloat16
    assert Placement("cpu", "auto").dtype_name == "float32"  # bf16 matmuls are slow on CPUs
    assert pick_dtype("auto", "cpu") == torch.float32
    with pytest.raises(HarnessError, match="no CUDA GPU is visible"):
        Placement.decide("cuda")
    with pytest.raises(HarnessError, match="unknown dtype 'float8'"):
        Placement.decide("cpu", "float8")
    with pytest.raises(HarnessError, match="unknown dtype 'Tensor'"):
        pick_dtype("Tensor", "cpu")  # an attribute of torch, not a dtype


def test_the_merged_model_is_built_on_the_runs_device():
    """The skeleton is made on the device and the merged tensors copied into it there: on
    ``meta`` every parameter and buffer (rotary frequencies included) ends on ``meta``. A
    skeleton built on the CPU first would leave them there."""
    from transformers import LlamaForCausalLM

    from harness.merge.routes import model_from_tensors

    config = tiny_llama_config()
    with torch.device("meta"):
        tensors = dict(LlamaForCausalLM(config).state_dict())
    model = model_from_tensors(tensors, config, device="meta", dtype=torch.bfloat16)
    assert strays(model, "meta") == []
    assert next(model.parameters()).dtype == torch.bfloat16


def test_the_merge_computes_and_keeps_its_results_on_the_runs_device(tiny_models, monkeypatch):
    """mergekit's executor moves inputs to its math device and results to its storage device
    (the CPU unless told): both must be the run's device, or a GPU merge comes back to host
    memory. (mergekit's methods cannot run on ``meta``, so the executor is stopped once made.)"""
    import mergekit.graph
    import mergekit.merge  # noqa: F401  (imported before the patch: it binds Executor at import)

    from harness.merge.routes import DonorPool, merge_in_memory
    from harness.recipe import recipe_from_dict, resolve_recipe

    made: list[tuple[torch.device, torch.device]] = []

    class Stop(Exception):
        pass

    class Watched(mergekit.graph.Executor):
        def __init__(self, targets, math_device, storage_device=torch.device("cpu"), **kw):
            made.append((torch.device(math_device), torch.device(storage_device)))
            raise Stop

    monkeypatch.setattr(mergekit.graph, "Executor", Watched)
    merge = {
        "merge_method": "linear",
        "models": [
            {"model": str(tiny_models["donor_a"]), "parameters": {"weight": 0.5}},
            {"model": str(tiny_models["donor_b"]), "parameters": {"weight": 0.5}},
        ],
    }
    config = resolve_recipe(recipe_from_dict({"merge": merge})).merge_config
    with pytest.raises(Stop):
        merge_in_memory(config, DonorPool(), device="meta")
    assert made == [(torch.device("meta"), torch.device("meta"))]


def test_a_donor_is_served_where_the_pool_keeps_it(tiny_models):
    """mergekit's loader asks for "cpu" whatever the merge's device; a GPU-resident donor
    answered literally would cross the bus twice per merge."""
    from harness.merge.routes import _ResidentLoader

    tensor = torch.zeros(2, device="meta")
    loader = _ResidentLoader(index=None, tensors={"w": tensor})
    assert loader.get_tensor("w", device="cpu") is tensor


def test_a_stray_model_is_moved_to_the_runs_device_and_said(caplog):
    """What scoring does with a model some stage left elsewhere (``Scorer.measure``)."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(tiny_llama_config())
    with caplog.at_level(logging.WARNING):
        Placement("meta").bring(model, "scoring")
    assert strays(model, "meta") == []
    assert "a model reached scoring off the run's device meta" in caplog.text


def test_every_stage_of_a_search_gets_the_runs_one_decision(tmp_path, tiny_models, data, monkeypatch):
    """A search without --device (what a user types): references, merges, alignment,
    scoring and confirmations all run on the device the run decided, in its dtype. Each stage
    is watched at its entry; today's failure mode was stages that got ``None`` and chose for
    themselves (merge on the CPU, references on CUDA)."""
    import harness.align.trainer as trainer
    import harness.merge.builder as builder
    import harness.merge.loading as loading
    import harness.search.runner as runner_module
    from harness.pipeline import Scorer

    seen: list[tuple[str, str | None, str | None]] = []  # (stage, device handed, model's device)
    build, load, align, measure = (
        builder.build_model,
        loading.load_pretrained,
        trainer.align_model,
        Scorer.measure,
    )

    def watched_build(resolved, **kw):
        built = build(resolved, **kw)
        seen.append(("build", kw["placement"].device, str(next(built.model.parameters()).device)))
        return built

    def watched_load(ref, **kw):
        model, tokenizer, path = load(ref, **kw)
        seen.append(("load", kw.get("device"), str(next(model.parameters()).device)))
        return model, tokenizer, path

    def watched_align(model, tokenizer, config, **kw):
        seen.append(("align", kw.get("device"), None))
        return align(model, tokenizer, config, **kw)

    def watched_measure(self, model, tokenizer, *args, **kw):
        seen.append(("score", self.placement.device, str(next(model.parameters()).device)))
        return measure(self, model, tokenizer, *args, **kw)

    monkeypatch.setattr("harness.merge.build_model", watched_build)
    monkeypatch.setattr(loading, "load_pretrained", watched_load)
    monkeypatch.setattr(trainer, "align_model", watched_align)
    monkeypatch.setattr(Scorer, "measure", watched_measure)
    space = write_space(
        tmp_path,
        tiny_models,
        data,
        references=["$base"],
        align={"dpo": ALIGN_SPACE["dpo"]},
        methods={
            "linear": {
                "merge_method": "linear",
                "models": [
                    {"model": "$donor_a", "parameters": {"weight": {"float": [0.2, 0.8]}}},
                    {"model": "$donor_b", "parameters": {"weight": 0.5}},
                ],
            }
        },
    )
    runner, outcome = run(space, tmp_path, 2, confirm_top=1)
    assert outcome.ran == 2 and runner.placement == Placement("cpu", "auto")
    stages = {stage for stage, _, _ in seen}
    assert stages == {"build", "load", "align", "score"}, seen
    assert all(handed == "cpu" and (model is None or model == "cpu") for _, handed, model in seen), seen
    # The merge's dtype is the rule's, written into each recipe (its hash says what was run).
    dtypes = db_rows(tmp_path, "SELECT dtype, recipe_yaml FROM trials WHERE source = 'search'")
    assert dtypes and all(d == "float32" and "dtype: float32" in y for d, y in dtypes)
    assert runner_module.donor_headroom(runner.space) == 3.0  # LoRA only: adapter + activations
