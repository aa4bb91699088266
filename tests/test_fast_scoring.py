"""The shared-prefix scorer equals lm-eval's stock HFLM, request by request and question by
question, on every built-in suite; and it really shares the prefix (the transformers boundary
in ``harness/evaluate/transformers_compat.py`` is exercised here, so an upgrade that breaks it
fails these tests rather than silently falling back or scoring differently)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
from lm_eval.models.huggingface import HFLM
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.evaluate import evaluate_model
from harness.evaluate import transformers_compat as tc
from harness.evaluate.fast_lm import MAX_PADDING_SHARE, SharedPrefixHFLM
from tests.fixtures.evaluate_data import build_data_dir, isolated_eval_env


@pytest.fixture(scope="module", autouse=True)
def env(tmp_path_factory) -> Any:
    with isolated_eval_env(tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("hf_cache")) as home:
        yield home


@pytest.fixture(scope="module")
def tiny(tiny_models) -> tuple[Any, Any]:
    path = tiny_models["base"]
    model = AutoModelForCausalLM.from_pretrained(path)
    model.eval()
    return model, AutoTokenizer.from_pretrained(path)


def _greedy(model: Any, context: list[int], steps: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            torch.tensor([context]), max_new_tokens=steps, min_new_tokens=steps, do_sample=False
        )
    return out[0, len(context) :].tolist()


def _requests(
    model: Any, seed: int = 0, questions: int = 24, context_tokens: tuple[int, int] = (1, 150)
) -> list[Any]:
    """Multiple-choice shaped requests: contexts of 1-150 tokens, 2-5 choices of 1-6 tokens,
    one choice per question the model's own greedy continuation (so greedy flags are tested)."""
    rng = random.Random(seed)
    requests = []
    for q in range(questions):
        context = [rng.randrange(3, 300) for _ in range(rng.randrange(*context_tokens))]
        for c in range(rng.randrange(2, 6)):
            length = rng.randrange(1, 7)
            tokens = (
                _greedy(model, context, length) if c == 0 else [rng.randrange(3, 300) for _ in range(length)]
            )
            requests.append(((f"q{q}", f"choice {c}"), context, tokens))
    rng.shuffle(requests)
    return requests


class _TokenCounter:
    """Tokens the model's forward was given, summed over calls."""

    def __init__(self, model: Any) -> None:
        self.tokens = 0
        self.handle = model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module: Any, args: Any, kwargs: Any) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.tokens += int(ids.numel())


@pytest.mark.parametrize("batch_tokens", [1, 700, None])
def test_loglikelihoods_equal_stock_and_each_context_runs_once(tiny, batch_tokens) -> None:
    model, tokenizer = tiny
    requests = _requests(model)
    stock_lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8)
    fast_lm = SharedPrefixHFLM(
        pretrained=model, tokenizer=tokenizer, batch_size=8, batch_tokens=batch_tokens, pass_tokens=0
    )
    assert fast_lm.stock_reason is None  # the boundary holds for a Llama on this transformers
    counter = _TokenCounter(model)
    stock = stock_lm._loglikelihood_tokens(requests, disable_tqdm=True)
    stock_tokens, counter.tokens = counter.tokens, 0
    fast = fast_lm._loglikelihood_tokens(requests, disable_tqdm=True)
    counter.handle.remove()

    assert len(fast) == len(stock) == len(requests)
    assert max(abs(a[0] - b[0]) for a, b in zip(fast, stock, strict=True)) < 1e-4
    assert [a[1] for a in fast] == [b[1] for b in stock]
    assert sum(a[1] for a in stock) >= 20  # the greedy choices are greedy under both
    # Each distinct context once, then each choice's tokens but its last; padding (contexts of
    # 1-150 tokens, choices of 1-6) at most MAX_PADDING_SHARE of what runs when a pass costs
    # nothing. Far below stock's context-per-choice in any batching.
    tails: dict[tuple[int, ...], list[int]] = {}
    for _, context, continuation in requests:
        tails.setdefault(tuple(context), []).append(len(continuation) - 1)
    needed = sum(len(c) + sum(t) for c, t in tails.items())
    assert needed <= counter.tokens <= needed / (1 - MAX_PADDING_SHARE)
    assert counter.tokens < stock_tokens / 2


