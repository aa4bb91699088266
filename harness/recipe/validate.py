"""Turn recipe YAML into a checked, resolved mergekit configuration.

Every check here is cheap (YAML, pydantic, model *configs*): a bad recipe fails
before any weights are loaded, with one line that names the problem and the fix.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from harness.errors import HarnessError, first_error
from harness.recipe.schema import Recipe

# Range of each merge parameter mergekit accepts as a number. mergekit itself only
# checks types, so a typo like ``t: 1.5`` would silently extrapolate.
PARAMETER_RANGES: dict[str, tuple[float, float]] = {
    "t": (0.0, 1.0),
    "density": (0.0, 1.0),
    "gamma": (0.0, 1.0),
    "epsilon": (0.0, 1.0),
    "select_topk": (0.0, 1.0),
    "lambda": (0.0, 100.0),
    "weight": (-100.0, 100.0),
}

# Config attributes that must agree for two models' tensors to be merged elementwise.
SHAPE_ATTRIBUTES = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "head_dim",
)


@dataclass
class ResolvedRecipe:
    """A recipe whose model references point at loadable paths or hub ids."""

    recipe: Recipe
    merge_config: Any  # mergekit.config.MergeConfiguration (imported lazily: it is slow)
    model_paths: dict[str, str]  # reference as written -> resolved path / hub id

    @property
    def uses_slices(self) -> bool:
        return bool(self.merge_config.slices or self.merge_config.modules)


def load_recipe(source: str | Path) -> Recipe:
    """Parse a recipe file (or YAML text) into a :class:`Recipe`."""
    text, where = _read_source(source)
    return recipe_from_dict(parse_yaml(text, where), where)


def parse_yaml(text: str, where: str) -> Any:
    """YAML text -> data; a syntax error is one line naming the file and the line."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise HarnessError(f"{where}: malformed YAML{at}", "fix the YAML syntax") from None


