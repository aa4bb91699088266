"""Alignment stage: preference training (DPO, KTO, ORPO; stepwise as sDPO) after the merge.

* :mod:`harness.align.config`: :class:`AlignConfig`, the recipe's ``align`` part (pydantic,
  TRL's names, ranges checked at the door);
* :mod:`harness.align.methods`: the registered methods, one module each;
* :mod:`harness.align.onpolicy`: :func:`on_policy_pairs`, the seed recipe's on-policy
  ``rejected`` (the starting model's own answers, cached);
* :mod:`harness.align.demo_sets`: the seed recipe's ``demo:<set>`` pairs (with
  :mod:`harness.align.dedupe` and :mod:`harness.align.logps`);
* :mod:`harness.align.data`: TRL-format preference data (JSONL / parquet / hub / ``demo:<set>``),
  column checks, the seed recipe ``pairs_from_qa`` with near-duplicate removal;
* :mod:`harness.align.trainer`: :func:`align_model` / :func:`apply_alignment` (one TRL
  trainer per step; sDPO = a loop whose step t uses M(t-1) as reference);
* :mod:`harness.align.donors`: :func:`prepare_demo_donors`, DPO-made demo donors.

Only the config is imported eagerly: recipes validate without importing torch or TRL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.align.config import AlignConfig, IA3Spec, LoraSpec, PreferenceSource, parameter_ranges
from harness.errors import AlignmentError

if TYPE_CHECKING:
    from harness.align.data import check_align
    from harness.align.demo_sets import pairs_from_qa, prepare_demo_preference_sets
    from harness.align.donors import prepare_demo_donors
    from harness.align.onpolicy import on_policy_pairs
    from harness.align.trainer import AlignResult, align_model, apply_alignment

_LAZY = {
    "AlignResult": "harness.align.trainer",
    "align_model": "harness.align.trainer",
    "apply_alignment": "harness.align.trainer",
    "check_align": "harness.align.data",
    "pairs_from_qa": "harness.align.demo_sets",
    "prepare_demo_preference_sets": "harness.align.demo_sets",
    "prepare_demo_donors": "harness.align.donors",
    "on_policy_pairs": "harness.align.onpolicy",
}

__all__ = [
    "AlignConfig",
    "AlignResult",
    "AlignmentError",
    "IA3Spec",
    "LoraSpec",
    "PreferenceSource",
    "align_model",
    "apply_alignment",
    "check_align",
    "on_policy_pairs",
    "parameter_ranges",
    "pairs_from_qa",
    "prepare_demo_donors",
    "prepare_demo_preference_sets",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'harness.align' has no attribute {name!r}")
