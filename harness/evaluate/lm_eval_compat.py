"""The one place that touches lm-eval internals beyond ``simple_evaluate``'s signature.

lm-eval 0.4 gives no public call for "the documents a task scores" or "the hash it logs for a
document", and its ``samples=`` argument has two sharp edges. Everything the harness relies on
is here, so an upgrade that moves it fails the boundary tests loudly, and not as silently
wrong partitions, question ids or shots: ``test_chosen_questions_are_the_scored_ones_with_lm_evals_hash``
(``tests/test_selection.py``) and, for reused tasks, ``test_tasks_are_built_once_per_process_and_reuse_gives_fresh_numbers``
(``tests/test_evaluate_run.py``), and for the machine's description
``test_the_machine_is_described_once_per_process`` (the same file), and for picking a task's
chosen documents ``test_chosen_documents_are_upstreams_without_reading_the_rest`` (the same file),
and for prompt templates ``test_prompt_templates_are_compiled_once_with_the_same_prompts`` (the
same file), and for requests and tokens reused across models
``test_the_request_internals_reuse_relies_on_are_lm_evals`` (the same file).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from lm_eval.tasks import TaskManager


class ReusingTaskManager(TaskManager):
    """lm-eval's ``TaskManager`` that builds each task list once per process and hands the
    same ``Task`` objects out again.

    Building a task reads its dataset and runs its ``process_docs`` (1-2 s per call of
    ``simple_evaluate`` on the demo suite, measured), and a search calls ``simple_evaluate``
    for every rung, confirmation and reference model.
    ``simple_evaluate`` loads through :meth:`load` and then sets what a run changes: the
    shots (when the run names them), the few-shot seed (which re-seeds the sampler), and the
    requests, which ``build_all_requests`` rebuilds. The one thing it leaves as the last run
    set it is ``num_fewshot`` when a run names none, so each reuse restores every task's
    shots to what a fresh build has. (``gen_kwargs`` and ``predict_only`` would also persist;
    the harness passes neither.)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._built: dict[tuple[str, ...], tuple[Any, dict[str, Any]]] = {}

    def load(self, task_list: Any) -> Any:
        specs = task_list if isinstance(task_list, list) else [task_list]
        if not all(isinstance(spec, str) for spec in specs):
            return super().load(task_list)
        key = tuple(specs)
        if key not in self._built:
            loaded = super().load(list(specs))
            shots = {name: task.get_config("num_fewshot") for name, task in loaded["tasks"].items()}
            self._built[key] = (loaded, shots)
            for task in leaf_tasks(loaded["tasks"]).values():
                read_only_chosen_documents(task)
                requests_built_once(task)
        loaded, shots = self._built[key]
        for name, task in loaded["tasks"].items():
            task.set_config(key="num_fewshot", value=shots[name])
        # Fresh dicts (the Tasks and Groups inside are the reused ones): callers may edit them.
        return {field: dict(value) for field, value in loaded.items()}


# Off only for a benchmark's "before" side (bench.requests): requests built and tokenised anew
# on every call, as lm-eval does.
REUSE_REQUESTS = True


class ReusesEncodings:
    """Mixin for lm-eval's ``HFLM``: ``_encode_pair`` (``TemplateLM``'s tokenisation of one
    request, which ``loglikelihood`` calls for each) answered from the process's memory of
    this tokenizer's encodings (:mod:`harness.evaluate.encodings`), computed by lm-eval's own on
    a miss, so the tokens are always lm-eval's."""

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        from harness.evaluate.encodings import encodings_for, tokenizer_fingerprint

        upstream = super()._encode_pair  # type: ignore[misc]
        if not REUSE_REQUESTS:
            return upstream(context, continuation)  # type: ignore[no-any-return]
        lm: Any = self
        key = (
            tokenizer_fingerprint(lm.tokenizer),
            lm.backend,
            getattr(lm, "add_bos_token", None),
            getattr(lm, "prefix_token_id", None),
        )
        memory = encodings_for(key)
        found = memory.get(context, continuation)
        if found is not None:
            return found
        context_enc, continuation_enc = upstream(context, continuation)
        memory.put(context, continuation, context_enc, continuation_enc)
        return list(context_enc), list(continuation_enc)


