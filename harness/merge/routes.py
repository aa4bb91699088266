"""Merging with mergekit, in memory or to disk.

Both routes run mergekit's own planner on the same configuration, so per-filter
gradients, slices (depth up-scaling) and every registered method behave exactly as
``mergekit-yaml`` would. The in-memory route differs only in where tensors come from:
donor weights stay resident in a :class:`DonorPool` across builds (no disk reads,
no disk writes), which is what a search wants.

On a GPU the in-memory route computes and stays there: donors resident on the device when
they fit beside a trial's model and its training state (else in pinned host memory, copied
per merge), the merge's math and its results on the device, the merged model's skeleton built
on the device. The disk route is mergekit's own streaming merge: it writes through host memory
and says so.
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
        """The resident tensor where the pool keeps it. mergekit's ``LoadTensor`` asks for
        "cpu" whatever the merge's device; its executor moves inputs to the math device (and
        results to the storage device) itself, so answering the request literally would copy
        a GPU-resident donor to the host and back on every merge."""
        if key not in self.tensors:
            key = next((a for a in aliases or [] if a in self.tensors), key)
        if key not in self.tensors:
            if raise_on_missing:
                raise KeyError(key)
            return None
        return self.tensors[key]

    def flush(self) -> None:
        """Nothing to release: residency is the point."""


class DonorPool:
    """Donor weights kept loaded across builds, keyed by mergekit model reference.

    ``device``: the run's (:mod:`harness.placement`). On a GPU a donor is kept on the device
    when, after loading it, the device still has ``headroom`` times its size free (room for a
    trial's merged model, and for alignment its reference, gradients and optimizer state);
    otherwise it stays in host memory, pinned, so each merge copies it at full bus speed.
    ``where`` says which, per donor."""

    def __init__(self, device: str = "cpu", headroom: float = 2.0) -> None:
        self.device = device
        self.headroom = headroom
        self._loaders: dict[Any, _ResidentLoader] = {}
        self.where: dict[str, str] = {}  # donor path -> "cuda:0" | "cpu (pinned)" | "cpu"

    def __len__(self) -> int:
        return len(self._loaders)

    def loader(self, ref: Any) -> _ResidentLoader:
        if ref not in self._loaders:
            disk = ref.lazy_loader(lazy_unpickle=False)
            tensors = {name: disk.get_tensor(name) for name in disk.index.tensor_paths}
            disk.flush()
            tensors, self.where[str(ref.model.path)] = self._place(tensors)
            self._loaders[ref] = _ResidentLoader(disk.index, tensors)
        return self._loaders[ref]

    def _place(self, tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
        if not self.device.startswith("cuda"):
            return tensors, "cpu"
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        free, _ = torch.cuda.mem_get_info(torch.device(self.device))
        if free >= size * (1 + self.headroom):
            return {k: t.to(self.device) for k, t in tensors.items()}, self.device
        return {k: t.pin_memory() for k, t in tensors.items()}, "cpu (pinned)"

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
    # Results stay where the math ran: the merged model is built on that device next.
    executor = Executor(
        targets=list(weights_of),
        math_device=torch.device(options.device),
        storage_device=torch.device(options.device),
    )
    tensors: dict[str, torch.Tensor] = {}
    for task, value in executor.run(quiet=True):
        if value is None:  # an optional weight absent from every input
            continue
        for weight in weights_of[task]:
            out_dtype = weight.force_dtype or config.out_dtype
            tensors[weight.name] = value.to(dtype_from_name(out_dtype)) if out_dtype else value
    return tensors, out_config


_SAID_DISK: set[str] = set()


def merge_to_disk(merge_config: Any, out_dir: Path, *, seed: int = 0, device: str | None = None) -> Path:
    """mergekit's own streaming merge (``run_merge``): for slices with tokenizer surgery or models too big for RAM."""
    from mergekit.merge import run_merge

    from harness.evaluate.transformers_compat import torch_dtype_deprecation_quiet

    if device and device != "cpu" and device not in _SAID_DISK:
        _SAID_DISK.add(device)  # once per process
        LOG.warning(
            "mergekit's disk route: the merge computes on %s but passes every tensor through host "
            "memory and the disk (the in-memory route stays on the device)",
            device,
        )
    with torch_dtype_deprecation_quiet():
        run_merge(copy.deepcopy(merge_config), str(out_dir), options=merge_options(seed, device))
    return out_dir


def model_from_tensors(
    tensors: dict[str, torch.Tensor], out_config: Any, *, device: str = "cpu", dtype: Any = None
) -> Any:
    """Instantiate the merged model on ``device``; never alias donor storage (training would
    mutate donors). ``dtype``: the run's (None: the output config's, which a recipe's
    ``dtype`` / ``out_dtype`` set).

    The skeleton is built on the device, without random weights: every parameter is copied
    from ``tensors`` below, and one that is not (nor tied to one that is) is an error, so no
    uninitialised memory can reach a model."""
    from transformers import AutoModelForCausalLM

    from harness.evaluate.transformers_compat import weights_left_uninitialised

    dtype = dtype or _config_dtype(out_config)
    with weights_left_uninitialised(), torch.device(device):
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
