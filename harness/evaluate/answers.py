"""Answers an lm-eval model already gave, remembered for the next call on the same model.

A search scores a trial in rungs of growing question sets, each a ``simple_evaluate`` call
(:meth:`harness.pipeline.Scorer.measure`), and only the new questions of a rung should reach
the model. lm-eval's own ``use_cache`` does this through SQLite (``CachingLM`` over
``sqlitedict``): a file per model, a thread per connection and a stack trace captured on every
query, about 1 s of a warm three-rung demo trial under a profiler. The answers never outlive
one loaded model, so a dict in memory does the same: requests are keyed by their arguments
(``(context, continuation)``), as ``CachingLM`` keys them, and the model computes the rest.
"""

from __future__ import annotations

from typing import Any

from lm_eval.models.huggingface import HFLM

from harness.evaluate.lm_eval_compat import ReusesEncodings

Answer = tuple[float, bool]
# (context, continuation) -> lm-eval's (log-likelihood, greedy) for one loaded model.
RequestCache = dict[tuple[str, ...], Answer]


class RemembersAnswers:
    """Mixin for an lm-eval ``LM``: with ``answers`` set, ``loglikelihood`` runs only the
    requests not answered before and remembers what it computes. ``None``: no memory."""

    answers: RequestCache | None = None

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Answer]:
        compute = super().loglikelihood  # type: ignore[misc]
        if self.answers is None:
            return list(compute(requests, disable_tqdm=disable_tqdm))
        memory = self.answers
        new = [r for r in requests if tuple(r.args) not in memory]
        if new:
            for request, answer in zip(new, compute(new, disable_tqdm=disable_tqdm), strict=True):
                memory[tuple(request.args)] = answer
        return [memory[tuple(r.args)] for r in requests]


class RememberingHFLM(RemembersAnswers, ReusesEncodings, HFLM):
    """lm-eval's stock ``HFLM`` with :class:`RemembersAnswers` and the process's encodings
    (``fast_scoring: false``)."""
