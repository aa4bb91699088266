"""What an alignment method is to the harness: a small ABC, one subclass per TRL trainer.

The alignment stage (:mod:`harness.align.trainer`) owns everything every method shares: the
sDPO schedule, data, adapters (LoRA / IA3), the optimiser settings, guards and records. A
method adds only what is its own, the way a PEFT tuner or a TRL ``*_config.py`` /
``*_trainer.py`` pair does:

* ``options``: a pydantic model of its own recipe fields, TRL's names, with their legal ranges
  as field constraints (search spaces read the ranges from them, so a sampled ``beta`` is
  checked before any weights load);
* ``needs_reference``: whether TRL trains against a reference model (sDPO steps need one);
* ``trl_classes``: TRL's config and trainer classes (imported when training, never for
  validation), and ``trl_module``, where that trainer would re-load a reference from disk;
* ``train_rows``: the preference pairs in the form its trainer reads;
* ``metrics``: the TRL per-step metrics its records keep.

A new method is one module in this package and one line in its ``METHODS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import BaseModel


class AlignMethod(ABC):
    name: ClassVar[str]
    summary: ClassVar[str]  # one line, for `harness` help and docs
    options: ClassVar[type[BaseModel]]
    needs_reference: ClassVar[bool]
    paired_data: ClassVar[bool] = True  # reads prompt/chosen/rejected pairs
    trl_module: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]

    @abstractmethod
    def trl_classes(self) -> tuple[type, type]:
        """(TRL config class, TRL trainer class), imported now."""

    def trl_kwargs(self, options: BaseModel) -> dict[str, Any]:
        """The TRL config fields the method's options set (same names by default)."""
        return options.model_dump()

    def train_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The pairs as its trainer reads them (pairs, by default)."""
        return rows

    def check(self, config: Any) -> None:  # noqa: B027  (optional hook: most methods need none)
        """Cross-field rules of this method (ValueError), after every field is valid."""
