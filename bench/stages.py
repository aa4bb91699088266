"""Run the harness CLI with a line on stderr at the start and end of each stage of a trial
(merge, model from the merged tensors, each DPO step, each scoring call, each recording), so
that ``bench.memory`` can put the RSS it samples down to a stage. Bench-only instrumentation:
the wrapped functions are the harness's own, called as usual.

    python -m bench.stages search --space search/demo.yaml --budget 2 ...
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any


def _marked(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        print(f"stage: {name}", file=sys.stderr, flush=True)
        try:
            return fn(*args, **kwargs)
        finally:
            print(f"stage: after {name}", file=sys.stderr, flush=True)

    return wrapper


def instrument() -> None:
    import harness.align.trainer as trainer
    import harness.merge.builder as builder
    from harness.pipeline import Scorer

    builder.merge_in_memory = _marked("merge (mergekit, in memory)", builder.merge_in_memory)
    builder.model_from_tensors = _marked("model from the merged tensors", builder.model_from_tensors)
    trainer.train_step = _marked("alignment step (TRL)", trainer.train_step)
    Scorer.measure = _marked("scoring (lm-eval)", Scorer.measure)  # type: ignore[method-assign]
    Scorer.record = _marked("recording", Scorer.record)  # type: ignore[method-assign]


def main() -> None:
    instrument()
    from harness.cli import app

    app(prog_name="harness")


if __name__ == "__main__":
    main()
