"""Search spaces are YAML data (``search/*.yaml``), validated here before any work.

Example (see ``search/demo.yaml`` for a full one)::

    name: demo
    models: {base: demo:smollm2-135m-instruct, ...}    # aliases used as $base
    methods:                                             # candidate mergekit templates
      slerp:
        merge_method: slerp
        base_model: $base
        models: [{model: $base}, {model: $other}]
        parameters: {t: {gradient: [0, 1], points: 3}}
    align:                                               # optional: alignment candidates
      none: null                                         # the merge alone
      dpo:                                               # an AlignConfig template
        method: dpo
        data: [demo:piqa]
        beta: {float: [0.05, 0.5], log: true}
        lora: {r: {choice: [4, 8]}, alpha: 16}
    suites: [arc_easy, mmlu_high_school_biology]
    limit: 40
    objective: {maximize: {arc_easy: 1, mmlu: 1}}     # or  pareto: [kmmlu, mmlu]
    sampler: {name: tpe, seed: 0}
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.align.config import parameter_ranges
from harness.errors import HarnessError, first_error
from harness.evaluate.questions import SplitRule
from harness.evaluate.suites import Part, Suite, SuiteRef, Total
from harness.recipe import PARAMETER_RANGES, Recipe, recipe_from_dict, resolve_recipe
from harness.recipe.validate import parse_yaml
from harness.search.distributions import (
    EndValues,
    check_distribution,
    check_mappings,
    iter_distributions,
    materialize,
)

SAMPLERS = ("tpe", "cmaes", "nsga2", "random", "grid")


class ObjectiveSpec(BaseModel):
    """What the search maximises: a weighted mean of summary scores, or a Pareto front."""

    model_config = ConfigDict(extra="forbid")

    maximize: dict[str, float] | None = Field(
        default=None, description="Summary key -> weight; the objective is the weighted mean."
    )
    pareto: list[str] | None = Field(
        default=None, description="Summary keys maximised jointly (multi-objective)."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> ObjectiveSpec:
        if bool(self.maximize) == bool(self.pareto):
            raise ValueError("give exactly one of maximize: {key: weight} or pareto: [key, key]")
        if self.maximize and any(w <= 0 for w in self.maximize.values()):
            raise ValueError("objective weights must be > 0")
        return self

    @property
    def keys(self) -> list[str]:
        return list(self.maximize or {}) + list(self.pareto or [])

    @property
    def directions(self) -> list[str]:
        return ["maximize"] * (len(self.pareto) if self.pareto else 1)

    def values(self, summary: dict[str, float | None]) -> list[float] | None:
        """Objective value(s) from an evaluation summary; None when a key has no data."""
        known = {k: v for k in self.keys if (v := summary.get(k)) is not None}
        if len(known) < len(self.keys):
            return None
        if self.pareto:
            return [float(known[k]) for k in self.pareto]
        weights = self.maximize or {}
        return [sum(known[k] * w for k, w in weights.items()) / sum(weights.values())]

    @property
    def weights(self) -> dict[str, float] | None:
        """Summary key -> weight in the objective, summing to 1 (None for a Pareto front)."""
        if not self.maximize:
            return None
        total = sum(self.maximize.values())
        return {k: w / total for k, w in self.maximize.items()}

    def stderr(self, errors: dict[str, float | None]) -> float | None:
        """Stderr of the weighted-mean objective from its keys' stderrs (independent
        benchmarks assumed); None for a Pareto objective or when a key has none."""
        known = {k: e for k in self.keys if (e := errors.get(k)) is not None}
        if self.pareto or len(known) < len(self.keys):
            return None
        weights = self.maximize or {}
        return math.sqrt(sum((w * known[k]) ** 2 for k, w in weights.items())) / sum(weights.values())


class PartSpec(BaseModel):
    """One lm-eval task of a suite defined in the space file."""

    model_config = ConfigDict(extra="forbid")

    task: str
    num_fewshot: int | None = None
    metric: str | None = None
    key: str | None = Field(default=None, description="Summary key (default: the task name).")
    average: Literal["lm_eval", "macro"] = "lm_eval"
    search_split: str | None = Field(
        default=None,
        description=(
            "Where a study's search questions come from. null: the dataset's official search split "
            "where the data has it (MMLU validation, KMMLU train, ARC validation), else a seeded hash "
            "of the scored split; hash: always the hash; a split name: that split."
        ),
    )


class SuiteSpec(BaseModel):
    """A suite defined as data in the space file (e.g. a cheap proxy for a CPU search)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    parts: list[PartSpec]
    total: str | None = Field(default=None, description="Summary key for the mean of the parts.")

    def to_suite(self) -> Suite:
        parts = tuple(
            Part(p.task, p.num_fewshot, p.metric, {p.key or p.task: p.average}, p.search_split)
            for p in self.parts
        )
        total = Total(self.total, tuple(p.key or p.task for p in self.parts)) if self.total else None
        return Suite(self.name, self.description or f"suite {self.name} from a search space", parts, total)


