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


class LowestValues:
    """A stand-in trial that always takes the low end: used to check a template builds."""

    params: dict[str, Any]

    def __init__(self) -> None:
        self.params = {}

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return choices[0]

    def suggest_int(self, name: str, low: int, high: int, **_: Any) -> int:
        return low

    def suggest_float(self, name: str, low: float, high: float, **_: Any) -> float:
        return low


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
