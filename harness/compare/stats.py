"""Paired statistics on per-question results: two models, the same questions.

Two models scored on the same questions differ question by question; the noise in their
difference is far smaller than two independent stderrs suggest (Miller, "Adding Error Bars to
Evals", arXiv 2411.00640). Everything here works on those per-question differences.

A headline number is a weighted sum of per-task means (:data:`harness.evaluate.results.
Composition`), so the difference of two models on it is ``D = sum_t w_t * mean(d_t)`` with
``d_t`` the per-question differences of task ``t``.

- p-value: exact McNemar (a two-sided binomial test on the discordant questions) when the
  number is one task of 0/1 values; otherwise a sign-flip randomization test (under "no
  difference" each question's difference is as likely to have either sign), which is exact in
  distribution up to its Monte Carlo error and needs no normality.
- confidence interval: a paired bootstrap, questions resampled within each task.
- many rows compared with one leader: Holm's step-down adjustment (family-wise error).

Randomness is seeded: the same data gives the same p and interval every time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ROUNDS = 4000  # resamples for the randomization p-value and the bootstrap interval
SEED = 0
CHUNK = 250  # resamples per vectorised block (bounds memory for tasks of many questions)


@dataclass(frozen=True)
class TaskDiffs:
    """The per-question differences (A - B) of one task and the task's weight in the number."""

    weight: float
    diffs: np.ndarray
    binary: bool  # both models' values were all 0/1


@dataclass(frozen=True)
class PairedTest:
    difference: float  # A - B on the number
    ci_low: float
    ci_high: float
    p_value: float
    test: str  # "exact McNemar" | "sign-flip randomization" | "no discordant questions"
    questions: int
    discordant: int  # questions on which the two models differ


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p: questions only A got right vs only B got right."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def composite(tasks: Sequence[TaskDiffs]) -> float:
    return float(sum(t.weight * t.diffs.mean() for t in tasks if t.diffs.size))


def _draws(tasks: Sequence[TaskDiffs], rounds: int, seed: int, per_task: Any) -> np.ndarray:
    """``rounds`` random values of sum_t w_t * per_task(rng, task, block), in bounded blocks."""
    rng = np.random.default_rng(seed)
    blocks = []
    done = 0
    while done < rounds:
        block = min(CHUNK, rounds - done)
        total = np.zeros(block)
        for t in tasks:
            if t.diffs.size:
                total += t.weight * per_task(rng, t, block)
        blocks.append(total)
        done += block
    return np.concatenate(blocks)


def _flipped_means(rng: np.random.Generator, t: TaskDiffs, block: int) -> np.ndarray:
    return (rng.choice((-1.0, 1.0), size=(block, t.diffs.size)) @ t.diffs) / t.diffs.size


def _resampled_means(rng: np.random.Generator, t: TaskDiffs, block: int) -> np.ndarray:
    return t.diffs[rng.integers(0, t.diffs.size, size=(block, t.diffs.size))].mean(axis=1)


def sign_flip_p(tasks: Sequence[TaskDiffs], rounds: int = ROUNDS, seed: int = SEED) -> float:
    """P(|D*| >= |D|) with every question's difference given a random sign (plus-one corrected)."""
    observed = abs(composite(tasks))
    draws = _draws(tasks, rounds, seed, _flipped_means)
    return (1 + int(np.sum(np.abs(draws) >= observed - 1e-12))) / (1 + rounds)


def bootstrap_ci(
    tasks: Sequence[TaskDiffs], level: float = 0.95, rounds: int = ROUNDS, seed: int = SEED
) -> tuple[float, float]:
    """Percentile interval of D with questions resampled within each task."""
    draws = _draws(tasks, rounds, seed + 1, _resampled_means)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def paired_test(tasks: Sequence[TaskDiffs]) -> PairedTest:
    """The paired comparison of two models on one number (see the module docstring)."""
    tasks = [t for t in tasks if t.diffs.size]
    questions = sum(t.diffs.size for t in tasks)
    discordant = sum(int(np.count_nonzero(t.diffs)) for t in tasks)
    difference = composite(tasks)
    if discordant == 0:
        return PairedTest(difference, difference, difference, 1.0, "no discordant questions", questions, 0)
    if len(tasks) == 1 and tasks[0].binary:
        d = tasks[0].diffs
        p = mcnemar_exact(int(np.sum(d > 0)), int(np.sum(d < 0)))
        test = "exact McNemar"
    else:
        p = sign_flip_p(tasks)
        test = "sign-flip randomization"
    low, high = bootstrap_ci(tasks)
    return PairedTest(difference, low, high, p, test, questions, discordant)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