class SelectionSpec(BaseModel):
    """How trials are selected: which questions the objective sees, rungs, pruning, confirmation.

    Each task's documents are divided into a search part (the objective's) and a held-out part
    (the leaderboard's): an official search split where the dataset has one, else a seeded hash
    of the scored split (``heldout_fraction``); see :mod:`harness.evaluate.questions`.
    """

    model_config = ConfigDict(extra="forbid")

    heldout_fraction: float = Field(
        default=0.5, ge=0.0, lt=1.0, description="Share of each task held out (0: no split, no confirmation)."
    )
    seed: int = Field(default=0, description="Seed of the division and of the question order.")
    heldout_limit: int | None = Field(
        default=None, ge=1, description="Held-out questions per task of a confirmation (null: all)."
    )
    rungs: list[int] = Field(
        default_factory=list,
        description="Search questions per task after which the pruner may stop a trial (below limit).",
    )
    pruner: Literal["wilcoxon", "none"] = "wilcoxon"
    p_threshold: float = Field(default=0.1, gt=0.0, lt=1.0, description="WilcoxonPruner's p_threshold.")
    confirm_top: int = Field(
        default=5,
        ge=0,
        description="Trials confirmed on the held-out part: the study's top K by the search objective.",
    )
    confirm_at: Literal["end", "finish"] = Field(
        default="end",
        description=(
            "end: the top K at the end of each run, from weights kept on disk meanwhile "
            "(K confirmations); finish: each trial in the top K so far when it finishes, while "
            "it is loaded (no disk, but about K(1 + ln(N/K)) confirmations in N trials)."
        ),
    )

    @model_validator(mode="after")
    def _increasing(self) -> SelectionSpec:
        if any(r <= 0 for r in self.rungs) or sorted(set(self.rungs)) != self.rungs:
            raise ValueError(f"rungs must be increasing positive question counts, got {self.rungs}")
        return self

    @property
    def split(self) -> SplitRule | None:
        return SplitRule(self.heldout_fraction, self.seed) if self.heldout_fraction > 0 else None


class SamplerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["tpe", "cmaes", "nsga2", "random", "grid"] = "tpe"
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict, description="Passed to the Optuna sampler.")


class SearchSpace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str | None = None
    models: dict[str, str] = Field(
        default_factory=dict, description="Alias -> model reference, used as $alias."
    )
    methods: dict[str, dict[str, Any]] = Field(description="Candidate name -> mergekit template.")
    align: dict[str, dict[str, Any] | None] | None = Field(
        default=None,
        description="Alignment candidates: name -> AlignConfig template (values may be distributions), "
        "or null for 'no alignment'. Each trial picks one, jointly with the merge method.",
    )
    references: list[str] = Field(
        default_factory=list,
        description="Models ($alias or reference) scored on the same suites before the first trial "
        "and recorded beside the trials, e.g. the base and the donors: is a merge better than its parts?",
    )
    suites: list[str | SuiteSpec]
    limit: int | None = Field(default=None, description="Questions per task (documented CPU budget).")
    batch_size: int = 8
    fast_scoring: bool = Field(
        default=True,
        description="Shared-prefix log-likelihood scoring (each context run once; same numbers as "
        "lm-eval's stock HFLM, which false selects).",
    )
    data_dir: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="The run's dtype rule (harness.placement): the merge's dtype unless a method "
        "sets one, and the reference models'. auto: bfloat16 on a GPU that supports it, else float32.",
    )
    objective: ObjectiveSpec
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    selection: SelectionSpec = Field(default_factory=SelectionSpec)

    @property
    def suite_names(self) -> list[str]:
        return [s if isinstance(s, str) else s.name for s in self.suites]

    @property
    def suite_refs(self) -> list[SuiteRef]:
        """What to score: built-in / lm-eval names, and this space's own suites as data."""
        return [s if isinstance(s, str) else s.to_suite() for s in self.suites]

    @property
    def reference_models(self) -> list[str]:
        """The references with $aliases replaced by model references."""
        return [_substitute(r, self.models) for r in self.references]

    def template(self, method: str) -> dict[str, Any]:
        """The method's template with $aliases replaced by model references."""
        return _substitute(self.methods[method], self.models)

    def recipe(
        self,
        method: str,
        trial: Any,
        align: str | None = None,
        where: str | None = None,
        dtype: str | None = None,
    ) -> Recipe:
        """Sample one concrete recipe (define-by-run) for the chosen method and alignment.

        Align parameters are named ``align.<candidate>.<path>``, so, like merge parameters,
        they exist only in trials that picked that candidate (no beta without alignment).
        ``dtype``: the concrete dtype the run's rule gives (``self.dtype`` resolved on its
        device), written into the recipe where the method sets none, so the recipe records it.
        """
        merge = materialize(self.template(method), trial, prefix=method)
        merge.setdefault("dtype", dtype or (self.dtype if self.dtype != "auto" else "float32"))
        data: dict[str, Any] = {"name": None, "merge": merge}
        template = (self.align or {}).get(align) if align else None
        if template is not None:
            data["align"] = materialize(template, trial, prefix=f"align.{align}")
        return recipe_from_dict(data, where=where or f"{self.name}.{method}" + (f"+{align}" if align else ""))