def read_only_chosen_documents(task: Any) -> None:
    """Give one task a ``doc_iterator`` that, for ``samples=``, reads only those documents.

    lm-eval's own decodes every document of the split to keep the chosen ones (``i in samples``
    over all of them), twice per ``simple_evaluate`` (requests, then metrics): 3.3 s of a
    25 s rung on the demo suite, whose HellaSwag split has 10,042 documents (measured). This
    yields the same ``(position, document)`` pairs, in the same order, reading only those.
    Without ``samples`` (lm-eval's ``limit``), it is lm-eval's own.
    """
    from lm_eval import utils

    upstream = task.doc_iterator

    def doc_iterator(
        *, rank: int = 0, limit: int | None = None, world_size: int = 1, samples: list[int] | None = None
    ) -> Iterator[tuple[int, Any]]:
        if not samples:
            return upstream(rank=rank, limit=limit, world_size=world_size, samples=samples)
        docs = task.eval_docs
        n = len(docs)
        if not all(e < n for e in samples):  # lm-eval asserts the same
            raise AssertionError(f"samples must be below the number of documents, {n}")
        chosen = sorted({i for i in samples if i >= 0})  # upstream keeps split order, once each
        return utils.create_iterator(
            enumerate(docs[i] for i in chosen), rank=int(rank), limit=None, world_size=int(world_size)
        )

    task.doc_iterator = doc_iterator


# Question sets whose requests a task keeps (a study uses a few: each rung, the held-out set).
KEPT_REQUEST_SETS = 8


def _rng_states(task: Any) -> tuple[Any, ...]:
    """The few-shot random generators' states: with the settings, they decide the contexts."""
    sampler = getattr(task, "sampler", None)
    return (
        task.fewshot_rnd.getstate() if getattr(task, "fewshot_rnd", None) is not None else None,
        sampler.rnd.getstate() if sampler is not None and getattr(sampler, "rnd", None) is not None else None,
    )


def _set_rng_states(task: Any, states: tuple[Any, ...]) -> None:
    if states[0] is not None:
        task.fewshot_rnd.setstate(states[0])
    if states[1] is not None:
        task.sampler.rnd.setstate(states[1])


def requests_built_once(task: Any) -> None:
    """Give one task a ``build_all_requests`` that builds each set of requests once.

    lm-eval rebuilds a task's requests (few-shot contexts, prompts, ``Instance`` objects) on
    every ``simple_evaluate``, and every trial of a study asks for the same ones: each rung's
    questions and the held-out set, at the same shots, from a sampler ``simple_evaluate`` has
    just re-seeded. The requests are a function of the task's settings, the questions and the
    few-shot generators' states, so the same key gives the same requests: they are kept (the
    last :data:`KEPT_REQUEST_SETS` sets), handed out again with their answers cleared
    (``resps``, ``filtered_resps``: what ``evaluate`` fills), and the generators are left in
    the state a build would leave them. lm-eval's own ``cache_requests`` is keyed by the task
    name alone and ignores ``samples=``, so it cannot serve a study's question sets.
    """
    from collections import OrderedDict

    upstream = task.build_all_requests
    built: OrderedDict[tuple[Any, ...], tuple[list[Any], tuple[Any, ...]]] = OrderedDict()

    def build_all_requests(**kwargs: Any) -> None:
        if kwargs.get("cache_requests") or kwargs.get("rewrite_requests_cache") or not REUSE_REQUESTS:
            return upstream(**kwargs)
        samples = kwargs.get("samples")
        key = (
            task.config.num_fewshot,
            hash(_rng_states(task)),
            kwargs.get("limit"),
            tuple(samples) if samples is not None else None,
            kwargs.get("rank", 0),
            kwargs.get("world_size", 1),
            kwargs.get("system_instruction"),
            bool(kwargs.get("apply_chat_template")),
            bool(kwargs.get("fewshot_as_multiturn")),
            kwargs.get("chat_template") is not None,
            kwargs.get("tokenizer_name", ""),
        )
        found = built.get(key)
        if found is None:
            upstream(**kwargs)
            built[key] = (list(task._instances), _rng_states(task))
            while len(built) > KEPT_REQUEST_SETS:
                built.popitem(last=False)
            return None
        built.move_to_end(key)
        instances, states = found
        for instance in instances:  # what evaluate() fills in; the rest is the request
            instance.resps = []
            instance.filtered_resps = {}
        task._instances = list(instances)
        _set_rng_states(task, states)
        return None

    task.build_all_requests = build_all_requests


