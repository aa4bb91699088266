"""Merging with mergekit, in memory or to disk.

Both routes run mergekit's own planner on the same configuration, so per-filter
gradients, slices (depth up-scaling) and every registered method behave exactly as
``mergekit-yaml`` would. The in-memory route differs only in where tensors come from:
donor weights stay resident in a :class:`DonorPool` across builds (no disk reads,
no disk writes), which is what a search wants.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch

LOG = logging.getLogger(__name__)


class _ResidentLoader:
    """mergekit tensor loader over tensors already in memory (duck-types LazyTensorLoader)."""

    def __init__(self, index: Any, tensors: dict[str, torch.Tensor]):
        self.index = index
        self.tensors = tensors

    def get_tensor(
        self,
        key: str,
        device: str = "cpu",
        aliases: list[str] | None = None,
        raise_on_missing: bool = True,
    ) -> torch.Tensor | None:
        if key not in self.tensors:
            key = next((a for a in aliases or [] if a in self.tensors), key)
        if key not in self.tensors:
            if raise_on_missing:
                raise KeyError(key)
            return None
        return self.tensors[key].to(device)

    def flush(self) -> None:
        """Nothing to release: residency is the point."""


class DonorPool:
    """Donor weights kept loaded across builds, keyed by mergekit model reference."""

    def __init__(self) -> None:
        self._loaders: dict[Any, _ResidentLoader] = {}

    def __len__(self) -> int:
        return len(self._loaders)

    def loader(self, ref: Any) -> _ResidentLoader:
        if ref not in self._loaders:
            disk = ref.lazy_loader(lazy_unpickle=False)
            tensors = {name: disk.get_tensor(name) for name in disk.index.tensor_paths}
            disk.flush()
            self._loaders[ref] = _ResidentLoader(disk.index, tensors)
        return self._loaders[ref]

    def state_dict(self, ref: Any) -> dict[str, torch.Tensor]:
        return self.loader(ref).tensors

    def install(self, refs: list[Any]) -> None:
        """Make mergekit's loader cache serve these references from memory."""
        from mergekit.io.tasks import LoaderCache

        cache = LoaderCache()
        for ref in refs:
            cache.loaders[ref] = self.loader(ref)  # type: ignore[assignment]

    def clear(self) -> None:
        from mergekit.io.tasks import LoaderCache

        cache = LoaderCache()
        for ref in self._loaders:
            cache.loaders.pop(ref, None)
        self._loaders.clear()


def merge_options(seed: int, device: str | None = None) -> Any:
    from mergekit.options import MergeOptions

    return MergeOptions(
        random_seed=seed,
        device=device or "cpu",
        copy_tokenizer=True,
        lazy_unpickle=False,
        quiet=True,
        write_model_card=True,
    )


def merge_in_memory(
    merge_config: Any, pool: DonorPool, *, seed: int = 0, device: str | None = None
) -> tuple[dict[str, torch.Tensor], Any]:
    """Run a mergekit configuration against resident donors; return (tensors, output config)."""
    import transformers
    from mergekit.architecture import get_architecture_info
    from mergekit.common import dtype_from_name
    from mergekit.graph import Executor
    from mergekit.merge import _model_out_config
    from mergekit.plan import MergePlanner

    from harness.evaluate.transformers_compat import torch_dtype_deprecation_quiet

    config = copy.deepcopy(merge_config)  # the planner normalises (mutates) its config
    options = merge_options(seed, device)
    arch_info = get_architecture_info(config, options)
    with torch_dtype_deprecation_quiet():
        out_config = _model_out_config(config, arch_info)
    pool.install(list(config.referenced_models()))
    planner = MergePlanner(config, arch_info, options=options, out_model_config=out_config)
    # plan_in_memory() cannot build its ReturnTensor wrappers in mergekit 0.1.5 (pydantic
    # rejects the generic Task field), so run the per-weight merge tasks directly and
    # apply ReturnTensor's dtype rule ourselves.
    planner._plan()
    weights_of: dict[Any, list[Any]] = {}
    for weight, task in planner._tensors:
        weights_of.setdefault(task, []).append(weight)

    transformers.trainer_utils.set_seed(seed)  # as run_merge does: DARE/DELLA draw masks
    executor = Executor(targets=list(weights_of), math_device=torch.device(options.device))
    tensors: dict[str, torch.Tensor] = {}
    for task, value in executor.run(quiet=True):
        if value is None:  # an optional weight absent from every input
            continue
        for weight in weights_of[task]:
            out_dtype = weight.force_dtype or config.out_dtype
            tensors[weight.name] = value.to(dtype_from_name(out_dtype)) if out_dtype else value
    return tensors, out_config


def merge_to_disk(merge_config: Any, out_dir: Path, *, seed: int = 0, device: str | None = None) -> Path:
    """mergekit's own streaming merge (``run_merge``): for slices with tokenizer surgery or models too big for RAM."""
    from mergekit.merge import run_merge

    from harness.evaluate.transformers_compat import torch_dtype_deprecation_quiet

    with torch_dtype_deprecation_quiet():
        run_merge(copy.deepcopy(merge_config), str(out_dir), options=merge_options(seed, device))
    return out_dir


def model_from_tensors(tensors: dict[str, torch.Tensor], out_config: Any) -> Any:
    """Instantiate the merged model; never alias donor storage (training would mutate donors).

    The skeleton is built without random weights: every parameter is copied from ``tensors``
    below, and one that is not (nor tied to one that is) is an error, so no uninitialised
    memory can reach a model."""
    from transformers import AutoModelForCausalLM

    from harness.evaluate.transformers_compat import weights_left_uninitialised

    dtype = _config_dtype(out_config)
    with weights_left_uninitialised():
        model = AutoModelForCausalLM.from_config(out_config, dtype=dtype)
    missing, unexpected = model.load_state_dict(tensors, strict=False)  # copies into fresh params
    tied = _tied_parameter_names(model)
    really_missing = [k for k in missing if k not in tied]
    if really_missing or unexpected:
        raise RuntimeError(
            f"merged tensors do not fit the output model: missing {really_missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.tie_weights()
    model.eval()
    return model


def _config_dtype(config: Any) -> torch.dtype:
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def _tied_parameter_names(model: Any) -> set[str]:
    names: set[str] = set()
    names.update(getattr(model, "_tied_weights_keys", None) or ())  # a dict or a list of names
    if getattr(model.config, "tie_word_embeddings", False):
        names.add("lm_head.weight")
    return names