def load_space(path: str | Path) -> SearchSpace:
    """Parse and fully validate a search-space file (exit-2 errors, nothing written)."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"search space file not found: {path}", "pass --space with an existing YAML file")
    data = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: a search space must be a YAML mapping", "see search/demo.yaml")
    data.setdefault("name", path.stem)
    try:
        space = SearchSpace.model_validate(data)
    except ValidationError as err:
        raise HarnessError(f"{path}: {first_error(err)}", "see search/demo.yaml for the schema") from None
    validate_space(space, str(path))
    return space


def validate_space(space: SearchSpace, where: str) -> None:
    from harness.evaluate import summary_keys

    selection = space.selection
    if selection.rungs and space.limit is not None and selection.rungs[-1] >= space.limit:
        raise HarnessError(
            f"{where}: selection.rungs {selection.rungs} must stay below limit ({space.limit})",
            "the last rung is the limit itself: list only the earlier ones",
        )
    if selection.rungs and len(space.objective.directions) > 1:
        raise HarnessError(
            f"{where}: selection.rungs with a Pareto objective",
            "Optuna prunes single-objective studies only: remove rungs or use maximize:",
        )

    if not space.methods:
        raise HarnessError(f"{where}: methods is empty", "list at least one merge method template")
    if space.limit is not None and space.limit <= 0:
        raise HarnessError(f"{where}: limit must be >= 1", "raise limit or remove it")
    if space.align is not None and not space.align:
        raise HarnessError(f"{where}: align is empty", "list candidates (null = no alignment) or remove it")
    from harness.evaluate.suites import SUITES, check_task, known_name

    for i, suite in enumerate(space.suites):
        if isinstance(suite, SuiteSpec):
            if suite.name in SUITES or known_name(suite.name):
                raise HarnessError(
                    f"{where}: suites[{i}]: {suite.name!r} is already a built-in suite or lm-eval task",
                    "give the space's suite a name of its own (its keys name what it measures)",
                )
            for j, part in enumerate(suite.parts):
                check_task(part.task, f"{where}: suites[{i}].parts[{j}]")
    produced = summary_keys(space.suite_refs)
    suites = space.suite_names
    for key in space.objective.keys:
        if key not in produced:
            raise HarnessError(
                f"{where}: objective uses {key!r}, which the suites {suites} do not score",
                f"use one of {sorted(produced)} or add a suite that scores {key}",
            )
    from harness.assets import resolve_model

    for i, ref in enumerate(space.references):
        if ref.startswith("$") and ref[1:] not in space.models:
            raise HarnessError(
                f"{where}: references[{i}]: unknown model alias {ref}",
                f"define it under models: ({', '.join(space.models)})",
            )
        resolve_model(space.reference_models[i])  # a demo model not prepared, a missing path: now
    for method, template in space.methods.items():
        label = f"{where}: methods.{method}"
        for alias in _aliases(template):
            if alias not in space.models:
                raise HarnessError(
                    f"{label}: unknown model alias ${alias}",
                    f"define it under models: ({', '.join(space.models)})",
                )
        check_mappings(template, label)
        for path, dist in iter_distributions(template):
            check_distribution(f"{label}.{path}", dist, PARAMETER_RANGES.get(_parameter_name(path) or ""))
        # Both ends of every range must make a valid, resolvable recipe (method known, models
        # present, shapes compatible, layer ranges inside the model): catch it now, not in trial 37.
        for end in ("low", "high"):
            at = f"{label} ({end} end of the ranges)"
            resolve_recipe(space.recipe(method, EndValues(end), where=at), where=at)
    first_method = next(iter(space.methods))
    for name, candidate in (space.align or {}).items():
        if candidate is None:
            continue
        label = f"{where}: align.{name}"
        check_mappings(candidate, label)
        align_method = candidate.get("method")
        ranges = parameter_ranges(
            align_method if isinstance(align_method, str) else None
        )  # its own fields too
        for path, dist in iter_distributions(candidate):
            check_distribution(f"{label}.{path}", dist, ranges.get(path.split(".")[-1]))
        # Data sources load and have TRL's columns, T fits the data, ... (no weights loaded).
        for end in ("low", "high"):
            at = f"{label} ({end} end of the ranges)"
            resolve_recipe(space.recipe(first_method, EndValues(end), align=name, where=at), where=at)


def _substitute(value: Any, models: dict[str, str]) -> Any:
    if isinstance(value, str) and value.startswith("$") and value[1:] in models:
        return models[value[1:]]
    if isinstance(value, dict):
        return {k: _substitute(v, models) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, models) for v in value]
    return value


def _aliases(value: Any) -> list[str]:
    if isinstance(value, str) and value.startswith("$"):
        return [value[1:]]
    if isinstance(value, dict):
        return [a for v in value.values() for a in _aliases(v)]
    if isinstance(value, list):
        return [a for v in value for a in _aliases(v)]
    return []


def _parameter_name(path: str) -> str | None:
    match = re.search(r"parameters\.(\w+)", path)
    return match.group(1) if match else None