_described: dict[str, Any] = {}  # add_env_info's output, computed once per process


def _add_env_info_once(storage: dict[str, Any]) -> None:
    from lm_eval.loggers.utils import add_env_info

    if not _described:
        add_env_info(_described)
    storage.update(copy.deepcopy(_described))


_commit: list[str | None] = []  # get_git_commit_hash's answer, asked once per process


def _git_commit_once() -> str | None:
    """lm-eval's ``get_git_commit_hash`` without its noise: it runs ``git describe`` with the
    terminal as stderr, so every call outside a git checkout printed ``fatal: not a git
    repository``; here git's stderr is discarded and the answer (the same value, or lm-eval's
    own fallback of reading ``.git`` under the working directory) is kept for the process."""
    import subprocess

    from lm_eval.loggers.utils import get_commit_from_path

    if not _commit:
        try:
            out = subprocess.run(
                ["git", "describe", "--always"], capture_output=True, check=True, timeout=10
            ).stdout
            _commit.append(out.strip().decode())
        except (subprocess.SubprocessError, OSError):  # no checkout, or no git at all
            _commit.append(get_commit_from_path(os.getcwd()))
    return _commit[0]


@contextmanager
def machine_described_once() -> Iterator[None]:
    """Within the context, ``simple_evaluate`` reuses the process's first description of the
    machine (and of the working directory's git commit) instead of describing it again on
    every call.

    ``simple_evaluate`` ends with ``add_env_info``: torch's ``collect_env``, which shells out
    to pip, compilers and ``nvidia-smi`` (0.5-0.6 s per call on 2 CPU cores, measured), and a
    trial calls ``simple_evaluate`` once per rung, confirmation and few-shot setting; before it,
    ``get_git_commit_hash`` shells out to git (and let git print ``fatal: not a git repository``
    on the console outside a checkout: :func:`_git_commit_once`). The machine does not change
    within a process; the results keep the same fields. The swaps are of the names
    ``lm_eval.evaluator`` calls, and are undone when the context closes.
    """
    import lm_eval.evaluator as evaluator

    upstream = evaluator.add_env_info, evaluator.get_git_commit_hash
    evaluator.add_env_info, evaluator.get_git_commit_hash = _add_env_info_once, _git_commit_once
    try:
        yield
    finally:
        evaluator.add_env_info, evaluator.get_git_commit_hash = upstream


@lru_cache(maxsize=4096)
def _compiled_template(template: str) -> Any:
    from lm_eval import utils

    return utils.env.from_string(template)


def _apply_compiled_template(template: str, doc: dict[str, Any]) -> str:
    return str(_compiled_template(template).render(**doc))


