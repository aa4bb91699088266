"""Preference training on a loaded model, one TRL trainer per run; sDPO as a schedule.

One run is one TRL trainer of the recipe's registered method (:mod:`harness.align.methods`:
DPO, KTO, ORPO). sDPO (arXiv 2403.19270) is a loop of runs over T chunks of the preference
data: step t trains a target initialised from M(t-1) against the reference M(t-1); M0 is the
model the stage starts from (the merge). It works around any method with a reference (DPO,
IPO, KTO). TRL has no sDPO (``trl.experimental.sdpo`` is an unrelated method).

The reference is always the model the run starts from, in memory: a frozen copy (full
fine-tuning), the adapter-disabled base (LoRA / IA3: the base *is* M(t-1)), or log-probs TRL
precomputes from the policy before its first update (``precompute_ref_log_probs``). It is never
re-loaded from ``config._name_or_path``, which TRL 1.x does when ``ref_model=None`` without
PEFT: wrong for an in-memory merge. A guard turns any such reload into an error.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gc
import math
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import PrinterCallback, TrainerCallback

from harness.align.config import DEFAULT_MAX_NEW_TOKENS, AlignConfig, PreferenceSource
from harness.align.data import LoadedSource, checked_sources
from harness.align.logps import reward_accuracy
from harness.align.methods import AlignMethod
from harness.align.onpolicy import GenerationCache, model_fingerprint, on_policy_pairs
from harness.align.trl_compat import (
    checkpointing_rename_quiet,
    labelled_positions_only,
    no_reference_reload,
    strip_trl_patches,
)
from harness.errors import AlignmentError, HarnessError
from harness.evaluate.datasources import datasets_bars_off
from harness.memory import release_freed_memory
from harness.placement import pick_device

if TYPE_CHECKING:
    from harness.merge.builder import BuiltModel
    from harness.recipe.schema import Recipe

# TRL's logged metric -> column of the ``align_steps`` table (a method's other metrics go to
# the row's ``metrics``).
RECORD_KEYS = {
    "loss": "loss",
    "rewards/chosen": "rewards_chosen",
    "rewards/rejected": "rewards_rejected",
    "rewards/margins": "rewards_margins",
    "rewards/accuracies": "rewards_accuracies",
}


@dataclass
class AlignResult:
    """The aligned model and one record per run (``TrialRecord.align_steps``)."""

    model: Any  # transformers.PreTrainedModel (plain: LoRA adapters are merged back)
    steps: list[dict[str, Any]]
    seconds: float = 0.0
    order: list[str] = field(default_factory=list)  # chunk names, in training order
    difficulty: dict[str, float] = field(default_factory=dict)  # source -> reward accuracy


@dataclass
class Chunk:
    """The pairs of one run (an sDPO step, or the whole data)."""

    name: str
    rows: list[dict[str, Any]]
    sources: list[str]
    row_sources: list[str] = field(default_factory=list)  # each row's source name


def align_model(
    model: Any,
    tokenizer: Any,
    config: AlignConfig,
    *,
    device: str | None = None,
    output_dir: str | Path | None = None,
    seed: int = 0,
    sources: list[LoadedSource] | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> AlignResult:
    """Run the recipe's method once, or on the sDPO schedule (T steps), on ``model``; return
    the aligned model and records.

    Full fine-tuning trains ``model`` in place (it is returned); an adapter (LoRA, IA3) returns
    the base with the adapter merged in. ``device``: ``"cpu"``, ``"cuda"``... (default: CUDA when available);
    the model is left on that device. ``output_dir`` is TRL's scratch folder (a temp folder
    by default; nothing is saved there). ``seed`` is used unless ``config.seed`` is set.
    ``on_step`` gets each step's record when it ends; ``on_progress(step, done, total)`` is
    called after every optimizer step (for a progress bar with an ETA).
    Raises HarnessError for bad input found before training, AlignmentError during it.
    """
    start = time.perf_counter()
    seed = config.seed if config.seed is not None else seed
    if sources is None:
        sources = checked_sources(config, "align")
    _check_tokenizer(tokenizer, sources)
    # Answers of the same weights to the same prompts are made once (harness.align.onpolicy),
    # keyed by the weights' fingerprint: M0's is taken at most once, for the ordering and step 1.
    generations = GenerationCache() if any(s.on_policy for s in sources) else None
    fingerprint = fingerprint_once(model)
    difficulty: dict[str, float] = {}
    by_difficulty = config.stepwise and config.partition == "reward_accuracy"
    if by_difficulty and len(sources) > 1 and config.num_steps > 1:
        difficulty = source_difficulty(
            model,
            tokenizer,
            sources,
            config,
            seed=seed,
            device=device,
            generations=generations,
            fingerprint=fingerprint,
        )
    chunks = partition(sources, config, seed=seed, difficulty=difficulty)
    shared = {
        "difficulty": difficulty,
        "order": [c.name for c in chunks],
        "data": {s.name: {"location": s.location, "sha256": s.fingerprint} for s in sources},
    }
    steps: list[dict[str, Any]] = []
    current = model
    for t, chunk in enumerate(chunks, start=1):
        answered = None
        if generations is not None:  # the step's own starting model answers: M(t-1)
            chunk, answered = with_on_policy_answers(
                current, tokenizer, chunk, config, generations, seed=seed + t - 1, fingerprint=fingerprint
            )
        current, record = train_step(
            current,
            tokenizer,
            chunk,
            config,
            step=t,
            seed=seed + t - 1,
            device=device,
            output_dir=output_dir,
            on_progress=on_progress,
        )
        fingerprint = fingerprint_once(current)  # M(t), the next step's start (taken if asked)
        record["metrics"].update(shared)
        if answered:
            record["metrics"]["on_policy"] = answered
        steps.append(record)
        if on_step is not None:
            on_step(record)
    current.eval()
    return AlignResult(
        model=current,
        steps=steps,
        seconds=time.perf_counter() - start,
        order=[c.name for c in chunks],
        difficulty=difficulty,
    )


def apply_alignment(
    built: BuiltModel,
    recipe: Recipe | None = None,
    *,
    device: str | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Align a freshly built merge in place (``built.model``) when its recipe has ``align``.

    Returns the records for ``TrialRecord.align_steps`` ([] without an ``align`` part) and adds
    the training time to ``built.seconds``.
    """
    recipe = recipe or built.recipe
    if recipe.align is None:
        return []
    result = align_model(
        built.model, built.tokenizer, recipe.align, device=device, seed=recipe.seed, on_step=on_step
    )
    built.model = result.model
    built.seconds += result.seconds
    return result.steps


