"""Run a plan with lm-eval on an already loaded model and turn its output into Scores."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.evaluate.datasources import data_roots, datasets_bars_off
from harness.evaluate.questions import Partition, Questions
from harness.evaluate.results import Composition, EvalResult, Sample, Score, pooled_stderr
from harness.evaluate.suites import Suite, SuiteRef, resolve_suites
from harness.evaluate.tasks import EvalPlan, Node, Target, build_plan, run_task_manager

if TYPE_CHECKING:
    from harness.evaluate.answers import RequestCache

_NON_METRIC_KEYS = {"alias", "name", "sample_len", "sample_count"}
# The scoring path of a run that asked for stock HFLM (``fast_scoring: false``, --stock-scoring).
STOCK_ASKED_FOR = "stock: asked for (fast_scoring: false or --stock-scoring)"


def plan_evaluation(
    suites: Sequence[SuiteRef], *, data_dir: Path | None = None, divided: bool = False
) -> EvalPlan:
    """Validate suites and resolve every task's data; writes the generated YAML folder.

    Cheap (no model): bad suite names and bad local data fail here, before any heavy work.
    ``divided``: for a study's search / held-out division (official search splits joined in).
    """
    return build_plan(resolve_suites(suites), data_roots(data_dir), divided=divided)


def evaluate_model(
    model: Any,
    tokenizer: Any,
    suites: Sequence[SuiteRef],
    *,
    limit: int | None = None,
    data_dir: Path | None = None,
    batch_size: int = 8,
    progress: bool = True,
    device: str | None = None,
    questions: Questions | None = None,
    partition: Partition = "all",
    cache: RequestCache | None = None,
    plan: EvalPlan | None = None,
    fast: bool = True,
) -> EvalResult:
    """Score a loaded ``PreTrainedModel`` on suites with lm-eval (one HFLM, no reloads).

    ``limit`` caps documents per lm-eval task (quick runs: the first N, as lm-eval's
    ``--limit``). ``questions`` instead names the doc ids of every leaf task to score
    (lm-eval's ``samples=``; see :mod:`harness.evaluate.questions`), and ``partition`` labels
    them. ``cache`` remembers the model's answers (:mod:`harness.evaluate.answers`; one per
    loaded model): a later call with a superset of the questions (the next rung) computes only
    the new ones and gets lm-eval's own numbers for the whole set. Tasks without data anywhere
    yield rows with value None and a ``data_source`` saying why; the rest still runs. ``device`` moves the model there first
    (lm-eval uses the model's own device). ``fast`` scores log-likelihoods with
    :class:`~harness.evaluate.fast_lm.SharedPrefixHFLM` (same numbers, each context run once);
    False uses lm-eval's stock ``HFLM``.
    """
    import lm_eval

    from harness.evaluate.answers import RememberingHFLM
    from harness.evaluate.fast_lm import SharedPrefixHFLM
    from harness.evaluate.lm_eval_compat import machine_described_once, templates_compiled_once

    started = time.perf_counter()
    if questions is not None and limit is not None:
        raise ValueError("give limit or questions, not both")
    if plan is not None and plan.divided and questions is None:
        # Its tasks hold search documents after the evaluated ones: only chosen ids are meaningful.
        raise ValueError("a plan divided for a study scores chosen questions only")
    plan = plan if plan is not None else plan_evaluation(suites, data_dir=data_dir)
    if plan.runs:
        task_manager = run_task_manager(str(plan.include_dir) if plan.include_dir else None)
    if device is not None:
        model.to(device)
    was_training = bool(getattr(model, "training", False))
    results: list[tuple[int | None, dict[str, Any]]] = []
    scoring_path: str | None = None
    try:
        with _progress(progress), machine_described_once(), templates_compiled_once():
            if plan.runs:  # wrapped once for every run; nothing to wrap when nothing has data
                model.eval()
                lm_class = SharedPrefixHFLM if fast else RememberingHFLM
                lm = lm_class(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
                lm.answers = cache
                scoring_path = lm.scoring_path if isinstance(lm, SharedPrefixHFLM) else STOCK_ASKED_FOR
            for run in plan.runs:
                chosen = None
                if questions is not None:
                    chosen = _run_questions(plan, run.tasks, questions)
                    if not chosen:
                        continue
                out = lm_eval.simple_evaluate(
                    model=lm,
                    tasks=list(run.tasks),
                    num_fewshot=run.num_fewshot,
                    limit=limit,
                    samples=chosen,
                    task_manager=task_manager,
                    log_samples=True,  # per-question results: the samples table
                )
                if out is not None:
                    results.append((run.num_fewshot, out))
    finally:
        if was_training:
            model.train()
    result = collect(plan, results, partition=partition)
    result.limit = limit
    result.seconds = time.perf_counter() - started
    result.scoring_path = scoring_path if results else None
    return result


def _run_questions(plan: EvalPlan, tasks: Sequence[str], questions: Questions) -> dict[str, list[int]]:
    """lm-eval's ``samples=`` for one run: every leaf of its tasks must have questions (a leaf
    left out would be scored in full), or the run is skipped when none has any."""
    from harness.evaluate.lm_eval_compat import samples_argument

    leaves = plan.leaves(tasks)
    missing = [leaf for leaf in leaves if not questions.get(leaf)]
    if len(missing) == len(leaves):
        return {}
    if missing:
        raise HarnessError(
            f"no questions chosen for {', '.join(missing[:5])} beside others of its group",
            "the task has too few documents for this split; score it without a split (harness eval)",
        )
    return samples_argument({leaf: questions[leaf] for leaf in leaves})


def _silenced(bar: Any) -> Any:
    # Callers pass disable= themselves (HFLM does), so force it rather than default it.
    def make(*args: Any, **kwargs: Any) -> Any:
        kwargs["disable"] = True
        return bar(*args, **kwargs)

    return make


# lm-eval warnings that describe what we do on purpose (pass a loaded model, set the shots
# of every task explicitly): repeated once per trial they bury the search's progress bar.
_EXPECTED_LM_EVAL_WARNINGS = (
    "model kwarg is not of type `str`",
    "Passed an already-initialized model",
    "Overwriting default num_fewshot",
    # A divided task's documents come from harness.evaluate.datasources.joined_splits:
    "Custom kwargs can be passed to `--metadata`",
)


class _DropExpected(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in _EXPECTED_LM_EVAL_WARNINGS)


for _name in ("lm_eval.models.huggingface", "lm_eval.evaluator", "lm_eval.api.task"):
    logging.getLogger(_name).addFilter(_DropExpected())


@contextmanager
def _progress(enabled: bool) -> Iterator[None]:
    """progress=False: silence lm-eval's and datasets' bars for the duration of the call."""
    if enabled:
        yield
        return
    import lm_eval.api.model
    import lm_eval.api.task
    import lm_eval.models.huggingface

    import harness.evaluate.fast_lm

    # lm-eval creates its bars without a switch (task request building), so swap the name
    # its modules import for a disabled one; restored on exit.
    modules = [lm_eval.api.task, lm_eval.api.model, lm_eval.models.huggingface, harness.evaluate.fast_lm]
    saved = [m.tqdm for m in modules]
    try:
        for module, original in zip(modules, saved, strict=True):
            module.tqdm = _silenced(original)
        with datasets_bars_off():
            yield
    finally:
        for module, original in zip(modules, saved, strict=True):
            module.tqdm = original


# --------------------------------------------------------------------------- results


def _number(value: Any) -> float | None:
    """lm-eval values -> float; "N/A", None and NaN -> None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _per_question(value: Any) -> float | None:
    """A per-document metric value as a number; None for what is not one (e.g. BLEU's
    (reference, prediction) pairs, which lm-eval aggregates as a corpus, not as a mean)."""
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def collect_samples(
    outputs: list[tuple[int | None, dict[str, Any]]], nodes: dict[str, Node], partition: Partition = "all"
) -> list[Sample]:
    """lm-eval's logged samples -> one Sample per (task, document, numeric metric)."""
    rows: list[Sample] = []
    for run_shots, out in outputs:
        n_shot = out.get("n-shot", {})
        for task, logged in (out.get("samples") or {}).items():
            node = nodes.get(task)
            split = node.eval_split if node is not None else None
            if node is not None and node.search_split is not None and partition == "search":
                split = node.search_split  # the documents appended after the evaluated split
            shots = n_shot.get(task, run_shots)
            for doc in logged:
                filt = doc.get("filter", "none")
                for metric in doc.get("metrics", ()):
                    value = _per_question(doc.get(metric))
                    if value is None and doc.get(metric) is not None:
                        continue  # not a per-question number
                    rows.append(
                        Sample(
                            task=task,
                            num_fewshot=shots,
                            doc_id=int(doc["doc_id"]),
                            doc_hash=str(doc.get("doc_hash", "")),
                            metric=metric if filt == "none" else f"{metric},{filt}",
                            value=value,
                            split=split,
                            partition=partition,
                        )
                    )
    return rows