def test_requests_longer_than_the_window_are_truncated_as_stock_does(tiny) -> None:
    model, tokenizer = tiny
    requests = _requests(model, seed=1, questions=8)
    stock = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4, max_length=64)
    fast = SharedPrefixHFLM(pretrained=model, tokenizer=tokenizer, batch_size=4, max_length=64)
    assert any(len(r[1]) + len(r[2]) > 65 for r in requests)
    a = fast._loglikelihood_tokens(requests, disable_tqdm=True)
    b = stock._loglikelihood_tokens(requests, disable_tqdm=True)
    assert max(abs(x[0] - y[0]) for x, y in zip(a, b, strict=True)) < 1e-4
    assert [x[1] for x in a] == [y[1] for y in b]


class _NoLogitsToKeep(torch.nn.Module):
    """A causal LM whose forward takes no ``logits_to_keep`` (as older releases and some
    remote-code models): it must be scored by stock HFLM, not approximately."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.device = inner.device
        self.name_or_path = inner.name_or_path

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Any:
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)

    def tie_weights(self) -> None:
        pass


def test_a_model_the_fast_path_cannot_serve_is_scored_by_stock(tiny) -> None:
    model, tokenizer = tiny
    wrapped = _NoLogitsToKeep(model)
    assert "logits_to_keep" in (tc.shares_prefixes(wrapped) or "")
    requests = _requests(model, seed=2, questions=4)
    fast = SharedPrefixHFLM(pretrained=wrapped, tokenizer=tokenizer, batch_size=4)
    assert fast.stock_reason
    expected = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4)._loglikelihood_tokens(
        requests, disable_tqdm=True
    )
    assert fast._loglikelihood_tokens(requests, disable_tqdm=True) == expected


class _TakesPastKeyValues(torch.nn.Module):
    """A causal LM whose forward takes and returns its key/value cache as ``past_key_values``
    (transformers before 5.25, and models not yet renamed), whatever the installed release
    calls it."""

    cache_name = "past_key_values"

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.device = inner.device
        self.name_or_path = inner.name_or_path

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
    ) -> Any:
        return self._call(input_ids, attention_mask, position_ids, past_key_values, use_cache, logits_to_keep)

    def _call(self, input_ids: Any, attention_mask: Any, position_ids: Any, cache: Any, *rest: Any) -> Any:
        from types import SimpleNamespace

        inner_name = tc.cache_argument(self.inner)
        assert inner_name is not None
        use_cache, logits_to_keep = rest
        out = self.inner(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **{inner_name: cache},
        )
        return SimpleNamespace(logits=out.logits, **{self.cache_name: getattr(out, inner_name)})

    def tie_weights(self) -> None:
        pass


class _TakesCache(_TakesPastKeyValues):
    """The same model with transformers 5.25's name for it, ``cache``."""

    cache_name = "cache"

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
    ) -> Any:
        return self._call(input_ids, attention_mask, position_ids, cache, use_cache, logits_to_keep)


def test_the_installed_llama_takes_its_cache_by_this_releases_name(tiny) -> None:
    import transformers
    from packaging.version import Version

    renamed = Version(transformers.__version__) >= Version("5.25.0")
    assert tc.cache_argument(tiny[0]) == ("cache" if renamed else "past_key_values")
    assert tc.shares_prefixes(tiny[0]) is None


@pytest.mark.parametrize("wrapper", [_TakesPastKeyValues, _TakesCache])
def test_the_cache_argument_is_found_under_either_name(tiny, wrapper) -> None:
    """Either side of transformers 5.25's rename is served by the shared-prefix path, with
    stock's numbers (the wrapped model runs the installed release underneath)."""
    model, tokenizer = tiny
    wrapped = wrapper(model)
    assert tc.cache_argument(wrapped) == wrapper.cache_name
    requests = _requests(model, seed=5, questions=6)
    fast = SharedPrefixHFLM(pretrained=wrapped, tokenizer=tokenizer, batch_size=4, pass_tokens=0)
    assert fast.stock_reason is None
    counter = _TokenCounter(model)
    got = fast._loglikelihood_tokens(requests, disable_tqdm=True)
    shared_tokens, counter.tokens = counter.tokens, 0
    expected = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4)._loglikelihood_tokens(
        requests, disable_tqdm=True
    )
    counter.handle.remove()
    assert max(abs(x[0] - y[0]) for x, y in zip(got, expected, strict=True)) < 1e-4
    assert [x[1] for x in got] == [y[1] for y in expected]
    assert shared_tokens < counter.tokens / 2  # contexts ran once: the cache was really reused