@contextmanager
def templates_compiled_once() -> Iterator[None]:
    """Within the context, lm-eval renders a task's Jinja prompt templates from one compiled
    copy each instead of compiling the template again for every document.

    ``lm_eval.utils.apply_template`` compiles its template on every call, and a task calls it
    for each document's text, target and choices: 1,190 compilations in a warm three-rung
    trial of the demo suite, 0.8 s of its 23 s under a profiler, while rendering took 0.05 s
    (measured). The same environment compiles the same source to the same template, so the
    prompts are identical. The swap is of the name ``lm_eval.api.task`` calls through
    ``lm_eval.utils``, and is undone when the context closes.
    """
    from lm_eval import utils

    upstream = utils.apply_template
    utils.apply_template = _apply_compiled_template
    try:
        yield
    finally:
        utils.apply_template = upstream


def doc_hash(doc: Any) -> str:
    """The ``doc_hash`` lm-eval logs for a document (``evaluator.evaluate``, ``log_samples``)."""
    from lm_eval.utils import handle_non_serializable, hash_string

    return hash_string(json.dumps(doc, indent=2, default=handle_non_serializable, ensure_ascii=False))


def leaf_tasks(task_dict: Mapping[Any, Any]) -> dict[str, Any]:
    """Flatten ``get_task_dict``'s nesting (groups map to dicts of their members) to name -> Task."""
    from lm_eval.api.task import Task

    leaves: dict[str, Any] = {}
    for value in task_dict.values():
        if isinstance(value, Mapping):
            leaves.update(leaf_tasks(value))
        elif isinstance(value, Task):
            leaves[value.task_name] = value
    return leaves


def task_doc_hashes(
    names: Sequence[str], task_manager: Any, appended: Mapping[str, str] | None = None
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Leaf task name -> the hash of each document it scores, in lm-eval's doc order (doc_id);
    and, for the tasks in ``appended`` (task -> a split joined after the evaluated one), how
    many of those documents come from the appended split (the last ones)."""
    from lm_eval.tasks import get_task_dict

    from harness.evaluate.datasources import datasets_bars_off

    with datasets_bars_off():  # the first load of a task's data happens here, before any scoring
        tasks = leaf_tasks(get_task_dict(list(names), task_manager))
    hashes = {name: [doc_hash(doc) for doc in task.eval_docs] for name, task in tasks.items()}
    tails: dict[str, int] = {}
    for name, split in (appended or {}).items():
        if name in tasks:
            task = tasks[name]
            docs = task.dataset[split]
            process = task.config.process_docs
            tails[name] = len(process(docs) if process is not None else docs)
    return hashes, tails


def samples_argument(questions: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    """``simple_evaluate(samples=...)`` for chosen doc ids.

    lm-eval maps the k-th scored document back to ``indices[k]`` while it iterates the task's
    documents in order, so the ids must be sorted or logged doc_ids are wrong; and an empty list
    means "every document", so a task with nothing chosen must not be run at all (callers drop it).
    """
    out = {}
    for task, ids in questions.items():
        if not ids:
            raise ValueError(f"no questions chosen for {task}: lm-eval would score all of them")
        out[task] = sorted(set(int(i) for i in ids))
    return out


def task_requests(names: Sequence[str], task_manager: Any, num_fewshot: int, limit: int) -> list[Any]:
    """The ``Instance`` requests ``simple_evaluate`` would send for the first ``limit`` documents
    of each leaf of ``names`` at ``num_fewshot`` shots, with its default few-shot seed: what
    the benchmark times two language models on, so both see exactly the same requests."""
    from lm_eval.evaluator import DEFAULT_OTHER_SEED  # type: ignore[attr-defined]
    from lm_eval.tasks import get_task_dict

    requests: list[Any] = []
    for task in leaf_tasks(get_task_dict(list(names), task_manager)).values():
        if task.get_config("num_fewshot") != 0 or num_fewshot == 0:  # as simple_evaluate does
            task.set_config(key="num_fewshot", value=num_fewshot)
        task.set_fewshot_seed(seed=DEFAULT_OTHER_SEED)
        task.build_all_requests(limit=limit, rank=0, world_size=1)
        requests.extend(task.instances)
    return requests
