"""What an evaluation returns: the contract between Evaluate and Record."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Score:
    """One metric of one lm-eval task (subtasks included) or one suite aggregate.

    ``value`` is ``None`` when there was no data: it is never reported as 0.
    """

    task: str
    metric: str
    value: float | None
    stderr: float | None = None
    n_samples: int | None = None
    num_fewshot: int | None = None
    # Where the documents came from, and how that differs from the official setting,
    # e.g. "demo:ai2_arc/ARC-Challenge/validation (official: test)", "hub:allenai/ai2_arc",
    # "no data: TruthfulQA is not available offline; pass --data-dir".
    data_source: str = ""
    suite: str | None = None
    aggregate: bool = False


# A headline number as a weighted sum of per-task means: (task, metric, num_fewshot) -> weight.
Composition = dict[tuple[str, str, int | None], float]


@dataclass(frozen=True)
class Sample:
    """One metric of one question, as lm-eval computed it (``log_samples``).

    Every aggregate the harness shows is a function of these rows (a mean per task, a mean of
    task means for macro numbers), so they can be recomputed, re-aggregated and compared
    question by question between two models scored on the same documents.
    """

    task: str
    num_fewshot: int | None
    doc_id: int
    doc_hash: str  # lm-eval's hash of the document: the same question under any doc_id
    metric: str  # as in Score.metric ("acc", "acc_norm", "acc,<filter>" for other filters)
    value: float | None
    split: str | None  # the dataset split the document came from (e.g. "test", "validation")
    partition: str = "all"  # which part of the split the document belongs to


@dataclass
class EvalResult:
    """All scores of one model, plus what is needed to reproduce them."""

    scores: list[Score] = field(default_factory=list)
    # Headline numbers keyed by suite aggregate name ("h4", "mmlu", "mmlu_macro", "kmmlu",
    # "arc_challenge", ...). None = no data.
    summary: dict[str, float | None] = field(default_factory=dict)
    task_versions: dict[str, str] = field(default_factory=dict)
    limit: int | None = None
    seconds: float = 0.0
    # For each summary key: the stderr of its number and where its data came from (so a
    # leaderboard can show "± stderr" and "substitute data" for keys it does not know).
    summary_stderr: dict[str, float | None] = field(default_factory=dict)
    summary_source: dict[str, str] = field(default_factory=dict)
    # Per-question results of every leaf task that ran (no group rows: groups are means).
    samples: list[Sample] = field(default_factory=list)
    # How each summary key with data is made from the samples (see Composition).
    summary_parts: dict[str, Composition] = field(default_factory=dict)
    # Which questions: "all" (the split, or its first ``limit``), or a study's "search" /
    # "heldout" part (harness.evaluate.questions).
    partition: str = "all"
    # How the log-likelihoods were computed: "shared-prefix" (harness.evaluate.fast_lm) or
    # "stock: <why>" (lm-eval's own HFLM: slower, same numbers); None when nothing ran.
    scoring_path: str | None = None

    @property
    def questions(self) -> int:
        """How many questions were scored (question-evaluations, whatever the metrics)."""
        return len({(s.task, s.doc_id) for s in self.samples})


def mix_compositions(weights: dict[str, float], parts: dict[str, Composition]) -> Composition | None:
    """The composition of a weighted mean of headline numbers (an objective, an average)."""
    if not weights:
        return None
    total = sum(weights.values())
    out: Composition = {}
    for key, weight in weights.items():
        for leaf, w in parts[key].items():
            out[leaf] = out.get(leaf, 0.0) + w * weight / total
    return out


def pooled_stderr(errors: Sequence[float | None]) -> float | None:
    """Stderr of an unweighted mean of independent scores; None if there are none or any
    part lacks one."""
    known = [e for e in errors if e is not None]
    if not errors or len(known) < len(errors):
        return None
    return math.sqrt(sum(e * e for e in known)) / len(known)