def test_out_of_memory_halves_the_batch_and_loses_nothing(tiny, monkeypatch) -> None:
    model, tokenizer = tiny
    requests = _requests(model, seed=3, questions=10, context_tokens=(120, 130))  # one batch
    real = tc.last_logits_and_cache
    rows_seen: list[int] = []

    def small_memory(model: Any, ids: torch.Tensor, *args: Any) -> Any:
        rows_seen.append(ids.shape[0])
        if ids.shape[0] > 2:
            raise torch.OutOfMemoryError("simulated")
        return real(model, ids, *args)

    monkeypatch.setattr(tc, "last_logits_and_cache", small_memory)
    fast = SharedPrefixHFLM(pretrained=model, tokenizer=tokenizer, batch_tokens=100_000)
    got = fast._loglikelihood_tokens(requests, disable_tqdm=True)
    monkeypatch.undo()
    expected = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8)._loglikelihood_tokens(
        requests, disable_tqdm=True
    )
    assert max(abs(x[0] - y[0]) for x, y in zip(got, expected, strict=True)) < 1e-4
    assert rows_seen[0] == 10 and fast.batch_tokens < 100_000
    assert sum(rows for rows in rows_seen if rows <= 2) == 10  # each question scored once


def test_every_builtin_suite_scores_the_same_questions_equally(tiny, tmp_path: Path) -> None:
    """h4 (ARC 25-shot, HellaSwag 10-shot, MMLU 5-shot, TruthfulQA mc2) and KMMLU 5-shot: every
    per-question metric (0/1 accuracies exactly, mc2 to 1e-4) and every summary number."""
    model, tokenizer = tiny
    data = build_data_dir(tmp_path / "data")
    kwargs: dict[str, Any] = {"data_dir": data, "progress": False}  # every fixture question
    fast = evaluate_model(model, tokenizer, ["h4", "kmmlu"], fast=True, **kwargs)
    stock = evaluate_model(model, tokenizer, ["h4", "kmmlu"], fast=False, **kwargs)

    def by_question(result: Any) -> dict[tuple, float | None]:
        return {(s.task, s.num_fewshot, s.doc_id, s.metric): s.value for s in result.samples}

    ours, theirs = by_question(fast), by_question(stock)
    assert ours.keys() == theirs.keys() and len(ours) >= 30
    tasks = {key[0] for key in ours}
    assert {"arc_challenge", "hellaswag", "truthfulqa_mc2"} <= tasks
    assert any(t.startswith("mmlu_") for t in tasks) and any(t.startswith("kmmlu_") for t in tasks)
    for key, value in ours.items():
        if key[0] == "truthfulqa_mc2":
            assert value == pytest.approx(theirs[key], abs=1e-4), key
        else:
            assert value == theirs[key], key
    for key, value in stock.summary.items():
        if value is None:
            assert fast.summary[key] is None
        else:
            assert fast.summary[key] == pytest.approx(value, abs=1e-4), key


def test_few_shot_examples_shared_by_a_subject_run_once_per_batch(tiny) -> None:
    """MMLU-shaped: two subjects, each with its fixed 200-token few-shot block, then a short
    question; single-token answer letters. The block runs once per subject, not per question."""
    model, tokenizer = tiny
    rng = random.Random(4)
    requests = []
    for subject in range(2):
        block = [rng.randrange(3, 300) for _ in range(200)]
        for q in range(6):
            context = block + [rng.randrange(3, 300) for _ in range(rng.randrange(5, 31))]
            for letter in range(4):
                requests.append(((f"s{subject} q{q}", f" {letter}"), context, [10 + letter]))
    # and a question of its own, whose context shares nothing
    requests.append((("alone", " 0"), [rng.randrange(3, 300) for _ in range(50)], [10]))
    counter = _TokenCounter(model)
    fast = SharedPrefixHFLM(pretrained=model, tokenizer=tokenizer)._loglikelihood_tokens(
        requests, disable_tqdm=True
    )
    counter.handle.remove()
    stock = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8)._loglikelihood_tokens(
        requests, disable_tqdm=True
    )
    assert max(abs(a[0] - b[0]) for a, b in zip(fast, stock, strict=True)) < 1e-4
    assert [a[1] for a in fast] == [b[1] for b in stock]
    assert counter.tokens <= 2 * 200 + 12 * 30 + 50  # blocks once, questions padded to 30
