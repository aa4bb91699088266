"""Search distributions written inside mergekit templates, sampled define-by-run.

A search-space template is a plain mergekit configuration in which any value may be
a distribution mapping instead of a constant:

- ``{float: [low, high]}`` (optional ``log: true``, ``step: s``)
- ``{int: [low, high]}`` (optional ``step: s``)
- ``{choice: [a, b, ...]}``
- ``{gradient: [low, high], points: n}``: n anchor values, i.e. a mergekit gradient
  (``t: [0, 0.5, 0.3, 0.7, 1]`` in the Sakura-SOLAR style) whose every anchor is searched.

The Optuna parameter name is the method name plus the value's path in the template
(``slerp.parameters.t[0].value``), so parameters are conditional on the method by
construction: a trial that picks TIES never samples slerp's ``t``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from harness.errors import HarnessError

KINDS = ("float", "int", "choice", "gradient")


def is_distribution(value: Any) -> bool:
    return isinstance(value, dict) and len(set(value) & set(KINDS)) == 1


def iter_distributions(template: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (path, distribution) in a template, in a stable order."""
    if is_distribution(template):
        yield path, template
    elif isinstance(template, dict):
        for key, value in template.items():
            yield from iter_distributions(value, f"{path}.{key}" if path else str(key))
    elif isinstance(template, list):
        for i, value in enumerate(template):
            yield from iter_distributions(value, f"{path}[{i}]")


OPTIONS = ("log", "step", "points")
# Names other libraries use for distributions: a mapping keyed by one of them is a typo of ours.
FOREIGN_NAMES = (
    "uniform",
    "loguniform",
    "log_uniform",
    "int_uniform",
    "categorical",
    "discrete_uniform",
    "randint",
    "range",
    "normal",
    "suggest_float",
    "suggest_int",
)


def check_mappings(template: Any, where: str, path: str = "") -> None:
    """Catch a mapping that was meant to be a distribution but is not one, with a message that
    says so (mergekit's or pydantic's own error would be about an unrelated field)."""
    if isinstance(template, dict):
        label = f"{where}.{path}" if path else where
        kinds = [k for k in template if k in KINDS]
        if len(kinds) > 1:
            raise HarnessError(
                f"{label}: one mapping has two distribution kinds ({', '.join(kinds)})",
                "write one of float, int, choice or gradient per value",
            )
        if not kinds:
            foreign = next((k for k in template if str(k) in FOREIGN_NAMES), None)
            in_parameters = ".parameters." in f".{path}" and not {"value", "filter"} & set(template)
            if foreign is not None or (set(template) & set(OPTIONS)) or (in_parameters and _leaf(template)):
                name = foreign or next(iter(template), "")
                raise HarnessError(
                    f"{label}: unknown distribution {name!r}",
                    "use float, int, choice or gradient (e.g. {float: [0, 1]})",
                )
            for key, value in template.items():
                check_mappings(value, where, f"{path}.{key}" if path else str(key))
    elif isinstance(template, list):
        for i, value in enumerate(template):
            check_mappings(value, where, f"{path}[{i}]")


def _leaf(mapping: dict[str, Any]) -> bool:
    """A mapping holding no further mappings: a distribution-like value, not a config block."""
    return not any(isinstance(v, dict) for v in mapping.values())


def check_distribution(where: str, dist: dict[str, Any], bounds: tuple[float, float] | None) -> None:
    """Empty or inverted ranges, ranges outside the parameter's legal bounds, bad options."""
    kind = next(k for k in KINDS if k in dist)
    spec = dist[kind]
    if kind == "choice":
        if not isinstance(spec, list) or not spec:
            raise HarnessError(f"{where}: choice needs a non-empty list", "write choice: [a, b, ...]")
        return
    if not (isinstance(spec, list) and len(spec) == 2 and all(_is_number(v) for v in spec)):
        raise HarnessError(f"{where}: {kind} needs [low, high]", f"write {kind}: [low, high]")
    low, high = spec
    if not low < high:
        raise HarnessError(f"{where}: empty range [{low}, {high}]", "make low < high")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise HarnessError(f"{where}: int range needs whole numbers", "use integers")
    step = dist.get("step")
    if step is not None:
        if not _is_number(step) or step <= 0:
            raise HarnessError(f"{where}: step must be a number > 0, got {step!r}", "use a positive step")
        if step > high - low:
            raise HarnessError(
                f"{where}: step {step} is larger than the range [{low}, {high}]", "use a smaller step"
            )
        if kind == "int" and not float(step).is_integer():
            raise HarnessError(f"{where}: an int range needs a whole step, got {step}", "use an integer step")
        if dist.get("log"):
            raise HarnessError(f"{where}: step and log cannot be combined", "drop one of them")
    if dist.get("log") and low <= 0:
        raise HarnessError(f"{where}: log scale needs low > 0", "raise low or drop log")
    if kind == "gradient" and not (isinstance(dist.get("points"), int) and dist["points"] >= 2):
        raise HarnessError(f"{where}: gradient needs points >= 2", "add points: 3 (or more)")
    if bounds and (low < bounds[0] or high > bounds[1]):
        raise HarnessError(
            f"{where}: range [{low}, {high}] leaves the legal [{bounds[0]}, {bounds[1]}]",
            "narrow the range",
        )


def sample(trial: Any, name: str, dist: dict[str, Any]) -> Any:
    """Draw one value (a list for gradients) through Optuna's define-by-run API."""
    if "choice" in dist:
        return trial.suggest_categorical(name, dist["choice"])
    if "int" in dist:
        low, high = dist["int"]
        return trial.suggest_int(
            name, int(low), int(high), step=int(dist.get("step", 1)), log=bool(dist.get("log"))
        )
    if "float" in dist:
        low, high = dist["float"]
        return trial.suggest_float(
            name, float(low), float(high), step=dist.get("step"), log=bool(dist.get("log"))
        )
    low, high = dist["gradient"]
    return [
        trial.suggest_float(f"{name}[{i}]", float(low), float(high), step=dist.get("step"))
        for i in range(dist["points"])
    ]


def materialize(template: Any, trial: Any, prefix: str, path: str = "") -> Any:
    """A copy of the template with every distribution replaced by a sampled value."""
    if is_distribution(template):
        return sample(trial, f"{prefix}.{path}", template)
    if isinstance(template, dict):
        return {
            k: materialize(v, trial, prefix, f"{path}.{k}" if path else str(k)) for k, v in template.items()
        }
    if isinstance(template, list):
        return [materialize(v, trial, prefix, f"{path}[{i}]") for i, v in enumerate(template)]
    return template


class EndValues:
    """A stand-in trial that always takes one end of every range (and the first or last
    choice): used to check that a template builds at both ends, e.g. that the top of a
    ``layer_range`` still fits the model, before the first real trial."""

    params: dict[str, Any]

    def __init__(self, end: str = "low") -> None:
        self.params = {}
        self.high = end == "high"

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return choices[-1] if self.high else choices[0]

    def suggest_int(self, name: str, low: int, high: int, **_: Any) -> int:
        return high if self.high else low

    def suggest_float(self, name: str, low: float, high: float, **_: Any) -> float:
        return high if self.high else low


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
