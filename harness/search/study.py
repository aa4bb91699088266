"""Optuna plumbing: storages and samplers from names in the space file / CLI."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.search.distributions import iter_distributions
from harness.search.space import SearchSpace


def open_storage(url: str | None, default_path: Path) -> Any:
    """An Optuna storage from a URL; default a journal file (safe for several processes on one machine).

    ``*.journal`` or ``journal:///path`` -> JournalStorage(JournalFileBackend), anything
    else (``sqlite:///...``, ``postgresql://...``) -> RDBStorage.
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    target = url or str(default_path)
    try:
        if target.startswith("journal://") or target.endswith(".journal") or "://" not in target:
            path = Path(target.removeprefix("journal://"))
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        return optuna.storages.RDBStorage(target)
    except Exception as err:  # noqa: BLE001  (any driver error means: cannot open)
        raise HarnessError(
            f"cannot open Optuna storage {target!r}: {str(err).splitlines()[0][:200]}",
            "pass a reachable --storage URL or a writable *.journal path",
        ) from None


def make_sampler(space: SearchSpace) -> Any:
    import optuna

    spec = space.sampler
    options = dict(spec.options)
    if spec.name == "tpe":
        # multivariate + group: TPE models the per-method parameter groups jointly.
        options.setdefault("multivariate", True)
        options.setdefault("group", True)
        with warnings.catch_warnings():  # `group` is flagged experimental; it is what conditional spaces need
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=spec.seed, **options)
    if spec.name == "cmaes":
        # CMA-ES handles the continuous parameters; the method choice falls back to random.
        options.setdefault("warn_independent_sampling", False)
        return optuna.samplers.CmaEsSampler(seed=spec.seed, **options)
    if spec.name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=spec.seed, **options)
    if spec.name == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    return _AskTellGridSampler(grid_space(space), seed=spec.seed)


def _grid_sampler_base() -> type:
    import optuna

    return optuna.samplers.GridSampler


class _AskTellGridSampler(_grid_sampler_base()):  # type: ignore[misc]
    """GridSampler calls ``study.stop()`` when the grid is done, which only works inside
    ``study.optimize``; the search loop (ask/tell) checks ``is_exhausted`` itself."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


def grid_space(space: SearchSpace) -> dict[str, list[Any]]:
    """Grid search needs every distribution to be a finite set: choices, or ranges with a step."""
    grid: dict[str, list[Any]] = {"method": list(space.methods)}
    for method in space.methods:
        for path, dist in iter_distributions(space.template(method)):
            name = f"{method}.{path}"
            if "choice" in dist:
                grid[name] = list(dist["choice"])
            elif "step" in dist and "gradient" not in dist:
                low, high = dist.get("float") or dist.get("int")
                step = dist["step"]
                count = int(round((high - low) / step)) + 1
                grid[name] = [low + i * step for i in range(count)]
            else:
                raise HarnessError(
                    f"grid sampler: {name} has no finite set of values",
                    "give it a step or a choice list, or use another sampler",
                )
    return grid