def recipe_from_dict(data: Any, where: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise HarnessError(f"{where}: a recipe must be a YAML mapping", "see search/examples/")
    if "merge_method" in data:  # a bare mergekit configuration, as pasted from a model card
        data = {"merge": data}
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise HarnessError(f"{where}: {first_error(err)}", "see search/examples/ for the schema") from None


def resolve_recipe(recipe: Recipe, where: str = "recipe") -> ResolvedRecipe:
    """Check a recipe completely and resolve its model references (no weights loaded)."""
    from mergekit import merge_methods
    from mergekit.config import MergeConfiguration

    from harness.assets import resolve_model

    merge = copy.deepcopy(recipe.merge)
    method_name = merge.get("merge_method")
    known = sorted(m.spec.name for m in merge_methods.registered_methods())
    if method_name not in known:
        raise HarnessError(
            f"{where}: unknown merge method {method_name!r}", f"use one of: {', '.join(known)}"
        )
    for location, name, value in _parameter_values(merge):
        _check_range(where, location, name, value)

    model_paths: dict[str, str] = {}
    for ref in _model_references(merge):
        if ref not in model_paths:
            model_paths[ref] = resolve_model(ref)
    _replace_model_references(merge, model_paths)

    try:
        config = MergeConfiguration.model_validate(merge)
    except ValidationError as err:
        raise HarnessError(
            f"{where}: invalid mergekit configuration: {first_error(err)}",
            "see mergekit's documentation",
        ) from None
    except (RuntimeError, ValueError) as err:  # mergekit's own validators (e.g. `slices: []`)
        raise HarnessError(
            f"{where}: invalid mergekit configuration: {' '.join(str(err).split())[:200]}",
            "see mergekit's documentation",
        ) from None

    configs = {ref: _load_model_config(ref, path, where) for ref, path in model_paths.items()}
    _check_shapes(where, config, configs, model_paths)

    method = merge_methods.get(method_name)
    for label, sources, base in _output_groups(config):
        try:
            method.validate_inputs(sources, base, group_name=label)
        except (ValueError, RuntimeError, TypeError) as err:
            raise HarnessError(
                f"{where}: {method_name}: {err}", f"check the models listed for {method_name}"
            ) from None
    if recipe.align is not None:
        # Cheap pre-work checks: every source loads, TRL columns present, T <= number of pairs.
        from harness.align.data import check_align

        # The tokenizer the build uses (mergekit's rule: the base model's, else the first
        # model's); a chat_template in the merge config replaces its template.
        source = config.base_model or config.referenced_models()[0]
        tokenizer_path = None if config.chat_template else str(source.model.path)
        check_align(recipe.align, where, tokenizer_path=tokenizer_path)

    return ResolvedRecipe(recipe=recipe, merge_config=config, model_paths=model_paths)


# --- helpers -----------------------------------------------------------------


def _read_source(source: str | Path) -> tuple[str, str]:
    path = Path(source)
    if isinstance(source, Path) or ("\n" not in str(source) and len(str(source)) < 4096):
        if not path.exists():
            raise HarnessError(f"recipe file not found: {path}", "check the path")
        if path.is_dir():
            raise HarnessError(f"recipe path is a directory: {path}", "pass a YAML file")
        return path.read_text(encoding="utf-8"), str(path)
    return str(source), "recipe"


def _model_references(merge: dict[str, Any]) -> Iterator[str]:
    """Every model a merge names: the ones whose weights it reads, and its tokenizer source."""
    yield from weight_references(merge)
    tok = merge.get("tokenizer_source")
    if isinstance(tok, str) and tok not in ("union", "base"):
        yield tok


def weight_references(merge: dict[str, Any]) -> Iterator[str]:
    """The models whose weights a merge config reads (base model, models, slice sources, in
    modules too): what the build keeps resident. Works on a search space's templates, whose
    parameters may still be distributions."""
    if isinstance(merge.get("base_model"), str):
        yield merge["base_model"]
    for entry in merge.get("models") or []:
        if isinstance(entry, dict) and isinstance(entry.get("model"), str):
            yield entry["model"]
    for out_slice in _all_slices(merge):
        if isinstance(out_slice.get("base_model"), str):
            yield out_slice["base_model"]
        for src in out_slice.get("sources") or []:
            if isinstance(src, dict) and isinstance(src.get("model"), str):
                yield src["model"]


def _all_slices(merge: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from (s for s in merge.get("slices") or [] if isinstance(s, dict))
    for module in (merge.get("modules") or {}).values():
        if isinstance(module, dict):
            yield from (s for s in module.get("slices") or [] if isinstance(s, dict))


def _replace_model_references(merge: dict[str, Any], paths: dict[str, str]) -> None:
    def swap(holder: dict[str, Any], key: str) -> None:
        if isinstance(holder.get(key), str) and holder[key] in paths:
            holder[key] = paths[holder[key]]

    swap(merge, "base_model")
    swap(merge, "tokenizer_source")
    for entry in merge.get("models") or []:
        swap(entry, "model")
    for out_slice in _all_slices(merge):
        swap(out_slice, "base_model")
        for src in out_slice.get("sources") or []:
            swap(src, "model")


def _parameter_values(merge: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """Every (location, parameter name, value) in the config, wherever parameters may sit."""
    holders: list[tuple[str, Any]] = [("parameters", merge.get("parameters"))]
    for i, entry in enumerate(merge.get("models") or []):
        if isinstance(entry, dict):
            holders.append((f"models[{i}].parameters", entry.get("parameters")))
    for i, out_slice in enumerate(_all_slices(merge)):
        holders.append((f"slices[{i}].parameters", out_slice.get("parameters")))
        for j, src in enumerate(out_slice.get("sources") or []):
            if isinstance(src, dict):
                holders.append((f"slices[{i}].sources[{j}].parameters", src.get("parameters")))
    for location, params in holders:
        if isinstance(params, dict):
            for name, setting in params.items():
                yield location, name, setting


def _scalars(setting: Any) -> Iterator[Any]:
    if isinstance(setting, list):
        for item in setting:
            yield from _scalars(item)
    elif isinstance(setting, dict):  # a conditional parameter: {filter: ..., value: ...}
        yield from _scalars(setting.get("value"))
    else:
        yield setting


def _check_range(where: str, location: str, name: str, setting: Any) -> None:
    bounds = PARAMETER_RANGES.get(name)
    for value in _scalars(setting):
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value):
            raise HarnessError(
                f"{where}: {location}.{name} = {value} is not a finite number", "use a finite value"
            )
        if bounds and not bounds[0] <= value <= bounds[1]:
            raise HarnessError(
                f"{where}: {location}.{name} = {value} is out of range [{bounds[0]}, {bounds[1]}]",
                f"choose {name} within that range",
            )


def _load_model_config(ref: str, path: str, where: str) -> Any:
    from harness.assets.checkpoint import check_weights, load_model_config

    config = load_model_config(ref, path, f"{where}: ")
    check_weights(ref, path, f"{where}: ")
    return config


def _check_shapes(where: str, config: Any, configs: dict[str, Any], paths: dict[str, str]) -> None:
    refs = [
        r
        for r in configs
        if r != (config.tokenizer_source if isinstance(config.tokenizer_source, str) else None)
    ]
    first = refs[0]

    def describe(cfg: Any, attr: str) -> Any:
        return getattr(cfg, attr, None)

    for ref in refs[1:]:
        for attr in SHAPE_ATTRIBUTES:
            a, b = describe(configs[first], attr), describe(configs[ref], attr)
            if a != b:
                raise HarnessError(
                    f"{where}: models {first!r} and {ref!r} cannot be merged: {attr} {a} != {b}",
                    "merge models of the same architecture and size",
                )
    by_path = {paths[r]: configs[r] for r in refs}
    if config.models:
        layers = {r: getattr(configs[r], "num_hidden_layers", None) for r in refs}
        if len(set(layers.values())) > 1:
            raise HarnessError(
                f"{where}: models have different layer counts {layers}",
                "use slices (passthrough) to combine models of different depth",
            )
    for i, out_slice in enumerate(config.slices or []):
        lengths = set()
        for src in out_slice.sources:
            start, end = src.layer_range
            n = getattr(by_path.get(str(src.model.model.path)), "num_hidden_layers", None)
            if start < 0 or end <= start or (n is not None and end > n):
                raise HarnessError(
                    f"{where}: slices[{i}] layer_range [{start}, {end}] is invalid for a {n}-layer model",
                    f"use 0 <= start < end <= {n}",
                )
            lengths.add(end - start)
        if len(lengths) > 1:
            raise HarnessError(
                f"{where}: slices[{i}] sources have different lengths {sorted(lengths)}",
                "give every source in a slice the same number of layers",
            )


def _output_groups(config: Any) -> Iterator[tuple[str, list[Any], Any]]:
    """(label, input models, base) for each group the merge method will see."""
    if config.models:
        models = [m.model for m in config.models]
        if config.base_model and config.base_model not in models:
            models.append(config.base_model)
        yield "models", models, config.base_model
    for i, out_slice in enumerate(config.slices or []):
        yield (
            f"slices[{i}]",
            [s.model for s in out_slice.sources],
            out_slice.base_model or config.base_model,
        )
