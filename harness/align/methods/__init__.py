"""The registered alignment methods: one module each (see :mod:`.base`), one line here.

``sdpo`` is not a method but a schedule (T runs, each from M(t-1) as reference); the name
stays accepted as DPO on that schedule."""

from __future__ import annotations

from harness.align.methods.base import AlignMethod
from harness.align.methods.dpo import DPO
from harness.align.methods.kto import KTO
from harness.align.methods.orpo import ORPO

METHODS: dict[str, AlignMethod] = {m.name: m for m in (DPO(), KTO(), ORPO())}
STEPWISE_DPO = "sdpo"  # DPO on the sDPO schedule, as recipes have always written it


def method_names() -> list[str]:
    """What ``align.method`` accepts."""
    return [*METHODS, STEPWISE_DPO]


def get_method(name: str) -> AlignMethod:
    """The method a recipe's ``align.method`` names (KeyError when unknown)."""
    return METHODS["dpo" if name == STEPWISE_DPO else name]


__all__ = ["METHODS", "STEPWISE_DPO", "AlignMethod", "get_method", "method_names"]
