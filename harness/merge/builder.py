"""Build stage: a resolved recipe in, a loaded model (and optionally a folder) out."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.errors import HarnessError
from harness.memory import release_freed_memory
from harness.merge.folder import save_model_folder, snapshot
from harness.merge.loading import model_facts
from harness.merge.routes import DonorPool, merge_in_memory, merge_to_disk, model_from_tensors
from harness.placement import Placement, load_onto
from harness.recipe import Recipe, ResolvedRecipe
from harness.stages import stage

Route = Literal["auto", "memory", "disk"]


@dataclass
class BuiltModel:
    model: Any  # transformers.PreTrainedModel
    tokenizer: Any
    recipe: Recipe
    route: str  # "memory" or "disk"
    seconds: float
    path: Path | None = None
    # One record per alignment step (TRL metrics, data sizes, time); [] for a plain merge.
    align_steps: list[dict[str, Any]] = field(default_factory=list)
    merge_config: Any = None  # the resolved mergekit configuration (mergekit_config.yml)

    @property
    def num_parameters(self) -> int:
        return model_facts(self.model)[0]

    @property
    def dtype(self) -> str:
        return model_facts(self.model)[1]

    def save(self, out_dir: Path) -> Path:
        """Write the model folder (:mod:`harness.merge.folder`): weights, tokenizer, config,
        mergekit_config.yml, the recipe that reproduces it and its card."""
        save_model_folder(out_dir, self.recipe, self.merge_config, model=self.model, tokenizer=self.tokenizer)
        self.path = out_dir
        return out_dir


def choose_route(resolved: ResolvedRecipe, route: Route = "auto") -> str:
    """In memory unless the config asks for tokenizer surgery (mergekit does that on disk)."""
    cfg = resolved.merge_config
    needs_disk = cfg.tokenizer_source is not None or cfg.tokenizer is not None
    if route == "memory" and needs_disk:
        raise HarnessError(
            "this recipe sets tokenizer_source/tokenizer, which mergekit only merges on disk",
            "use the disk route (--route disk)",
        )
    if route == "auto":
        return "disk" if needs_disk else "memory"
    return route


def prepare_out_dir(out_dir: Path, overwrite: bool = False) -> None:
    """Refuse a file, a non-empty folder or an unwritable destination before any heavy work."""
    if out_dir.exists() and not out_dir.is_dir():
        raise HarnessError(f"--out {out_dir} is a file, not a folder", "pass a folder path for the model")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise HarnessError(
            f"output folder {out_dir} exists and is not empty", "pass --overwrite or another --out"
        )
    import os

    from harness.paths import nearest_existing

    probe = nearest_existing(out_dir)

    if not os.access(probe, os.W_OK):
        raise HarnessError(f"cannot write to {out_dir} ({probe} is not writable)", "choose a writable --out")


def build_model(
    resolved: ResolvedRecipe,
    *,
    pool: DonorPool | None = None,
    out_dir: Path | None = None,
    route: Route = "auto",
    placement: Placement | None = None,
) -> BuiltModel:
    """Merge (and align, when the recipe says so) one recipe into a model loaded on the run's
    device (``placement``; default: the pool's device, else :meth:`Placement.decide`), where
    it stays."""
    start = time.perf_counter()
    if placement is None:  # a caller's pool already says where; else the default decision
        placement = Placement(pool.device) if pool is not None else Placement.decide()
    chosen = choose_route(resolved, route)
    aligning = resolved.recipe.align is not None
    with stage("merge") as merged:
        if chosen == "memory":
            # not `pool or ...`: a pool with nothing loaded yet is empty, hence falsy
            pool = DonorPool(placement.device) if pool is None else pool
            if pool.device != placement.device:
                raise ValueError(f"donor pool on {pool.device}, build on {placement.device}")
            built = _build_in_memory(resolved, pool, placement)
            release_freed_memory()  # the merge's temporaries, before DPO allocates its own
        else:  # with align, the on-disk merge is only an intermediate: the aligned model is saved below
            built = _build_on_disk(resolved, None if aligning else out_dir, placement)
        merged(built.model)
    built.merge_config = resolved.merge_config
    built.seconds = time.perf_counter() - start
    if aligning:
        from harness.align import apply_alignment

        with stage("align") as aligned:
            # the model stays on the device; adds its time to built.seconds
            built.align_steps = apply_alignment(built, device=placement.device)
            aligned(built.model)
    if out_dir is not None and built.path != out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
        built.save(out_dir)
    return built


def run_dtype(resolved: ResolvedRecipe, placement: Placement) -> Any:
    """The merged model's dtype: the recipe's (``out_dtype``, else ``dtype``) when it names one
    (None: mergekit's output config carries it), else the run's rule."""
    cfg = resolved.merge_config
    return None if (cfg.out_dtype or cfg.dtype) else placement.torch_dtype


def _build_in_memory(resolved: ResolvedRecipe, pool: DonorPool, placement: Placement) -> BuiltModel:
    from mergekit.merge import _set_chat_template
    from transformers import AutoTokenizer

    cfg = resolved.merge_config
    tensors, out_config = merge_in_memory(cfg, pool, seed=resolved.recipe.seed, device=placement.device)
    model = model_from_tensors(
        tensors, out_config, device=placement.device, dtype=run_dtype(resolved, placement)
    )
    del tensors  # the model holds its own copy: the merge's results are freed here
    # mergekit's copy_tokenizer rule: the base model's tokenizer, else the first model's.
    source = cfg.base_model or cfg.referenced_models()[0]
    tokenizer = AutoTokenizer.from_pretrained(source.model.path, revision=source.model.revision)
    _set_chat_template(tokenizer, cfg)
    return BuiltModel(model=model, tokenizer=tokenizer, recipe=resolved.recipe, route="memory", seconds=0.0)


def _build_on_disk(resolved: ResolvedRecipe, out_dir: Path | None, placement: Placement) -> BuiltModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = placement.device
    target = out_dir or Path(tempfile.mkdtemp(prefix="harness-merge-"))
    before = snapshot(target)
    try:
        merge_to_disk(resolved.merge_config, target, seed=resolved.recipe.seed, device=device)
        model = AutoModelForCausalLM.from_pretrained(
            target,
            dtype=run_dtype(resolved, placement) or "auto",  # auto: the checkpoint's own
            **load_onto(device),
        )
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(target)
    finally:
        if out_dir is None:
            shutil.rmtree(target, ignore_errors=True)
    built = BuiltModel(
        model=model,
        tokenizer=tokenizer,
        recipe=resolved.recipe,
        route="disk",
        seconds=0.0,
        merge_config=resolved.merge_config,
    )
    if out_dir is not None:  # mergekit wrote the weights, tokenizer and its own card: ours replaces it
        save_model_folder(out_dir, resolved.recipe, resolved.merge_config, since=before)
        built.path = out_dir
    return built