def _node_index(plan: EvalPlan) -> dict[str, Node]:
    index: dict[str, Node] = {}
    for target in plan.targets.values():
        for node in target.node.walk():
            index.setdefault(node.name, node)
    return index


def describe(node: Node) -> str:
    """data_source text for a leaf (its own) or a group (summary of its leaves)."""
    if node.kind == "task":
        return node.source.data_source if node.source else ""
    leaves = node.leaves()
    have = [leaf for leaf in leaves if leaf.has_data]
    missing = [leaf for leaf in leaves if not leaf.has_data]
    if not have:
        first = missing[0].source.data_source if missing and missing[0].source else "no data"
        return f"no data: none of {len(leaves)} subtasks has data (e.g. {missing[0].name}: " + (
            first.removeprefix("no data: ") + ")"
        )
    origins = "+".join(sorted({leaf.source.origin for leaf in have if leaf.source}))
    notes = sorted({n for leaf in have if leaf.source for n in leaf.source.notes})
    text = f"{origins}: {len(have)} subtasks"
    if missing:
        shown = ", ".join(leaf.name for leaf in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        text = (
            f"partial: {len(have)} of {len(leaves)} subtasks have data ({origins}); no data for {shown}{more}"
        )
    if notes:
        text += f" ({'; '.join(notes)})"
    return text


def collect(
    plan: EvalPlan, outputs: list[tuple[int | None, dict[str, Any]]], partition: Partition = "all"
) -> EvalResult:
    """lm-eval outputs + plan -> Score rows (no-data rows included) and headline summary."""
    nodes = _node_index(plan)
    suite_of_name: dict[tuple[str, int | None], str] = {}
    for target in plan.targets.values():
        for node in target.node.walk():
            suite_of_name.setdefault((node.name, target.num_fewshot), target.suite)

    result = EvalResult()
    seen: set[tuple[str, str, int | None]] = set()
    # (task, run few-shot) -> {metric: (value, stderr, n)} for headline computations.
    values: dict[tuple[str, int | None], dict[str, tuple[float | None, float | None, int | None]]] = {}
    # (task, run few-shot) -> the few-shot count lm-eval used (what the samples rows carry).
    shots_of: dict[tuple[str, int | None], int | None] = {}

    def add(score: Score, run_shots: int | None) -> None:
        key = (score.task, score.metric, run_shots)
        if key in seen:
            return
        seen.add(key)
        result.scores.append(score)
        values.setdefault((score.task, run_shots), {})[score.metric] = (
            score.value,
            score.stderr,
            score.n_samples,
        )
        shots_of.setdefault((score.task, run_shots), score.num_fewshot)

    for run_shots, out in outputs:
        n_samples = out.get("n-samples", {})
        n_shot = out.get("n-shot", {})
        groups = set(out.get("groups", {}))
        for name, version in out.get("versions", {}).items():
            result.task_versions[name] = str(version)
        for name, metrics in out.get("results", {}).items():
            found = nodes.get(name)
            is_group = name in groups or (found is not None and found.kind != "task")
            count = (n_samples.get(name) or {}).get("effective", metrics.get("sample_len"))
            shots = n_shot.get(name, run_shots)
            if is_group and found is not None:
                leaf_shots = {n_shot.get(leaf.name) for leaf in found.leaves() if leaf.has_data}
                shots = leaf_shots.pop() if len(leaf_shots) == 1 else run_shots
            for key, raw in metrics.items():
                if key in _NON_METRIC_KEYS or "," not in key:
                    continue
                metric, filt = key.split(",", 1)
                if metric.endswith("_stderr"):
                    continue
                label = metric if filt == "none" else f"{metric},{filt}"
                add(
                    Score(
                        task=name,
                        metric=label,
                        value=_number(raw),
                        stderr=_number(metrics.get(f"{metric}_stderr,{filt}")),
                        n_samples=int(count) if isinstance(count, int | float) else None,
                        num_fewshot=shots,
                        data_source=describe(found) if found is not None else "",
                        suite=suite_of_name.get((name, run_shots)),
                        aggregate=is_group,
                    ),
                    run_shots,
                )

    # Rows for what had no data anywhere: leaves and groups with no runnable subtask.
    for target in plan.targets.values():
        for node in target.node.walk():
            if node.has_data or node.kind == "tag":
                continue
            for metric in node.metrics():
                add(
                    Score(
                        task=node.name,
                        metric=metric,
                        value=None,
                        num_fewshot=target.num_fewshot,
                        data_source=describe(node),
                        suite=suite_of_name.get((node.name, target.num_fewshot), target.suite),
                        aggregate=node.kind != "task",
                    ),
                    target.num_fewshot,
                )

    for suite in plan.suites:
        _headlines(plan, suite, values, shots_of, result, add)
    result.samples = collect_samples(outputs, nodes, partition)
    result.partition = partition
    return result


def _macro(
    node: Node, metric: str, shots: int | None, values: dict[tuple[str, int | None], dict[str, Any]]
) -> tuple[float | None, float | None, int | None]:
    """Unweighted mean of a metric over the leaves that produced it (stderr of that mean)."""
    # Each leaf's (value, stderr, count) for the metric, where it produced a value.
    got: list[tuple[float, float | None, int | None]] = [
        g
        for leaf in node.leaves()
        if (g := values.get((leaf.name, shots), {}).get(metric)) and g[0] is not None
    ]
    if not got:
        return None, None, None
    mean = sum(g[0] for g in got) / len(got)
    return mean, pooled_stderr([g[1] for g in got]), sum(g[2] or 0 for g in got)


def _composition(
    node: Node,
    metric: str,
    shots: int | None,
    values: dict[tuple[str, int | None], dict[str, Any]],
    shots_of: dict[tuple[str, int | None], int | None],
    by_size: bool,
) -> Composition:
    """The weights with which each leaf task's per-question mean makes a headline number:
    1 for a task, n_task / n for a size-weighted lm-eval group, 1 / tasks for a macro mean.
    Summed over the samples table they give the number back (and a paired comparison its
    per-question differences' weights)."""
    got: list[tuple[str, tuple[float, float | None, int | None]]] = [
        (leaf.name, v)
        for leaf in node.leaves()
        if (v := values.get((leaf.name, shots), {}).get(metric)) and v[0] is not None
    ]
    total = sum(v[2] or 0 for _, v in got) if by_size else len(got)
    if not total:
        return {}
    return {
        (name, metric, shots_of.get((name, shots), shots)): ((v[2] or 0) if by_size else 1) / total
        for name, v in got
    }


def _weights_by_size(node: Node, metric: str) -> bool:
    """lm-eval's rule for a group's number: size-weighted unless its config says otherwise."""
    listed = node.cfg.get("aggregate_metric_list") or []
    for entry in listed if isinstance(listed, list) else [listed]:
        if isinstance(entry, dict) and entry.get("metric") == metric:
            return bool(entry.get("weight_by_size", True))
    return True


def _headlines(
    plan: EvalPlan,
    suite: Suite,
    values: dict[tuple[str, int | None], dict[str, Any]],
    shots_of: dict[tuple[str, int | None], int | None],
    result: EvalResult,
    add: Any,
) -> None:
    summary = result.summary
    sources: dict[str, str] = {}
    for part in suite.parts:
        target: Target = plan.part_target(part)
        node = target.node
        metric = part.metric or node.headline_metric()
        for key, how in (part.headlines or {part.task: "lm_eval"}).items():
            sources[key] = describe(node)
            if metric is None:
                summary.setdefault(key, None)
                continue
            # Tags and non-aggregating groups have no lm-eval number: use the macro mean.
            macro = how == "macro" or not node.aggregates
            by_size = not macro and (node.kind == "task" or _weights_by_size(node, metric))
            parts = _composition(node, metric, part.num_fewshot, values, shots_of, by_size)
            if macro:
                value, stderr, count = _macro(node, metric, part.num_fewshot, values)
                add(
                    Score(
                        task=node.name,
                        metric=f"{metric}_macro",
                        value=value,
                        stderr=stderr,
                        n_samples=count,
                        num_fewshot=part.num_fewshot,
                        data_source=describe(node) + " [unweighted mean over subtasks]",
                        suite=suite.name,
                        aggregate=True,
                    ),
                    part.num_fewshot,
                )
            else:
                value, stderr = values.get((node.name, part.num_fewshot), {}).get(metric, (None, None))[:2]
            summary.setdefault(key, value)
            if value is not None:
                result.summary_parts.setdefault(key, parts)
            result.summary_stderr.setdefault(key, stderr if value is not None else None)
            result.summary_source.setdefault(key, sources[key])
    if suite.total is not None:
        _total(suite, result, sources, add)


def _total(suite: Suite, result: EvalResult, sources: dict[str, str], add: Any) -> None:
    total = suite.total
    assert total is not None
    summary = result.summary
    parts = {k: summary.get(k) for k in total.of}
    have = {k: v for k, v in parts.items() if v is not None}
    missing = [k for k in total.of if k not in have]
    mean = sum(have.values()) / len(have) if have else None
    stderr = pooled_stderr([result.summary_stderr.get(k) for k in have])  # independent benchmarks
    combined: Composition = {}
    for k in have:
        for leaf, weight in result.summary_parts.get(k, {}).items():
            combined[leaf] = combined.get(leaf, 0.0) + weight / len(have)
    result.summary_parts[total.partial_key if missing else total.key] = combined
    # Substitute data (other splits) is named on the total too: it changes comparability.
    substituted = [k for k in have if "instead of" in sources.get(k, "")]
    note = f"; substitute data for {', '.join(substituted)}" if substituted else ""
    if not missing:
        summary[total.key] = mean
        result.summary_stderr[total.key] = stderr
        result.summary_source[total.key] = f"mean of {', '.join(total.of)}{note}"
        add(
            Score(
                task=total.key,
                metric="mean",
                value=mean,
                stderr=stderr,
                data_source=result.summary_source[total.key],
                suite=suite.name,
                aggregate=True,
            ),
            None,
        )
        return
    reasons = "; ".join(f"{k}: {sources.get(k, 'no data')}" for k in missing)
    summary[total.key] = None
    summary[total.partial_key] = mean
    partial_source = f"partial: mean of {', '.join(have) or 'nothing'}; missing {', '.join(missing)}{note}"
    result.summary_stderr[total.key], result.summary_stderr[total.partial_key] = None, stderr
    result.summary_source[total.key] = f"no data: missing parts {', '.join(missing)} ({reasons})"
    result.summary_source[total.partial_key] = partial_source
    add(
        Score(
            task=total.key,
            metric="mean",
            value=None,
            data_source=result.summary_source[total.key],
            suite=suite.name,
            aggregate=True,
        ),
        None,
    )
    add(
        Score(
            task=total.partial_key,
            metric="mean",
            value=mean,
            stderr=stderr,
            data_source=partial_source,
            suite=suite.name,
            aggregate=True,
        ),
        None,
    )