# --- partition -------------------------------------------------------------------------------


def source_difficulty(
    model: Any,
    tokenizer: Any,
    sources: list[LoadedSource],
    config: AlignConfig,
    *,
    seed: int = 0,
    device: str | None = None,
    generations: GenerationCache | None = None,
    fingerprint: Callable[[], str] | None = None,
) -> dict[str, float]:
    """Reward accuracy of the starting model on (a sample of) each source: higher = easier.

    An on-policy source is judged on the starting model's own answers to a seeded sample of
    its prompts (cached: step 1 reuses them); a source whose sampled answers all equal the
    label is as easy as it gets (1.0). ``fingerprint``: the model's, computed once (see
    :func:`fingerprint_once`)."""
    from datasets import Dataset

    target = pick_device(device)
    moved = next(model.parameters()).device.type != target
    original = next(model.parameters()).device
    if moved:
        model.to(target)
    try:
        accuracy: dict[str, float] = {}
        for s in sources:
            dataset = s.dataset
            if s.on_policy:
                rows = normalized_rows(s)
                if len(rows) > config.difficulty_sample:
                    rows = random.Random(seed).sample(rows, config.difficulty_sample)
                fingerprint = fingerprint or fingerprint_once(model)
                pairs, _ = on_policy_pairs(
                    model,
                    tokenizer,
                    rows,
                    max_new_tokens=_max_new_tokens(config, s.name),
                    cache=generations,
                    model_key=fingerprint(),
                )
                if not pairs:
                    accuracy[s.name] = 1.0
                    continue
                dataset = Dataset.from_list(pairs)
            accuracy[s.name] = reward_accuracy(
                model,
                tokenizer,
                dataset,
                sample=config.difficulty_sample,
                seed=seed,
                max_length=config.max_length,
            )
        return accuracy
    finally:
        if moved:
            model.to(original)


