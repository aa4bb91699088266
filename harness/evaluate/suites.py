"""Suites: named sets of lm-eval tasks with their few-shot settings and headline numbers.

A suite is data (:class:`Suite`). The built-in ones are :data:`SUITES` (never changed at run
time); a search space passes its own :class:`Suite` objects wherever a suite name goes
(:data:`SuiteRef`). Nothing downstream branches on suite names. Any lm-eval task, group or
tag name is also accepted as a suite of its own (its YAML defaults, headline = its first
metric, under a key that names them: ``arc_challenge_0shot_acc``).

* ``h4``: ARC-Challenge 25-shot acc_norm, HellaSwag 10-shot acc_norm, MMLU 5-shot acc,
  TruthfulQA ``truthfulqa_mc2`` 0-shot acc; ``h4`` = their mean, with MMLU as the macro mean
  over its 57 subjects as the Open LLM Leaderboard v1 computed it. If a part has no data
  ``h4`` is None and ``h4_partial`` is the mean of the parts that have data.
* ``mmlu``: lm-eval's ``mmlu`` group, 5-shot: ``mmlu`` = lm-eval's size-weighted (micro)
  group number, ``mmlu_macro`` = unweighted mean over subjects.
* ``kmmlu``: lm-eval's default ``kmmlu`` group (``lm_eval/tasks/kmmlu/default``: log-likelihood
  over A-D after ``정답：``, the paper's "direct" setup), 5-shot from the ``dev`` split as in
  the KMMLU paper; ``kmmlu`` = macro mean over the 45 subjects (the paper's average),
  ``kmmlu_micro`` = lm-eval's size-weighted group number.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from harness.errors import HarnessError

# "lm_eval": the number lm-eval reports for the task or group (groups here are
# size-weighted); "macro": the unweighted mean over the group's leaf subtasks.
Average = Literal["lm_eval", "macro"]


@dataclass(frozen=True)
class Part:
    """One lm-eval task or group scored within a suite."""

    task: str
    num_fewshot: int | None = None  # None: the task YAML's own default
    metric: str | None = None  # headline metric; None: the task's first metric
    # Summary key -> how it is computed from this part's results.
    headlines: Mapping[str, Average] = field(default_factory=dict)
    # Where a study's search part comes from (see harness.evaluate.questions): None, the
    # dataset's official search split when the data has one (MMLU validation, KMMLU train,
    # ARC validation), else a seeded hash of the evaluated split; "hash": always the hash;
    # a split name: that split (an error where it cannot be used).
    search_split: str | None = None


@dataclass(frozen=True)
class Total:
    """A suite-level mean over headline keys (H4)."""

    key: str
    of: tuple[str, ...]

    @property
    def partial_key(self) -> str:
        return f"{self.key}_partial"


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    parts: tuple[Part, ...]
    total: Total | None = None

    def summary_keys(self) -> list[str]:
        keys = [k for p in self.parts for k in (p.headlines or {p.task: "lm_eval"})]
        if self.total is not None:
            keys += [self.total.key, self.total.partial_key]
        return keys


_MMLU_PART = Part("mmlu", 5, "acc", {"mmlu": "lm_eval", "mmlu_macro": "macro"})

SUITES: dict[str, Suite] = {
    "h4": Suite(
        name="h4",
        description="Open LLM Leaderboard v1: ARC-C 25-shot, HellaSwag 10-shot, MMLU 5-shot, "
        "TruthfulQA mc2 0-shot",
        parts=(
            Part("arc_challenge", 25, "acc_norm", {"arc_challenge": "lm_eval"}),
            Part("hellaswag", 10, "acc_norm", {"hellaswag": "lm_eval"}),
            _MMLU_PART,
            Part("truthfulqa_mc2", 0, "acc", {"truthfulqa_mc2": "lm_eval"}),
        ),
        total=Total("h4", ("arc_challenge", "hellaswag", "mmlu_macro", "truthfulqa_mc2")),
    ),
    "mmlu": Suite(
        name="mmlu",
        description="MMLU 57 subjects, 5-shot acc (micro = lm-eval group, macro = per subject)",
        parts=(_MMLU_PART,),
    ),
    "kmmlu": Suite(
        name="kmmlu",
        description="KMMLU 45 subjects, 5-shot acc, macro over subjects as in the paper",
        parts=(Part("kmmlu", 5, "acc", {"kmmlu": "macro", "kmmlu_micro": "lm_eval"}),),
    ),
}


@dataclass(frozen=True)
class Column:
    """A leaderboard column: a summary key the built-in suites produce, how it is shown."""

    key: str
    label: str
    help: str
    averaged: bool = False  # one of the parts of the "average" column


# The leaderboard's columns in table order (the one definition: the DB's ranking, the CLI,
# the report and `harness compare` all read it). "average" is the mean of the averaged ones.
_PARTS: tuple[Column, ...] = (
    Column("h4", "H4", "Open LLM Leaderboard v1: mean of ARC-C, HellaSwag, MMLU macro, TruthfulQA"),
    Column("arc_challenge", "ARC-C", "ARC-Challenge 25-shot acc_norm", averaged=True),
    Column("hellaswag", "HellaSwag", "HellaSwag 10-shot acc_norm", averaged=True),
    Column("mmlu_macro", "MMLU macro", "MMLU 5-shot acc, unweighted mean over the subjects (H4 part)"),
    Column("truthfulqa_mc2", "TruthfulQA", "TruthfulQA mc2 0-shot", averaged=True),
    Column("mmlu", "MMLU micro", "MMLU 5-shot acc, lm-eval's size-weighted group number", averaged=True),
    Column("kmmlu", "KMMLU", "KMMLU 5-shot acc, macro mean over the subjects", averaged=True),
)
AVERAGED: tuple[str, ...] = tuple(c.key for c in _PARTS if c.averaged)
BOARD_COLUMNS: tuple[Column, ...] = (
    Column("average", "Average", "Mean of " + ", ".join(c.label for c in _PARTS if c.averaged)),
    *_PARTS,
)


def board_keys() -> list[str]:
    """Every summary key with a leaderboard column, the totals' partial keys included."""
    keys = [c.key for c in BOARD_COLUMNS if c.key != "average"]
    for suite in SUITES.values():
        if suite.total is not None and suite.total.key in keys:
            keys.insert(keys.index(suite.total.key) + 1, suite.total.partial_key)
    return keys


