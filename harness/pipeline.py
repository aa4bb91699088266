"""One home for "score this model on these questions and record it".

``harness eval``, ``harness build --suite`` and every trial and reference model of ``harness
search`` go through :class:`Scorer`: the suites are planned once (bad names and bad local data
fail before any model is loaded), the question sets come from one place (lm-eval's ``limit``,
or a study's search / held-out division, :mod:`harness.evaluate.questions`), and a result is
recorded the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.evaluate import EvalResult, evaluate_model, plan_evaluation
from harness.evaluate.questions import Partition, QuestionOrder, SplitRule, question_order
from harness.evaluate.suites import SuiteRef, suite_names
from harness.record import Leaderboard, TrialRecord
from harness.stages import stage

if TYPE_CHECKING:
    from harness.evaluate.answers import RequestCache
    from harness.placement import Placement


_STAGES: dict[Partition, str] = {"all": "score", "search": "score search", "heldout": "score held-out"}


@dataclass(frozen=True)
class Scoring:
    """What a score measures: suites, questions per task, where the data is, how to batch."""

    suites: Sequence[SuiteRef]
    limit: int | None = None  # questions per task: the first N (no split) or of the search part
    data_dir: Path | None = None
    batch_size: int = 8
    fast: bool = True  # shared-prefix log-likelihoods (harness.evaluate.fast_lm); False: stock HFLM
    split: SplitRule | None = None  # a study's search / held-out division; None: lm-eval's limit
    heldout_limit: int | None = None  # questions per task of a held-out confirmation (None: all)


class Scorer:
    """Scores loaded models under one :class:`Scoring` and records them on one leaderboard."""

    def __init__(
        self,
        scoring: Scoring,
        board: Leaderboard,
        *,
        progress: bool = False,
        placement: Placement | None = None,
    ):
        self.scoring = scoring
        self.board = board
        self.progress = progress
        self.placement = placement  # the run's device: a model found elsewhere is moved, loudly
        self.plan = plan_evaluation(
            list(scoring.suites), data_dir=scoring.data_dir, divided=scoring.split is not None
        )
        self._order: QuestionOrder | None = None

    @property
    def suites(self) -> str:
        return ",".join(suite_names(self.scoring.suites))

    @property
    def split_rule(self) -> str | None:
        return self.scoring.split.describe(self.plan.search_splits()) if self.scoring.split else None

    @property
    def order(self) -> QuestionOrder:
        """The study's division of every task's documents (read and hashed on first use)."""
        if self._order is None:
            if self.scoring.split is None:
                raise ValueError("this scoring has no search / held-out split")
            include = str(self.plan.include_dir) if self.plan.include_dir else None
            self._order = question_order(
                include, self.plan.leaves(), self.scoring.split, self.plan.search_splits()
            )
        return self._order

    def count(self, partition: Partition) -> int | None:
        """Questions per task of a full-fidelity score on this partition."""
        return self.scoring.heldout_limit if partition == "heldout" else self.scoring.limit

    def measure(
        self,
        model: Any,
        tokenizer: Any,
        partition: Partition = "all",
        count: int | None = None,
        cache: RequestCache | None = None,
    ) -> EvalResult:
        """Score a loaded model on a partition's first ``count`` questions per task (default:
        the full-fidelity count). ``cache``, the model's answers so far (one per loaded model:
        :mod:`harness.evaluate.answers`), makes a later call on more questions of the same
        model compute only the new ones."""
        common: dict[str, Any] = {
            "data_dir": self.scoring.data_dir,
            "batch_size": self.scoring.batch_size,
            "fast": self.scoring.fast,
            "progress": self.progress,
            "plan": self.plan,
            "cache": cache,
        }
        with stage(_STAGES[partition]) as scored:
            if partition == "all" or self.scoring.split is None:
                result = evaluate_model(
                    model, tokenizer, self.scoring.suites, limit=self.scoring.limit, **common
                )
            else:
                chosen = self.order.choose(partition, count if count is not None else self.count(partition))
                result = evaluate_model(
                    model, tokenizer, self.scoring.suites, questions=chosen, partition=partition, **common
                )
            scored(model, result.scoring_path)
        return result

    def describe(self, record: TrialRecord) -> TrialRecord:
        """Stamp what is measured on a record: the same suites, limit and split find its reuse."""
        record.suites = self.suites
        record.eval_limit = self.scoring.limit
        record.split_rule = self.split_rule
        return record

    def record(self, record: TrialRecord, result: EvalResult | None = None) -> str:
        return self.board.record(self.describe(record), result)

    def score_and_record(self, model: Any, tokenizer: Any, record: TrialRecord) -> EvalResult:
        """``harness eval`` / ``build --suite``: score on every question (or the first --limit),
        record it. A run-time failure is recorded as failed, then raised."""
        from harness.errors import HarnessError

        try:
            result = self.measure(model, tokenizer)
        except HarnessError:
            raise
        except Exception as err:  # a run-time failure is recorded, never lost
            record.status, record.error = "failed", f"{type(err).__name__}: {err}"
            self.record(record)
            raise
        self.record(record, result)
        return result
