"""One leaderboard row as the stages hand it to the store: :class:`TrialRecord`, and the
small readings of stored values that readers share."""

from __future__ import annotations

import json
import math
import os
import socket
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrialRecord:
    """Everything about one evaluated model except its scores."""

    name: str
    source: str
    status: str = "ok"
    error: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    model_ref: str | None = None
    recipe_yaml: str | None = None
    recipe_hash: str | None = None
    merge_method: str | None = None
    align_method: str | None = None
    study: str | None = None
    trial_number: int | None = None
    objective: float | None = None
    objective_stderr: float | None = None
    objective_weights: dict[str, float] | None = None
    heldout_objective: float | None = None
    heldout_objective_stderr: float | None = None
    fidelity: int | None = None
    split_rule: str | None = None
    reused_from: str | None = None
    written_by: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    build_seconds: float | None = None
    eval_seconds: float | None = None
    num_parameters: int | None = None
    dtype: str | None = None
    suites: str | None = None
    eval_limit: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    # One dict per alignment step: step, method, chunk, examples, train_steps, seconds, lora,
    # loss, rewards_chosen, rewards_rejected, rewards_margins, rewards_accuracies, metrics.
    align_steps: list[dict[str, Any]] = field(default_factory=list)


def scoring_paths(scores: list[dict[str, Any]]) -> list[str]:
    """How a trial's score rows with data were computed, most rows first: ``shared-prefix``,
    ``stock: <why>``, or ``not recorded`` (rows written before schema 6)."""
    counts = Counter(
        row.get("scoring_path") or "not recorded" for row in scores if row.get("value") is not None
    )
    return [path for path, _ in counts.most_common()]


def param_value(value: float | None, text: str | None) -> Any:
    """A stored search parameter: numbers are DOUBLE (whole ones come back as int), the
    rest JSON text (see ``Leaderboard.record``); NaN/inf -> None."""
    if value is not None:
        if not math.isfinite(value):
            return None
        return int(value) if float(value).is_integer() and abs(value) < 2**53 else value
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text