# Quick CPU runs (2 cores, SmolLM2-135M fp32, batch 8). ``limit`` is per lm-eval task, so it
# multiplies by the subjects: measured at limit 20 on a busy machine, ARC-C 25-shot 5.4 min,
# HellaSwag 10-shot 5.1 min, MMLU 5-shot 2-3.5 s per question (57 x 20: about an hour). Scores
# at 20 questions carry about ±0.1 stderr: smoke tests and coarse search only.
CPU_QUICK: dict[str, int] = {"limit": 20, "batch_size": 8}
PROFILES: dict[str, dict[str, int]] = {"cpu-quick": CPU_QUICK}


def _known_lm_eval_names() -> set[str]:
    from harness.evaluate.tasks import default_task_index

    return set(default_task_index())


# A suite by name (built-in, or an lm-eval task/group/tag), or one defined as data (a space's).
SuiteRef = str | Suite


def suite_for(name: SuiteRef) -> Suite:
    """The suite itself, a built-in one, or a one-task suite for an lm-eval task/group/tag name."""
    if isinstance(name, Suite):
        return name
    if name in SUITES:
        return SUITES[name]
    if name not in _known_lm_eval_names():
        raise _unknown(name)
    return _bare_task_suite(name)


def bare_task_key(task: str, shots: int | None, metric: str | None) -> str:
    """The summary key of a bare lm-eval task: it names the setting measured, so a 0-shot
    ``acc`` of ``arc_challenge`` never lands in H4's 25-shot ``acc_norm`` column."""
    setting = f"{shots}shot" if shots is not None else "yamlshots"
    return "_".join(p for p in (task, setting, (metric or "").split(",")[0]) if p)


def _bare_task_suite(name: str) -> Suite:
    """A one-part suite for an lm-eval task, group or tag in its YAML's own setting."""
    from harness.evaluate.tasks import default_task_index, expand

    node = expand(name, default_task_index())
    shots, metric = node.default_shots(), node.headline_metric()
    key = bare_task_key(name, shots, metric)
    return Suite(
        name=name,
        description=f"lm-eval task {name}: {shots if shots is not None else 'its YAML'}-shot {metric or ''}".strip(),
        parts=(Part(name, shots, metric, {key: "lm_eval"}),),
    )


def known_name(name: str) -> bool:
    """Whether lm-eval knows this task, group or tag name."""
    return name in _known_lm_eval_names()


def check_task(name: str, where: str) -> None:
    """A suite part must name a real lm-eval task, group or tag (not one of our suites)."""
    if name not in _known_lm_eval_names():
        close = difflib.get_close_matches(name, sorted(_known_lm_eval_names()), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise HarnessError(
            f"{where}: unknown lm-eval task {name!r}", f"{hint}see `python -m lm_eval ls tasks`"
        )


def _unknown(name: str) -> HarnessError:
    close = difflib.get_close_matches(name, [*SUITES, *_known_lm_eval_names()], n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return HarnessError(
        f"unknown suite {name!r}",
        f"{hint}use {', '.join(SUITES)} or an lm-eval task name (python -m lm_eval ls tasks)",
    )


def parse_suites(text: str | Iterable[str]) -> list[str]:
    """``"h4,mmlu,kmmlu"`` -> validated, de-duplicated names (HarnessError if unknown)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = list(dict.fromkeys(s.strip() for s in items if s and s.strip()))
    if not names:
        raise HarnessError("no suite given", f"name at least one of {', '.join(SUITES)}")
    for name in names:
        suite_for(name)
    return names


def resolve_suites(refs: Sequence[SuiteRef]) -> list[Suite]:
    """Suites for names and suite objects alike (names validated, repeats dropped)."""
    chosen: dict[str, Suite] = {}
    for ref in refs:
        if isinstance(ref, str) and not ref.strip():
            continue
        suite = suite_for(ref.strip() if isinstance(ref, str) else ref)
        chosen.setdefault(suite.name, suite)
    if not chosen:
        raise HarnessError("no suite given", f"name at least one of {', '.join(SUITES)}")
    return list(chosen.values())


def suite_names(refs: Sequence[SuiteRef]) -> list[str]:
    return [r if isinstance(r, str) else r.name for r in refs]


def summary_keys(names: Sequence[SuiteRef]) -> set[str]:
    """Every summary key the suites can produce (``h4_partial`` included)."""
    return {k for s in resolve_suites(names) for k in s.summary_keys()}