def with_on_policy_answers(
    model: Any,
    tokenizer: Any,
    chunk: Chunk,
    config: AlignConfig,
    generations: GenerationCache,
    seed: int = 0,
    fingerprint: Callable[[], str] | None = None,
) -> tuple[Chunk, dict[str, Any]]:
    """The chunk with each on-policy source's ``rejected`` made by ``model`` (the step's
    starting model), answers equal to the label dropped, the other rows as they are; and what
    was done, per source, for the step's record.

    With ``max_steps``, a step consumes at most max_steps x batch x accumulation pairs: only a
    seeded sample of that many rows is answered and trained on (answering all of SciQ for a
    64-pair step would be 15x the generation, thrown away). ``fingerprint``: the model's,
    computed once for every source (see :func:`fingerprint_once`)."""
    on_policy = {s.name for s in config.data if s.rejected == "on_policy"}
    if not on_policy & set(chunk.sources):
        return chunk, {}
    chosen: list[int] = list(range(len(chunk.rows)))
    consumed = _pairs_consumed(config)
    if consumed is not None and consumed < len(chunk.rows):
        chosen = sorted(random.Random(seed).sample(range(len(chunk.rows)), consumed))
    rows: list[tuple[int, str, dict[str, Any]]] = []
    made: dict[str, Any] = {}
    for name in chunk.sources:
        mine = [(i, chunk.rows[i]) for i in chosen if chunk.row_sources[i] == name]
        if name not in on_policy:
            rows += [(i, name, row) for i, row in mine]
            continue
        tagged = [{**row, _ROW_INDEX: i} for i, row in mine]
        fingerprint = fingerprint or fingerprint_once(model)
        pairs, stats = on_policy_pairs(
            model,
            tokenizer,
            tagged,
            max_new_tokens=_max_new_tokens(config, name),
            cache=generations,
            model_key=fingerprint(),
        )
        rows += [(pair.pop(_ROW_INDEX), name, pair) for pair in pairs]
        made[name] = {**stats.as_record(), "sampled_from": sum(1 for s in chunk.row_sources if s == name)}
    if not rows:
        raise HarnessError(
            f"align: every on-policy answer in {chunk.name} equals its label: no pair is left to train on",
            "use data the model does not already answer, or drop rejected: on_policy",
        )
    rows.sort(key=lambda item: item[0])
    kept = Chunk(
        name=chunk.name,
        rows=[row for _, _, row in rows],
        sources=chunk.sources,
        row_sources=[name for _, name, _ in rows],
    )
    return kept, made


def fingerprint_once(model: Any) -> Callable[[], str]:
    """The model's :func:`~harness.align.onpolicy.model_fingerprint` (one pass over the weights),
    computed on the first call only, and only if a caller asks: the ordering and step 1 share
    M0's; a step without on-policy sources takes none. Valid while the weights do not change."""
    return functools.cache(functools.partial(model_fingerprint, model))


def _pairs_consumed(config: AlignConfig) -> int | None:
    """How many pairs a step with ``max_steps`` reads (None: it reads whole epochs)."""
    if config.max_steps is None:
        return None
    return config.max_steps * config.per_device_train_batch_size * config.gradient_accumulation_steps


_ROW_INDEX = "__harness_row__"  # a row's place in its chunk, carried through on_policy_pairs


def _source(config: AlignConfig, name: str) -> PreferenceSource:
    return next(s for s in config.data if s.name == name)


def _max_new_tokens(config: AlignConfig, name: str) -> int:
    return _source(config, name).max_new_tokens or DEFAULT_MAX_NEW_TOKENS


