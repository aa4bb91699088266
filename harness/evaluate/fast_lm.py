"""lm-eval's ``HFLM`` with a log-likelihood path that does only the work the answer needs.

A multiple-choice question asks for ``log p(choice | context)`` once per choice, with the same
context each time (an ARC 25-shot context is ~1,500 tokens, scored four times by stock
``HFLM``), and stock ``HFLM`` projects every position of every sequence onto the vocabulary
and log-softmaxes all of it (49k x 1,500 floats per sequence) to read a handful of values.
:class:`SharedPrefixHFLM` instead

- runs each distinct context once (contexts batched longest first, left-padded, so the last
  position of every row is its context's last token) and asks for that position's logits only;
- runs the leading tokens that a batch's contexts share (an MMLU or KMMLU subject's five fixed
  examples) once per batch, its cache copied to every row;
- copies the context's key/value cache once per answer choice and runs only the choices'
  tokens after it, with logits for those positions only;
- batches by a token budget (rows x padded length) rather than a fixed count, and on a CUDA
  out-of-memory error halves the budget and retries the batch;
- cuts a batch, and its answer choices into groups, where padding to the longest row would
  cost more than another forward pass (a one-token choice is not padded to a 30-token one).

Everything else (tasks, prompts, tokenisation, truncation rules, metrics, generation, rolling
log-likelihoods) is lm-eval's own: only ``_loglikelihood_tokens`` is overridden (and
``loglikelihood`` only to remember answers across a trial's rungs,
:mod:`harness.evaluate.answers`), and requests it cannot serve exactly as stock would (a
context plus continuation longer than the model's window, which lm-eval truncates from the
left) go to stock ``HFLM``. Per-request log-likelihoods equal stock's to float rounding (the test asserts 1e-4
in float32) and every greedy flag and accuracy exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

from harness.evaluate import transformers_compat as tc
from harness.evaluate.answers import Answer, RemembersAnswers
from harness.evaluate.lm_eval_compat import ReusesEncodings

log = logging.getLogger(__name__)

Request = tuple[tuple[str, str] | None, list[int], list[int]]

# Padded tokens per batch (rows x longest context). On a CPU this is about where larger
# batches stop paying; on a GPU it starts high and halves on out-of-memory.
CPU_BATCH_TOKENS = 8192
CUDA_BATCH_TOKENS = 262144
# A batch (or a group of answer choices) is cut in two where its padding would exceed this
# share of what it runs *and* what one more forward pass costs: rows of mixed lengths (an ARC
# question beside a HellaSwag one, a one-token choice beside a 30-token ending) would
# otherwise run mostly padding, and every padded position costs the model and, for choices,
# the vocabulary head. A pass's own cost is in padded tokens: on 2 CPU cores a pass over a
# few tokens takes what 25-50 more tokens do (it reads every weight once); on a GPU, kernel
# launches are worth far more tokens (a guess, not measured: no GPU was lent).
MAX_PADDING_SHARE = 0.25
CPU_PASS_TOKENS = 48
CUDA_PASS_TOKENS = 4096
# Contexts that share at least this many leading tokens, and most of their length (few-shot
# examples fixed per subject, as MMLU's and KMMLU's), run those tokens once per batch.
MIN_SHARED_TOKENS = 16


def _common_prefix(contexts: Sequence[list[int]]) -> int:
    """Leading tokens every context shares, leaving each at least one token of its own (the
    last position must be computed per row)."""
    first, shortest = contexts[0], min(len(c) for c in contexts)
    n = 0
    while n < shortest - 1 and all(c[n] == first[n] for c in contexts):
        n += 1
    return n


def _cut_here(padding: int, rows: int, width: int, pass_tokens: int) -> bool:
    """Whether a pass of ``rows`` x ``width`` tokens carrying ``padding`` padded ones is better
    run as two passes."""
    return padding > max(MAX_PADDING_SHARE * rows * width, pass_tokens)


def _shares_most(a: list[int], b: list[int]) -> bool:
    return _common_prefix([a, b]) * 2 >= min(len(a), len(b))


_Item = TypeVar("_Item")


def _length_groups(
    items: Sequence[_Item],
    length: Callable[[_Item], int],
    pass_tokens: int,
    rows: Callable[[_Item], int] = lambda _: 1,
    budget: int | None = None,
) -> Iterator[list[_Item]]:
    """``items`` longest first, cut where padding to the group's longest would not pay (see
    ``_cut_here``) or where its rows (``rows``: what each item adds) x that width would
    exceed ``budget``."""
    group: list[_Item] = []
    padding = used_rows = 0
    for item in sorted(items, key=length, reverse=True):
        if group:
            width = length(group[0])
            pad = width - length(item)
            over_budget = budget is not None and (used_rows + rows(item)) * width > budget
            if over_budget or _cut_here(padding + pad, len(group) + 1, width, pass_tokens):
                yield group
                group, padding, used_rows = [], 0, 0
            else:
                padding += pad
        group.append(item)
        used_rows += rows(item)
    if group:
        yield group


_TOLD: set[str] = set()
SHARED_PREFIX = "shared-prefix"  # the scoring path recorded on rows this class scored


@dataclass
class _Question:
    """One distinct context and the requests (indices into the call's list) that continue it."""

    context: list[int]
    requests: list[int]


class SharedPrefixHFLM(RemembersAnswers, ReusesEncodings, HFLM):
    """``HFLM`` whose log-likelihoods share each context's forward pass among its choices.

    ``batch_tokens`` caps rows x padded length per forward pass; ``pass_tokens`` is what one
    more pass is worth in padded tokens (both default by device). Models whose forward lacks
    what :mod:`harness.evaluate.transformers_compat` needs are scored by stock ``HFLM``, with
    one log line saying why.
    """

    def __init__(
        self, *args: Any, batch_tokens: int | None = None, pass_tokens: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        cuda = self.device.type == "cuda"
        self.batch_tokens = batch_tokens or (CUDA_BATCH_TOKENS if cuda else CPU_BATCH_TOKENS)
        self.pass_tokens = (
            pass_tokens if pass_tokens is not None else (CUDA_PASS_TOKENS if cuda else CPU_PASS_TOKENS)
        )
        reason = "seq2seq backend" if self.backend != "causal" else tc.shares_prefixes(self.model)
        self.stock_reason = f"the model's {reason}" if reason else None
        if self.stock_reason and self.stock_reason not in _TOLD:
            _TOLD.add(self.stock_reason)  # once per process, not once per trial
            log.warning(
                "scoring with lm-eval's stock HFLM instead of the shared-prefix path (slower, same "
                "numbers): %s",
                self.stock_reason,
            )

    @property
    def scoring_path(self) -> str:
        """What a score row records: ``shared-prefix`` or ``stock: <why>``."""
        return f"stock: {self.stock_reason}" if self.stock_reason else SHARED_PREFIX

    def _loglikelihood_tokens(
        self,
        requests: list[Request],  # type: ignore[override]
        disable_tqdm: bool = False,
        override_bs: int | None = None,
    ) -> list[Answer]:
        if self.stock_reason:
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        answers: list[Answer | None] = [None] * len(requests)
        questions: dict[tuple[int, ...], _Question] = {}
        truncated: list[int] = []
        for i, (_, context, continuation) in enumerate(requests):
            if len(context) + len(continuation) > self.max_length + 1 or not context or not continuation:
                truncated.append(i)  # stock's left truncation (or its own assertion) applies
            else:
                questions.setdefault(tuple(context), _Question(list(context), [])).requests.append(i)
        if truncated:
            stock = super()._loglikelihood_tokens([requests[i] for i in truncated], disable_tqdm, override_bs)
            for i, answer in zip(truncated, stock, strict=True):
                answers[i] = answer
        with tqdm(
            total=len(requests) - len(truncated),
            disable=disable_tqdm or self.rank != 0,
            desc="Running loglikelihood requests",
        ) as bar:
            for batch in self._batches(list(questions.values()), requests):
                for i, answer in self._score_with_retry(batch, requests):
                    answers[i] = answer
                    request_str = requests[i][0]
                    if request_str is not None:  # rolling windows are cached by their caller
                        self.cache_hook.add_partial("loglikelihood", request_str, answer)
                    bar.update(1)
        missing = [i for i, answer in enumerate(answers) if answer is None]
        if missing:
            raise RuntimeError(f"shared-prefix scoring left {len(missing)} requests unanswered")
        return answers  # type: ignore[return-value]

    # ------------------------------------------------------------------ batching

    def _batches(
        self, questions: Sequence[_Question], requests: Sequence[Request]
    ) -> Iterator[list[_Question]]:
        """Questions whose contexts share most of their tokens (an MMLU subject's five fixed
        examples) batched together, so the shared tokens run once per batch; the rest longest
        first, so padding stays small and any out-of-memory error comes first. A batch ends
        where its rows (a context and its choices' tails) x padded length would exceed the
        token budget, or where its padding would not pay (``_cut_here``)."""
        ordered = sorted(questions, key=lambda q: q.context)  # shared prefixes become neighbours
        runs: list[list[_Question]] = []
        for question in ordered:
            if runs and _shares_most(runs[-1][-1].context, question.context):
                runs[-1].append(question)
            else:
                runs.append([question])
        alone = [run[0] for run in runs if len(run) == 1]
        for run in [run for run in runs if len(run) > 1] + [alone]:
            yield from _length_groups(
                run,
                lambda q: len(q.context),
                self.pass_tokens,
                rows=lambda q: 1 + sum(1 for i in q.requests if len(requests[i][2]) > 1),
                budget=self.batch_tokens,
            )

    def _score_with_retry(
        self, batch: list[_Question], requests: Sequence[Request]
    ) -> list[tuple[int, Answer]]:
        try:
            return self._score(batch, requests)
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                raise
            self.batch_tokens = max(1, self.batch_tokens // 2)
            log.warning("out of memory: batch_tokens halved to %d", self.batch_tokens)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            half = len(batch) // 2
            return self._score_with_retry(batch[:half], requests) + self._score_with_retry(
                batch[half:], requests
            )

    # ------------------------------------------------------------------ scoring

    def _log_softmax(self, logits: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)

    def _score(self, batch: list[_Question], requests: Sequence[Request]) -> list[tuple[int, Answer]]:
        device = self.device
        shared = _common_prefix([q.context for q in batch]) if len(batch) > 1 else 0
        if shared < MIN_SHARED_TOKENS:
            shared = 0
        # Each row: the shared tokens, left padding, then the rest of its context, so every
        # row ends at its context's last token (the position that predicts an answer).
        width = max(len(q.context) for q in batch) - shared
        ids = torch.full((len(batch), width), self._pad_id(), dtype=torch.long)
        rest_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, question in enumerate(batch):
            rest = question.context[shared:]
            ids[row, width - len(rest) :] = torch.tensor(rest)
            rest_mask[row, width - len(rest) :] = 1
        ids, rest_mask = ids.to(device), rest_mask.to(device)
        positions = (shared + rest_mask.cumsum(-1) - 1).clamp(min=0)
        mask = torch.cat(
            [torch.ones((len(batch), shared), dtype=torch.long, device=device), rest_mask], dim=1
        )
        lengths = mask.sum(-1)

        # Each choice's tokens after the first, run from a copy of its question's cache.
        tails = [(row, i) for row, q in enumerate(batch) for i in q.requests if len(requests[i][2]) > 1]
        with self._inference():
            cache = None
            if shared:
                prefix = torch.tensor([batch[0].context[:shared]], device=device)
                _, cache = tc.last_logits_and_cache(
                    self.model,
                    prefix,
                    torch.ones_like(prefix),
                    torch.arange(shared, device=device).unsqueeze(0),
                )
                cache = tc.select_cache_rows(cache, torch.zeros(len(batch), dtype=torch.long, device=device))
            first_logits, cache = tc.last_logits_and_cache(self.model, ids, mask, positions, cache)
            first = self._log_softmax(first_logits)  # [questions, vocab]: predicts token 1
            scored_tails: dict[int, tuple[torch.Tensor, bool]] = {}
            for group in _length_groups(tails, lambda tail: len(requests[tail[1]][2]) - 1, self.pass_tokens):
                scored_tails.update(self._tails(group, requests, cache, mask, lengths))

        first_greedy = first.argmax(-1)
        out: list[tuple[int, Answer]] = []
        for row, question in enumerate(batch):
            for i in question.requests:
                continuation = requests[i][2]
                head = first[row, continuation[0]].reshape(1)
                greedy = bool(first_greedy[row] == continuation[0])
                if len(continuation) > 1:
                    tail_logps, rest_greedy = scored_tails[i]
                    head = torch.cat([head, tail_logps])
                    greedy = greedy and rest_greedy
                out.append((i, (float(head.sum()), greedy)))
        return out

    def _tails(
        self,
        tails: list[tuple[int, int]],
        requests: Sequence[Request],
        cache: Any,
        context_mask: torch.Tensor,
        context_lengths: torch.Tensor,
    ) -> dict[int, tuple[torch.Tensor, bool]]:
        """Each choice's tokens but its last, run from its question's cache: per request, the
        log-probabilities of its tokens after the first and whether each was the greedy one."""
        device = self.device
        steps = max(len(requests[i][2]) - 1 for _, i in tails)
        ids = torch.full((len(tails), steps), self._pad_id(), dtype=torch.long)
        tail_mask = torch.zeros((len(tails), steps), dtype=torch.long)
        for n, (_, i) in enumerate(tails):  # right padding: nothing real follows a pad
            tokens = requests[i][2][:-1]
            ids[n, : len(tokens)] = torch.tensor(tokens)
            tail_mask[n, : len(tokens)] = 1
        rows = torch.tensor([row for row, _ in tails], device=device)
        cache = tc.select_cache_rows(cache, rows)
        mask = torch.cat([context_mask[rows], tail_mask.to(device)], dim=1)
        positions = context_lengths[rows].unsqueeze(1) + torch.arange(steps, device=device)
        logprobs = self._log_softmax(
            tc.continue_from_cache(self.model, ids.to(device), mask, positions, cache)
        )
        scored: dict[int, tuple[torch.Tensor, bool]] = {}
        for n, (_, i) in enumerate(tails):
            wanted = torch.tensor(requests[i][2][1:], device=logprobs.device)
            at = logprobs[n, : len(wanted)]
            scored[i] = at.gather(-1, wanted.unsqueeze(-1)).squeeze(-1), bool((at.argmax(-1) == wanted).all())
        return scored

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.eot_token_id)

    def _inference(self) -> Any:
        """What stock ``HFLM._model_call`` runs under: no autograd, its mixed precision if set."""
        from contextlib import ExitStack

        stack = ExitStack()
        stack.enter_context(torch.no_grad())
        stack.enter_context(
            torch.autocast(
                device_type=self.device.type,
                dtype=self.mixed_precision_dtype,
                enabled=self.mixed_precision_dtype is not None,
            )
        )
        return stack
