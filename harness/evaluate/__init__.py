"""Evaluate: score a loaded model with lm-eval on suites (H4, MMLU, KMMLU, any lm-eval task).

Public API:

* :func:`evaluate_model` — wrap the loaded model once in lm-eval's ``HFLM`` and run
  ``simple_evaluate`` per few-shot setting; returns an :class:`EvalResult`.
* :func:`parse_suites` / :data:`SUITES` / :func:`summary_keys` — suite names as data.
* :func:`plan_evaluation` — resolve data and write the generated lm-eval YAML folder
  without a model (also gives the equivalent ``lm_eval`` CLI arguments).
* :data:`CPU_QUICK` / :data:`PROFILES` — quick-run settings for 2-core CPUs.

Data come, per lm-eval task, from the user data dir, then the demo datasets, then the hub
(see :mod:`harness.evaluate.datasources` for the layouts); a task with no data anywhere is
reported with value None and a ``data_source`` starting "no data:".
"""

from harness.evaluate.results import EvalResult, Score
from harness.evaluate.runner import evaluate_model, plan_evaluation
from harness.evaluate.suites import (
    CPU_QUICK,
    PROFILES,
    SUITES,
    Part,
    Suite,
    Total,
    parse_suites,
    summary_keys,
)
from harness.evaluate.tasks import EvalPlan

__all__ = [
    "CPU_QUICK",
    "PROFILES",
    "SUITES",
    "EvalPlan",
    "EvalResult",
    "Part",
    "Score",
    "Suite",
    "Total",
    "evaluate_model",
    "parse_suites",
    "plan_evaluation",
    "summary_keys",
]
