"""Which questions a score is measured on: a search part and a held-out part of every task.

A search that ranks its trials on the questions it optimised on reports the winner's luck
as skill (the winner's curse). So each task's documents are divided once per study: the
objective only ever sees the **search** part; the leaderboard ranks the **held-out** part.

Where the dataset has an official split for it (MMLU validation, KMMLU train, ARC validation;
``Part.search_split``), the search part is that split and the whole evaluated split is held
out: the leaderboard's numbers are on the official test questions. The planner appends the
search split's documents after the evaluated split's in one lm-eval task
(:func:`harness.evaluate.datasources.joined_splits`), so held-out doc ids are lm-eval's own.
Elsewhere the evaluated split is divided by a seeded hash of the document itself (lm-eval's
``doc_hash``); hashing the document, not its position, keeps a question in the same part
when a dataset is re-ordered or grows. Every samples row names its split.

Within each part the documents have a fixed seeded order, so "the first 20 search questions of
arc_easy" are the same for every trial of a study (paired comparisons, rungs of growing
fidelity: a rung adds the next questions in that order).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from harness.errors import HarnessError

Partition = Literal["search", "heldout", "all"]
# Per task: chosen lm-eval doc ids (what ``simple_evaluate(samples=...)`` scores).
Questions = dict[str, list[int]]


@dataclass(frozen=True)
class SplitRule:
    """How a study divides each task's documents (data in the space file: ``selection:``)."""

    heldout_fraction: float = 0.5
    seed: int = 0

    def describe(self, search_splits: Mapping[str, str] | None = None) -> str:
        """What every record of the study says about its questions (and what its reuse matches)."""
        share = round(self.heldout_fraction * 100)
        hashed = f"seeded hash split: {100 - share}% search / {share}% held-out (seed {self.seed})"
        if not search_splits:
            return hashed
        by_split: dict[str, list[str]] = {}
        for task, split in sorted(search_splits.items()):
            by_split.setdefault(split, []).append(task)
        official = "; ".join(f"{split} for {_tasks(names)}" for split, names in by_split.items())
        return f"official search split ({official}), every scored question held out; elsewhere {hashed}"

    def position(self, task: str, doc_hash: str) -> float:
        """A uniform number in [0, 1) fixed by (seed, task, document): below the held-out
        fraction the document is held out; the order within each part follows it too."""
        digest = hashlib.sha256(f"{self.seed}\0{task}\0{doc_hash}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64


def _tasks(names: Sequence[str]) -> str:
    return ", ".join(names) if len(names) <= 3 else f"{names[0]} and {len(names) - 1} more tasks"


@dataclass(frozen=True)
class TaskOrder:
    """One leaf task's documents, divided and ordered."""

    search: tuple[int, ...]  # doc ids in the study's search order
    heldout: tuple[int, ...]  # doc ids in the study's held-out order
    hashes: tuple[str, ...]  # by doc id
    search_split: str | None = None  # the official split of the search part (None: hashed)


class QuestionOrder:
    """Every leaf task of a plan, divided by a :class:`SplitRule` (see the module docstring).

    ``appended``: task -> how many of its last documents come from an official search split;
    those are its search part and all the others are held out."""

    def __init__(
        self,
        hashes: Mapping[str, Sequence[str]],
        rule: SplitRule,
        appended: Mapping[str, tuple[str, int]] | None = None,
    ):
        self.rule = rule
        self.tasks: dict[str, TaskOrder] = {}
        for task, doc_hashes in hashes.items():
            keyed = sorted((rule.position(task, h), doc_id) for doc_id, h in enumerate(doc_hashes))
            if task in (appended or {}):
                split, count = (appended or {})[task]
                first_search = len(doc_hashes) - count
                heldout = tuple(i for _, i in keyed if i < first_search)
                search = tuple(i for _, i in keyed if i >= first_search)
                self.tasks[task] = TaskOrder(search, heldout, tuple(doc_hashes), split)
                continue
            heldout = tuple(i for u, i in keyed if u < rule.heldout_fraction)
            search = tuple(i for u, i in keyed if u >= rule.heldout_fraction)
            if len(doc_hashes) >= 2 and (not heldout or not search):
                # A tiny task: keep one question on each side rather than none.
                ordered = [i for _, i in keyed]
                heldout, search = (ordered[0],), tuple(ordered[1:])
            self.tasks[task] = TaskOrder(search, heldout, tuple(doc_hashes))

    def choose(self, partition: Partition, count: int | None, start: int = 0) -> Questions:
        """Doc ids of questions ``[start, count)`` of each task's part, in its order (all of the
        part when count is None). Tasks with none left are left out: lm-eval must not run them."""
        chosen: Questions = {}
        for task, order in self.tasks.items():
            ids = order.search if partition == "search" else order.heldout
            if partition == "all":
                ids = tuple(range(len(order.hashes)))
            picked = ids[start:count]
            if picked:
                chosen[task] = sorted(picked)
        return chosen


@lru_cache(maxsize=16)
def _hashes(
    include_dir: str | None, names: tuple[str, ...], appended: tuple[tuple[str, str], ...]
) -> tuple[dict[str, list[str]], dict[str, int]]:
    from harness.evaluate.lm_eval_compat import task_doc_hashes
    from harness.evaluate.tasks import run_task_manager

    return task_doc_hashes(names, run_task_manager(include_dir), dict(appended))


def question_order(
    include_dir: str | None,
    names: Sequence[str],
    rule: SplitRule,
    search_splits: Mapping[str, str] | None = None,
) -> QuestionOrder:
    """The study's division of these lm-eval tasks (documents loaded and hashed once per
    process). ``search_splits``: task -> the official split appended as its search part."""
    splits = dict(search_splits or {})
    try:
        hashes, tails = _hashes(include_dir, tuple(sorted(set(names))), tuple(sorted(splits.items())))
    except Exception as err:  # a dataset lm-eval cannot load: the same error a run would hit
        raise HarnessError(
            f"cannot read the documents of {', '.join(names)}: {type(err).__name__}: {str(err)[:300]}",
            "check the task's data (harness eval on the same suite shows where it comes from)",
        ) from None
    return QuestionOrder(hashes, rule, {task: (splits[task], count) for task, count in tails.items()})
