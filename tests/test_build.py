"""Every merge method through both routes: same tensors in memory and on disk."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from harness.errors import HarnessError
from harness.merge import DonorPool, build_model, prepare_out_dir
from harness.recipe import recipe_from_dict, resolve_recipe


def _weighted(models, **extra):
    return [
        {"model": str(m), "parameters": {"weight": w, **extra}}
        for m, w in zip(models, (0.6, 0.4), strict=True)
    ]


def method_configs(t):
    base, a, b = str(t["base"]), t["donor_a"], t["donor_b"]
    gradient_t = [
        {"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
        {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
        {"value": 0.5},
    ]
    return {
        "linear": {"merge_method": "linear", "models": _weighted([a, b])},
        "slerp_gradients": {
            "merge_method": "slerp",
            "base_model": str(a),
            "models": [{"model": str(a)}, {"model": str(b)}],
            "parameters": {"t": gradient_t},
        },
        "nuslerp": {"merge_method": "nuslerp", "models": _weighted([a, b])},
        "task_arithmetic": {
            "merge_method": "task_arithmetic",
            "base_model": base,
            "models": _weighted([a, b]),
        },
        "ties": {
            "merge_method": "ties",
            "base_model": base,
            "models": _weighted([a, b], density=0.5),
        },
        "dare_ties": {
            "merge_method": "dare_ties",
            "base_model": base,
            "models": _weighted([a, b], density=0.5),
        },
        "dare_linear": {
            "merge_method": "dare_linear",
            "base_model": base,
            "models": _weighted([a, b], density=0.6),
        },
        "breadcrumbs": {
            "merge_method": "breadcrumbs",
            "base_model": base,
            "models": _weighted([a, b], density=0.8, gamma=0.05),
        },
        "della": {
            "merge_method": "della",
            "base_model": base,
            "models": _weighted([a, b], density=0.6, epsilon=0.1),
        },
        "model_stock": {
            "merge_method": "model_stock",
            "base_model": base,
            "models": [{"model": str(a)}, {"model": str(b)}],
        },
        "passthrough_dus": {
            "merge_method": "passthrough",
            "slices": [
                {"sources": [{"model": base, "layer_range": [0, 3]}]},
                {"sources": [{"model": base, "layer_range": [1, 4]}]},
            ],
        },
    }


@pytest.fixture(scope="module")
def pool():
    return DonorPool()


@pytest.mark.parametrize("method", list(method_configs({k: "x" for k in ("base", "donor_a", "donor_b")})))
def test_in_memory_equals_run_merge(tiny_models, pool, method, tmp_path):
    config = method_configs(tiny_models)[method]
    resolved = resolve_recipe(recipe_from_dict({"merge": {**config, "dtype": "float32"}, "seed": 7}))
    in_memory = build_model(resolved, pool=pool, route="memory")
    on_disk = build_model(resolved, route="disk", out_dir=tmp_path / "disk")
    mem_sd, disk_sd = in_memory.model.state_dict(), on_disk.model.state_dict()
    assert set(mem_sd) == set(disk_sd)
    for name, tensor in disk_sd.items():
        assert torch.equal(mem_sd[name], tensor), f"{method}: {name} differs between routes"
    # The merge did something: not a copy of either donor (except pure layer stacking).
    donor = load_file(str(tiny_models["donor_a"] / "model.safetensors"))
    if method != "passthrough_dus":
        assert not torch.equal(
            mem_sd["model.layers.0.mlp.up_proj.weight"], donor["model.layers.0.mlp.up_proj.weight"]
        )
    assert in_memory.route == "memory" and on_disk.route == "disk"


def test_in_memory_build_draws_no_random_weights(tiny_models, pool):
    """The merged model's skeleton is not randomly initialised (every weight is overwritten by
    the merge; on the demo model the init cost 2.5 s a trial): after a linear merge, which
    draws nothing, the CPU generator is where the merge's own seeding left it."""
    from transformers.trainer_utils import set_seed

    config = method_configs(tiny_models)["linear"]
    resolved = resolve_recipe(recipe_from_dict({"merge": {**config, "dtype": "float32"}, "seed": 3}))
    built = build_model(resolved, pool=pool, route="memory")
    after_build = torch.get_rng_state()
    set_seed(3)
    assert torch.equal(after_build, torch.get_rng_state())
    assert built.model.model.rotary_emb.inv_freq.isfinite().all()  # buffers are still computed


