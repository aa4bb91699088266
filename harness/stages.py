"""Where each stage of a run computed, in which dtype, for how long, at what peak GPU memory.

The stages mark themselves (``with stage("merge") as done: ...; done(model)``); nothing is
measured unless a :class:`StageLog` is listening (``harness doctor`` installs one with
:func:`listening`), so a search pays one ``None`` check per stage. The facts come from the
model a stage hands over (its first parameter's device and dtype), not from what the stage
was asked to do: a stage that ignored the run's device shows up here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StageRun:
    """One pass through a stage."""

    stage: str
    seconds: float
    device: str | None = None  # of the model the stage handed over (None: no model)
    dtype: str | None = None
    peak_gpu_bytes: int | None = None  # None: not on a GPU
    scoring_path: str | None = None  # scoring stages: "shared-prefix" or "stock: <why>"


@dataclass
class StageLog:
    """What a run's stages reported, in order."""

    runs: list[StageRun] = field(default_factory=list)

    def names(self) -> list[str]:
        return list(dict.fromkeys(r.stage for r in self.runs))

    def of(self, stage: str) -> list[StageRun]:
        return [r for r in self.runs if r.stage == stage]


_listener: StageLog | None = None

Done = Callable[..., None]


def _nothing(model: Any = None, scoring_path: str | None = None) -> None:
    return None


@contextmanager
def stage(name: str) -> Iterator[Done]:
    """Mark a stage; call the yielded function with the model it produced or used (and, for
    scoring, the path that computed it). Records nothing when no one listens."""
    log = _listener
    if log is None:
        yield _nothing
        return
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    facts: dict[str, Any] = {}

    def done(model: Any = None, scoring_path: str | None = None) -> None:
        if model is not None:
            first = next(model.parameters())
            facts["device"], facts["dtype"] = str(first.device), str(first.dtype).removeprefix("torch.")
        facts["scoring_path"] = scoring_path

    start = time.perf_counter()
    yield done
    if cuda:
        torch.cuda.synchronize()
    log.runs.append(
        StageRun(
            stage=name,
            seconds=time.perf_counter() - start,
            peak_gpu_bytes=torch.cuda.max_memory_allocated() if cuda else None,
            **facts,
        )
    )


@contextmanager
def listening() -> Iterator[StageLog]:
    """Record every stage run inside the context."""
    global _listener
    previous, _listener = _listener, StageLog()
    try:
        yield _listener
    finally:
        _listener = previous