def partition(
    sources: list[LoadedSource],
    config: AlignConfig,
    *,
    seed: int = 0,
    difficulty: dict[str, float] | None = None,
) -> list[Chunk]:
    """The T chunks, in training order.

    ``reward_accuracy``: sources sorted easy -> hard (higher accuracy first, ties as listed);
    ``as_listed``: sources as listed. With T = number of sources each source is one chunk
    (the paper's rule); otherwise the ordered pairs are cut into T contiguous, near-equal
    chunks. ``random``: all pairs shuffled (seeded), cut into T near-equal chunks.
    """
    steps = config.num_steps
    ordered = list(sources)
    if config.partition == "reward_accuracy" and difficulty:
        ordered.sort(key=lambda s: -difficulty.get(s.name, 0.0))  # stable: ties keep the order
    tagged = [(s.name, row) for s in ordered for row in normalized_rows(s)]
    if not tagged:
        raise HarnessError("align: the preference data is empty", "give at least one pair")
    if steps > len(tagged):
        raise HarnessError(
            f"align: steps = {steps} but the preference data has only {len(tagged)} pairs",
            f"use steps <= {len(tagged)} or add data",
        )
    if steps == 1:
        return [_chunk([s.name for s in ordered], tagged)]
    if config.partition == "random":
        random.Random(seed).shuffle(tagged)
        return [_chunk([f"random{i + 1}of{steps}"], part) for i, part in enumerate(_split(tagged, steps))]
    if steps == len(ordered):
        return [_chunk([s.name], [(s.name, r) for r in normalized_rows(s)]) for s in ordered]
    return [_chunk(list(dict.fromkeys(name for name, _ in part)), part) for part in _split(tagged, steps)]


def _chunk(names: list[str], tagged: list[tuple[str, dict[str, Any]]]) -> Chunk:
    sources = list(dict.fromkeys(name for name, _ in tagged))
    return Chunk(
        name="+".join(names),
        rows=[row for _, row in tagged],
        sources=sources,
        row_sources=[name for name, _ in tagged],
    )


def _split(items: list[Any], parts: int) -> Iterator[list[Any]]:
    size, extra = divmod(len(items), parts)
    start = 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        yield items[start:end]
        start = end


def normalized_rows(source: LoadedSource) -> list[dict[str, Any]]:
    """prompt/chosen/rejected only, messages reduced to role/content (sources concatenate)."""
    from trl.data_utils import extract_prompt

    rows: list[dict[str, Any]] = []
    for raw in source.dataset:
        row = {k: raw[k] for k in ("prompt", "chosen", "rejected") if k in raw}
        if "prompt" not in row:
            row = extract_prompt(row)
        if source.conversational:
            row = {k: [{"role": m["role"], "content": m["content"]} for m in v] for k, v in row.items()}
        rows.append(row)
    return rows


# --- one run ---------------------------------------------------------------------------------