def test_donors_stay_untouched_and_resident(tiny_models):
    """The pool passed in is the one the build reads and fills (an empty pool once counted as
    no pool, so every build of a search loaded its donors again), a second build reads the
    same resident tensors, and training a merged model never writes through to them."""
    config = method_configs(tiny_models)["ties"]
    resolved = resolve_recipe(recipe_from_dict({"merge": config}))
    before = {k: v.clone() for k, v in load_file(str(tiny_models["donor_a"] / "model.safetensors")).items()}
    pool = DonorPool()
    built = build_model(resolved, pool=pool)
    assert len(pool) == 3  # base, donor_a, donor_b
    ref = next(r for r in resolved.merge_config.referenced_models() if str(tiny_models["donor_a"]) in str(r))
    resident = pool.state_dict(ref)
    with torch.no_grad():  # training the merged model must not write through to donor tensors
        for p in built.model.parameters():
            p.add_(1.0)
    for name, tensor in before.items():
        assert torch.equal(resident[name], tensor)
    build_model(resolved, pool=pool)
    assert len(pool) == 3 and pool.state_dict(ref) is resident


def test_dus_build_saves_a_loadable_deeper_model(tiny_models, tmp_path):
    config = method_configs(tiny_models)["passthrough_dus"]
    resolved = resolve_recipe(recipe_from_dict({"name": "dus", "merge": config}))
    out = tmp_path / "dus"
    built = build_model(resolved, out_dir=out)
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.config.num_hidden_layers == 6
    assert (out / "recipe.yaml").read_text().startswith("name: dus")
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, built.model.state_dict()[name])
    # layer 3 of the output is layer 1 of the source (second slice starts at 1)
    src = load_file(str(tiny_models["base"] / "model.safetensors"))
    assert torch.equal(
        reloaded.state_dict()["model.layers.3.self_attn.q_proj.weight"],
        src["model.layers.1.self_attn.q_proj.weight"],
    )


def test_out_dir_must_be_empty_and_writable(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    with pytest.raises(HarnessError, match="not empty"):
        prepare_out_dir(full)
    prepare_out_dir(full, overwrite=True)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    import os

    if os.geteuid() != 0:  # root ignores permission bits
        with pytest.raises(HarnessError, match="cannot write"):
            prepare_out_dir(locked / "model")


def test_mergekit_torch_dtype_deprecation_stays_off_the_console(tiny_models, pool, tmp_path):
    """mergekit sets ``config.torch_dtype``; transformers would print its deprecation warning
    once per search, a line the user did not cause and cannot act on. Both routes keep it off."""
    import logging

    from transformers.utils.logging import warning_once

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    log = logging.getLogger("transformers.configuration_utils")  # where transformers logs it
    log.addHandler(handler)
    config = method_configs(tiny_models)["linear"]
    resolved = resolve_recipe(recipe_from_dict({"merge": {**config, "dtype": "float32"}}))
    try:
        for route, out_dir in (("memory", None), ("disk", tmp_path / "disk")):
            warning_once.cache_clear()  # it is printed once per process; make this build the first
            build_model(resolved, pool=pool, route=route, out_dir=out_dir)
            assert not [m for m in seen if "torch_dtype" in m], route
    finally:
        log.removeHandler(handler)


def test_loading_and_keeping_a_model_draw_no_transformers_bars(tiny_models, tmp_path, capfd):
    """A search loads every reference and confirmation and keeps its best trials on disk:
    transformers' "Loading weights" / "Writing model shards" bars stay off the console then,
    and its hook is restored afterwards (other code's bars are not ours to turn off)."""
    from transformers.utils import logging as hf_logging

    from harness.merge.loading import load_pretrained
    from harness.record import TrialRecord
    from harness.search.confirm import KeptModels

    capfd.readouterr()
    model, tokenizer, _ = load_pretrained(str(tiny_models["base"]), device="cpu")
    KeptModels(tmp_path).keep(TrialRecord(name="t", source="search", id="t"), model, tokenizer)
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err, err
    assert hf_logging.set_tqdm_hook(None) is None  # nothing left installed
    model.save_pretrained(tmp_path / "plain")  # outside the harness's calls the bar is back
    assert "Writing model shards" in capfd.readouterr().err
