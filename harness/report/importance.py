"""Parameter importances at report time, from the stored parameters alone.

The Optuna journal may be gone (or on another machine), so each study is rebuilt in
memory from ``trial_params`` + ``trials.objective``. Distributions are inferred from the
stored values (numbers -> FloatDistribution over their range, anything else ->
CategoricalDistribution). Parameters are conditional on the merge method (``slerp.*`` only
exists when ``method == slerp``), and Optuna's evaluators only use parameters present in
every trial they see, so importances are computed per study on the parameters all its
trials share, and again per method subset.
"""

from __future__ import annotations

import json
from typing import Any

MIN_TRIALS = 2


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _hashable(value: Any) -> Any:
    """Categorical choices must be None/bool/int/float/str: lists and dicts become JSON text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, sort_keys=True)


def infer_distribution(values: list[Any]) -> Any | None:
    """A distribution covering the stored values; None when the parameter never varies."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if all(is_number(v) for v in values):
        low, high = float(min(values)), float(max(values))
        return FloatDistribution(low, high) if low < high else None
    choices = list(dict.fromkeys(_hashable(v) for v in values))
    return CategoricalDistribution(choices) if len(choices) > 1 else None


def method_of(trial: dict[str, Any]) -> str | None:
    method = trial["params"].get("method")
    return method if isinstance(method, str) else trial.get("merge_method")


def importance_group(
    study: str, group: str, trials: list[dict[str, Any]], exclude: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Importances over ``trials`` (complete, with an objective) on their shared parameters."""
    result: dict[str, Any] = {
        "study": study,
        "group": group,
        "n_trials": len(trials),
        "importances": {},
        "note": None,
    }
    if len(trials) < MIN_TRIALS:
        result["note"] = f"not enough trials: {len(trials)} complete, at least {MIN_TRIALS} needed"
        return result
    shared = set.intersection(*(set(t["params"]) for t in trials)) - set(exclude)
    distributions = {}
    for name in sorted(shared):
        dist = infer_distribution([t["params"][name] for t in trials])
        if dist is not None:
            distributions[name] = dist
    if not distributions:
        result["note"] = "not enough trials: no shared parameter varies across them"
        return result

    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rebuilt = optuna.create_study(direction="maximize")
    for t in trials:
        params = {
            name: _hashable(t["params"][name])
            if isinstance(dist, CategoricalDistribution)
            else float(t["params"][name])
            for name, dist in distributions.items()
        }
        rebuilt.add_trial(
            optuna.trial.create_trial(params=params, distributions=distributions, value=t["objective"])
        )
    try:
        # A fixed seed: the same database always gives the same report.
        importances = get_param_importances(rebuilt, evaluator=FanovaImportanceEvaluator(seed=0))
    except (ValueError, RuntimeError) as err:
        result["note"] = f"importances unavailable: {err}"
        return result
    result["importances"] = {k: float(v) for k, v in importances.items()}
    return result


def param_importances(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One group per study (all its methods) plus one per method when it tried several."""
    studies = sorted({t["study"] for t in trials if t.get("study")})
    groups = []
    for study in studies:
        done = [
            t
            for t in trials
            if t.get("study") == study and t["status"] == "ok" and t["objective"] is not None and t["params"]
        ]
        groups.append(importance_group(study, "all methods", done))
        methods = sorted({m for t in done if (m := method_of(t))})
        if len(methods) > 1:
            for method in methods:
                subset = [t for t in done if method_of(t) == method]
                groups.append(importance_group(study, method, subset, exclude=("method",)))
    return groups