def train_step(
    policy: Any,
    tokenizer: Any,
    chunk: Chunk,
    config: AlignConfig,
    *,
    step: int = 1,
    seed: int = 0,
    device: str | None = None,
    output_dir: str | Path | None = None,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """One run of the config's method on ``chunk``; the reference (when the method has one) is
    ``policy`` as it is now. Returns (model, record)."""
    import torch
    from datasets import Dataset

    method = config.trainer
    trl_config_class, trl_trainer_class = method.trl_classes()
    start = time.perf_counter()
    target = pick_device(device)
    use_cuda = target.startswith("cuda")
    strip_trl_patches(policy)
    use_cache = getattr(policy.config, "use_cache", None)
    tok = copy.deepcopy(tokenizer)  # TRL sets pad_token; keep the caller's tokenizer untouched
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token

    ref_model = None
    # With an adapter, the adapter-disabled base *is* M(t-1): no copy, nothing re-loaded.
    peft_config = adapter_config(config)
    if peft_config is None:
        policy.requires_grad_(True)  # an adapter step before this one leaves the base frozen
        if method.needs_reference and not config.precompute_ref_log_probs:
            ref_model = frozen_copy(policy)

    with tempfile.TemporaryDirectory(prefix=f"harness-{method.name}-") as scratch:
        args = trl_config_class(
            output_dir=str(output_dir or scratch),
            report_to=[],
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="steps",
            logging_steps=0.1,  # TRL averages its metrics over ~10% of the run per log line
            logging_first_step=True,
            logging_nan_inf_filter=False,  # a NaN loss must reach the NaN guard, not be smoothed
            disable_tqdm=True,
            use_cpu=not use_cuda,
            bf16=use_cuda and torch.cuda.is_bf16_supported(),
            fp16=False,
            seed=seed,
            data_seed=seed,
            dataloader_num_workers=0,
            **_trl_args(config, trl_config_class),
        )
        trainer = None
        try:
            # Both: TRL may score the reference (precompute_ref_log_probs) while it is built.
            with (
                no_reference_reload(method.trl_module)
                if method.needs_reference
                else contextlib.nullcontext(),
                labelled_positions_only(),
                datasets_bars_off(),
                checkpointing_rename_quiet(),
            ):
                reference = {"ref_model": ref_model} if method.needs_reference else {}
                trainer = trl_trainer_class(
                    model=policy,
                    args=args,
                    train_dataset=Dataset.from_list(method.train_rows(chunk.rows)),
                    processing_class=tok,
                    peft_config=peft_config,
                    callbacks=[_NaNGuard(step)] + ([_Progress(step, on_progress)] if on_progress else []),
                    **reference,
                )
            trainer.remove_callback(PrinterCallback)  # logs go to the record, not stdout
            examples = len(trainer.train_dataset)
            if examples == 0:
                raise AlignmentError(
                    f"align step {step} ({chunk.name}): every prompt is longer than "
                    f"max_length={config.max_length}; raise max_length"
                )
            with labelled_positions_only(), checkpointing_rename_quiet():
                trainer.train()
            history = list(trainer.state.log_history)
            train_steps = int(trainer.state.global_step)
            model = trainer.accelerator.unwrap_model(trainer.model)
            if peft_config is not None:
                model = model.merge_and_unload()
        except torch.OutOfMemoryError as err:
            raise AlignmentError(_oom_message(step, chunk, config)) from err
        except RuntimeError as err:
            if "out of memory" in str(err).lower() or "can't allocate memory" in str(err).lower():
                raise AlignmentError(_oom_message(step, chunk, config)) from err
            raise
        except ValueError as err:
            # PEFT / TRL configuration problems surface here (e.g. target_modules not found).
            raise AlignmentError(f"align step {step} ({chunk.name}): {err}") from err
        finally:
            del trainer
            ref_model = None
            gc.collect()
            if use_cuda:
                torch.cuda.empty_cache()

    strip_trl_patches(model)  # its closures keep the trainer's memory alive until here
    release_freed_memory()  # the reference, gradients, Adam's moments, activations
    if use_cache is not None:
        model.config.use_cache = use_cache
    model.eval()
    _check_finite(model, step, chunk)
    record = step_record(history, step=step, config=config, chunk=chunk)
    record.update(
        examples=examples,
        train_steps=train_steps,
        seconds=round(time.perf_counter() - start, 3),
    )
    record["metrics"]["examples_in"] = len(chunk.rows)
    if method.needs_reference:
        record["metrics"]["reference"] = "M0" if step == 1 else f"M{step - 1}"
    return model, record


def describe_step(record: dict[str, Any]) -> str:
    """One line for a finished step's record: what a user reads after ``harness build``."""
    metrics = record.get("metrics") or {}
    parts = [f"{record.get('train_steps')} optimizer steps on {record.get('examples')} examples"]
    for label, key in (("loss", "loss"), ("margin", "rewards_margins"), ("accuracy", "rewards_accuracies")):
        if record.get(key) is not None:
            parts.append(f"{label} {record[key]:.3f}")
    for name, made in (metrics.get("on_policy") or {}).items():
        dropped = f"{made['dropped_equal']} answers equal to the label"
        if made.get("dropped_empty"):
            dropped += f" and {made['dropped_empty']} empty ones"
        parts.append(
            f"{name}: {made['pairs']} on-policy pairs ({dropped} dropped, "
            f"{made['generated']} generated, {made['cached']} cached)"
        )
    return (
        f"align step {record.get('step')} ({record.get('method')}, {record.get('chunk')}): "
        + ", ".join(parts)
        + f", {record.get('seconds', 0.0):.1f} s"
    )


def adapter_config(config: AlignConfig) -> Any:
    """PEFT's config for the recipe's adapter (LoRA or IA3); None for a full fine-tune."""
    if config.lora is not None:
        from peft import LoraConfig

        return LoraConfig(
            r=config.lora.r,
            lora_alpha=config.lora.alpha,  # type: ignore[arg-type]  # PEFT annotates int, takes float
            lora_dropout=config.lora.dropout,
            target_modules=config.lora.target_modules,
            bias="none",
            task_type="CAUSAL_LM",
        )
    if config.ia3 is not None:
        from peft import IA3Config

        return IA3Config(
            target_modules=config.ia3.target_modules,
            feedforward_modules=config.ia3.feedforward_modules,
            task_type="CAUSAL_LM",
        )
    return None


def frozen_copy(model: Any) -> Any:
    """An independent, frozen, eval-mode copy (the DPO reference held in memory)."""
    strip_trl_patches(model)
    ref = copy.deepcopy(model)
    ref.eval()
    ref.requires_grad_(False)
    return ref


def step_record(
    history: list[dict[str, Any]], *, step: int, config: AlignConfig, chunk: Chunk
) -> dict[str, Any]:
    """One ``align_steps`` row: the last logged window of TRL's metrics, plus all its logs."""
    method: AlignMethod = config.trainer
    logs = [h for h in history if "loss" in h and "train_runtime" not in h]
    summary: dict[str, Any] = next((h for h in reversed(history) if "train_runtime" in h), {})
    last = logs[-1] if logs else {}
    record: dict[str, Any] = {
        "step": step,
        "method": config.method,
        "chunk": chunk.name,
        "lora": config.lora is not None,
    }
    for key, column in RECORD_KEYS.items():
        value = last.get(key)
        record[column] = float(value) if isinstance(value, int | float) else None
    record["metrics"] = {
        "log_history": [_jsonable(h) for h in logs],
        "train": _jsonable(summary),
        "first": _jsonable({k: logs[0].get(k) for k in RECORD_KEYS} if logs else {}),
        "sources": chunk.sources,
        "lora": config.lora.model_dump() if config.lora is not None else None,
        "ia3": config.ia3.model_dump() if config.ia3 is not None else None,
        "beta": config.beta,
        "learning_rate": config.learning_rate,
        **config.options.model_dump(),  # the method's own settings (DPO: loss_type, ...)
        # Its per-step metrics (KTO's kl, ORPO's nll_loss and log_odds_ratio...), last window.
        "method_metrics": {k: _jsonable(last.get(k)) for k in method.metrics},
        "trainer": method.name,
    }
    return record


# --- guards and helpers ----------------------------------------------------------------------


def _trl_args(config: AlignConfig, trl_config_class: type) -> dict[str, Any]:
    """``config.trl_kwargs()`` under the names this transformers version uses."""
    import dataclasses

    kwargs = config.trl_kwargs()
    names = {f.name for f in dataclasses.fields(trl_config_class)}
    if "activation_checkpointing" in names:  # transformers >= 5.x: the old name warns
        kwargs["activation_checkpointing"] = kwargs.pop("gradient_checkpointing")
    return kwargs


def _check_tokenizer(tokenizer: Any, sources: list[LoadedSource]) -> None:
    if any(s.conversational for s in sources) and not getattr(tokenizer, "chat_template", None):
        raise HarnessError(
            "align: conversational preference data needs a chat template, and this model's "
            "tokenizer has none",
            "use standard prompt/chosen/rejected strings or a tokenizer with a chat template",
        )
    kinds = {s.conversational for s in sources}
    if len(kinds) > 1:
        raise HarnessError(
            "align: the data sources mix conversational and standard (string) formats",
            "convert them to one format",
        )


class _Progress(TrainerCallback):
    """Reports every optimizer step: long CPU training must not look hung."""

    def __init__(self, step: int, report: Callable[[int, int, int], None]):
        self.step = step
        self.report = report

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.report(self.step, state.global_step, state.max_steps)


class _NaNGuard(TrainerCallback):
    """Stop at the first non-finite logged loss (the run is meaningless after it)."""

    def __init__(self, step: int):
        self.step = step

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        loss = (logs or {}).get("loss")
        if isinstance(loss, float) and not math.isfinite(loss):
            raise AlignmentError(
                f"align step {self.step}: loss is {loss} at optimizer step {state.global_step}; "
                "lower learning_rate, raise beta, or check the data for empty completions"
            )


def _check_finite(model: Any, step: int, chunk: Chunk) -> None:
    import torch

    for name, param in model.named_parameters():
        if not torch.isfinite(param).all():
            raise AlignmentError(
                f"align step {step} ({chunk.name}): parameter {name} has NaN/inf after training; "
                "lower learning_rate"
            )


def _oom_message(step: int, chunk: Chunk, config: AlignConfig) -> str:
    return (
        f"align step {step} ({chunk.name}): out of memory with batch "
        f"{config.per_device_train_batch_size}, max_length {config.max_length}; lower "
        "per_device_train_batch_size (raise gradient_accumulation_steps), lower max_length, "
        "use lora, gradient_checkpointing or precompute_ref_log_probs"
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)
