"""Plan an evaluation: expand suites into lm-eval tasks, resolve their data, write YAML.

Offline variants are generated lm-eval task YAMLs, one per leaf task with local data, in a
content-addressed folder ``<harness home>/lm_eval_tasks/<hash>/`` passed to
``TaskManager(include_path=...)`` (same inputs, same folder; reused across runs). Each file
``include:``-s lm-eval's own YAML and keeps its task name, so prompts, few-shot rules,
metrics and versions are lm-eval's; it overrides only where documents come from::

    include: <site-packages>/lm_eval/tasks/mmlu/default/mmlu_anatomy.yaml
    task: mmlu_anatomy
    tag: null            # membership stays lm-eval's; members resolve to these files by name
    dataset_path: arrow  # a datasets packaged builder reading local files
    dataset_name: null
    dataset_kwargs: {data_files: {test: [...], dev: [...]}}

plus, only where a local copy lacks a split, ``test_split`` / ``fewshot_split`` (and the
unavailable split keys set to null). A group some of whose subtasks have no data is
re-declared the same way (``include:`` of lm-eval's group YAML, ``task:`` narrowed to the
subtasks that have data), so lm-eval still computes the group number over what ran.

Include-path tasks override lm-eval's by name (lm-eval logs one line per override), so the
same folder reproduces a run with the CLI:
``python -m lm_eval --include_path <folder> --tasks <names> --num_fewshot N ...``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from harness.errors import HarnessError
from harness.evaluate.datasources import (
    FAMILIES,
    JOIN_MODULE,
    JOIN_MODULE_TEXT,
    LocalData,
    Origin,
    check_columns,
    find_local,
    hub_offline,
    is_local_builder,
    joined_splits,
    layout_hint,
)
from harness.paths import harness_home

if TYPE_CHECKING:
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._index import Entry

    from harness.evaluate.suites import Part, Suite  # suites use tasks, never the reverse

SourceKind = Literal["local", "hub", "configured", "none"]

# lm-eval's default metrics per output type, for "no data" rows of tasks without metric_list.
_DEFAULT_METRICS = {
    "multiple_choice": ("acc", "acc_norm"),
    "loglikelihood": ("perplexity", "acc"),
    "loglikelihood_rolling": ("word_perplexity", "byte_perplexity", "bits_per_byte"),
    "generate_until": ("exact_match",),
}


@contextmanager
def _quiet_index() -> Iterator[None]:
    # Overriding lm-eval tasks by name is the design; its per-task warning is noise.
    logger = logging.getLogger("lm_eval.tasks._index")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@lru_cache(maxsize=1)
def default_task_manager() -> TaskManager:
    """lm-eval's own task index (built once per process: ~5 s)."""
    from harness.evaluate.lm_eval_compat import ReusingTaskManager

    with _quiet_index():
        return ReusingTaskManager()


def default_task_index() -> dict[str, Entry]:
    return default_task_manager().task_index


@lru_cache(maxsize=8)
def run_task_manager(include_dir: str | None) -> TaskManager:
    """The TaskManager a run uses: lm-eval's tasks overridden by the generated folder. Each
    task is built once per process and reused by every later run (rungs, trials, models)."""
    if include_dir is None:
        return default_task_manager()
    from harness.evaluate.lm_eval_compat import ReusingTaskManager

    with _quiet_index():
        return ReusingTaskManager(include_path=include_dir)


# --------------------------------------------------------------------------- data sources


@dataclass(frozen=True)
class Source:
    """Where one leaf task's documents come from, and the YAML keys that say so."""

    kind: SourceKind
    data_source: str  # Score.data_source
    origin: str = ""  # user | demo | hub | configured (empty when no data)
    local: LocalData | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def _official_fewshot_split(cfg: dict[str, Any]) -> str | None:
    # lm-eval's rule (ConfigurableTask.fewshot_docs): fewshot_split, else fixed samples,
    # else training -> validation -> test.
    if cfg.get("fewshot_split"):
        return cfg["fewshot_split"]
    fewshot_config = cfg.get("fewshot_config") or {}
    if isinstance(fewshot_config, dict) and fewshot_config.get("samples") is not None:
        return None
    return cfg.get("training_split") or cfg.get("validation_split") or cfg.get("test_split")


def _address(cfg: dict[str, Any]) -> str:
    name = cfg.get("dataset_name")
    return f"{cfg.get('dataset_path')}" + (f"/{name}" if name else "")


def resolve_source(
    task: str,
    cfg: dict[str, Any],
    roots: list[tuple[Origin, Path]],
    num_fewshot: int | None,
    extra_splits: Sequence[str] = (),
) -> Source:
    """User data dir -> demo datasets -> hub; "none" when nothing can serve the task.
    ``extra_splits`` are collected from a local copy too when it has them (a study's search split)."""
    path = cfg.get("dataset_path")
    family = FAMILIES.get(path or "")
    if family is None:
        if cfg.get("custom_dataset") is not None or is_local_builder(path):
            return Source("configured", f"as configured: {path or 'custom'}", origin="configured")
        if hub_offline():
            return Source(
                "none",
                f"no data: {task} reads {_address(cfg)} from the Hugging Face Hub, which is "
                "offline here, and the harness knows no local layout for it; run it online",
            )
        return Source("hub", f"hub:{_address(cfg)}", origin="hub")

    name = cfg.get("dataset_name")
    eval_official = cfg.get("test_split") or cfg.get("validation_split")
    fewshot_official = _official_fewshot_split(cfg)
    eval_candidates = [eval_official, *family.substitutes.get(eval_official or "", ())]
    split_keys = ("test_split", "validation_split", "training_split", "fewshot_split")
    wanted = [cfg.get(k) for k in split_keys if cfg.get(k)] + eval_candidates + list(extra_splits)
    local = find_local(family, name, [w for w in wanted if w], [c for c in eval_candidates if c], roots)
    if local is None:
        if hub_offline():
            where = " or ".join(str(r) for _, r in roots) or "no data dir"
            needed = {s for s in (eval_official, fewshot_official) if s}
            return Source(
                "none",
                f"no data: {family.title} ({_address(cfg)}) is not in {where} and the Hugging "
                f"Face Hub is offline; put {layout_hint(family, name, needed)} under "
                "--data-dir or $HARNESS_DATA_DIR",
            )
        return Source("hub", f"hub:{_address(cfg)}", origin="hub")

    check_columns(local, family, name, task)
    eval_split = next(s for s in eval_candidates if s in local.files)
    overrides: dict[str, Any] = {
        "dataset_path": local.builder,
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {s: [str(p) for p in files] for s, files in local.files.items()}},
    }
    # Split keys pointing at splits this copy lacks would make lm-eval index a missing split.
    for key in split_keys:
        if cfg.get(key) and cfg[key] not in local.files:
            overrides[key] = None
    notes: list[str] = []
    if eval_split != eval_official:
        overrides["test_split"] = eval_split
        notes.append(f"{eval_split} split instead of {eval_official}")
    if fewshot_official and fewshot_official not in local.files:
        # Few-shot from the evaluated split; lm-eval drops the question itself from its
        # examples only when fewshot_split == test_split, so set both.
        overrides["fewshot_split"] = eval_split
        overrides["test_split"] = eval_split
        shots = num_fewshot if num_fewshot is not None else (cfg.get("num_fewshot") or 0)
        if shots > 0:
            notes.append(f"few-shot from {eval_split} (excluding the question) instead of {fewshot_official}")
    text = f"{local.origin}:{local.where(eval_split)}"
    if notes:
        text += f" ({'; '.join(notes)})"
    return Source("local", text, local.origin, local, overrides, tuple(notes))


# --------------------------------------------------------------------------- task tree


@dataclass
class Node:
    """A requested lm-eval name expanded: a leaf task, or a group/tag with children."""

    name: str
    kind: Literal["task", "group", "tag"]
    cfg: dict[str, Any]
    yaml_path: Path | None = None
    children: list[Node] = field(default_factory=list)
    source: Source | None = None  # leaves only
    # Leaves of a divided plan: the official split whose documents are appended to the
    # evaluated split's as the study's search part (None: the seeded hash divides).
    search_split: str | None = None

    def leaves(self) -> list[Node]:
        if self.kind == "task":
            return [self]
        return [leaf for c in self.children for leaf in c.leaves()]

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            yield from child.walk()

    @property
    def has_data(self) -> bool:
        return any(leaf.source is not None and leaf.source.kind != "none" for leaf in self.leaves())

    @property
    def complete(self) -> bool:
        return all(leaf.source is not None and leaf.source.kind != "none" for leaf in self.leaves())

    @property
    def effective_cfg(self) -> dict[str, Any]:
        """The leaf's lm-eval config after local-data overrides."""
        return {**self.cfg, **(self.source.overrides if self.source else {})}

    @property
    def eval_split(self) -> str | None:
        """The split a leaf's documents are scored from, after local-data overrides."""
        cfg = self.effective_cfg
        return cfg.get("test_split") or cfg.get("validation_split")

    def metrics(self) -> list[str]:
        """Metric names this node reports (for "no data" rows)."""
        if self.kind == "task":
            listed = [m["metric"] for m in self.cfg.get("metric_list") or [] if isinstance(m, dict)]
            if listed:
                return [str(m) for m in listed]
            return list(_DEFAULT_METRICS.get(self.cfg.get("output_type", ""), ("acc",)))
        aggregated = self.cfg.get("aggregate_metric_list") or []
        if isinstance(aggregated, dict):
            aggregated = [aggregated]
        return [str(m["metric"]) for m in aggregated if isinstance(m, dict)]

    @property
    def aggregates(self) -> bool:
        """Whether lm-eval reports a number for the node itself (tasks, aggregating groups)."""
        return self.kind == "task" or (self.kind == "group" and bool(self.metrics()))

    def headline_metric(self) -> str | None:
        """The headline metric when a suite part names none: lm-eval's first for the node or its tasks."""
        if self.aggregates:
            return self.metrics()[0]
        leaves = [leaf for leaf in self.leaves() if leaf.metrics()]
        return leaves[0].metrics()[0] if leaves else None

    def default_shots(self) -> int | None:
        """The shots lm-eval uses when a run names none: the YAML's ``num_fewshot`` (0 when
        unset); None when the leaf tasks' defaults differ."""
        shots = {int(leaf.cfg.get("num_fewshot") or 0) for leaf in self.leaves()}
        return shots.pop() if len(shots) == 1 else None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def expand(name: str, index: dict[str, Entry], _depth: int = 0) -> Node:
    """lm-eval name -> tree of leaf tasks, following lm-eval's group/tag rules."""
    from lm_eval.tasks._index import Kind

    if _depth > 20:
        raise ValueError(f"lm-eval group nesting too deep at {name}")
    entry = index[name]
    if entry.kind == Kind.TAG:
        children = [expand(t, index, _depth + 1) for t in sorted(entry.tags) if t in index]
        return Node(name, "tag", {}, None, children)
    cfg = dict(entry.cfg or {})
    if entry.kind == Kind.GROUP:
        node = Node(name, "group", cfg, entry.yaml_path)
        node.children = [_expand_member(m, name, index, _depth) for m in _as_list(cfg.get("task"))]
        return node
    return Node(name, "task", cfg, entry.yaml_path)


def _expand_member(member: Any, group: str, index: dict[str, Entry], depth: int) -> Node:
    if isinstance(member, str):
        return expand(member, index, depth + 1)
    if isinstance(member, dict):
        ref = member.get("group") or member.get("task")
        if isinstance(ref, str) and ref in index:
            return expand(ref, index, depth + 1)
        if "group" in member:  # inline group definition
            node = Node(f"{group}::{member['group']}", "group", dict(member))
            node.children = [
                _expand_member(m, node.name, index, depth + 1) for m in _as_list(member.get("task"))
            ]
            return node
        # Inline task: its dict is its whole config; it cannot be redirected, only run.
        return Node(f"{group}::{ref}", "task", dict(member))
    raise TypeError(f"unsupported member {member!r} in lm-eval group {group}")


# --------------------------------------------------------------------------- plan


@dataclass
class Target:
    """One (lm-eval name, num_fewshot) to score, shared by every suite part that asks."""

    node: Node
    num_fewshot: int | None
    suite: str  # the first suite that asked for it

    @property
    def key(self) -> tuple[str, int | None]:
        return (self.node.name, self.num_fewshot)

    def run_names(self) -> list[str]:
        """Names handed to lm-eval: a tag is run as its members that have data."""
        if not self.node.has_data:
            return []
        if self.node.kind == "tag":
            return [leaf.name for leaf in self.node.leaves() if leaf.has_data]
        return [self.node.name]


@dataclass
class Run:
    """One ``simple_evaluate`` call."""

    num_fewshot: int | None
    tasks: list[str]


@dataclass
class EvalPlan:
    suites: list[Suite]
    targets: dict[tuple[str, int | None], Target]
    runs: list[Run]
    include_dir: Path | None
    divided: bool = False  # planned for a study's search / held-out division

    def search_splits(self) -> dict[str, str]:
        """Leaf -> the official split its search part comes from (leaves not listed: hash)."""
        return {
            leaf.name: leaf.search_split
            for target in self.targets.values()
            for leaf in target.node.leaves()
            if leaf.search_split is not None
        }

    def part_target(self, part: Part) -> Target:
        return self.targets[(part.task, part.num_fewshot)]

    def leaves(self, names: Sequence[str] | None = None) -> list[str]:
        """Leaf lm-eval tasks with data, of every run (or of these run names), in plan order."""
        wanted = None if names is None else set(names)
        seen: dict[str, None] = {}
        for target in self.targets.values():
            for node in target.node.walk():
                if wanted is not None and node.name not in wanted:
                    continue
                for leaf in node.leaves():
                    if leaf.has_data:
                        seen.setdefault(leaf.name)
        return list(seen)

    def lm_eval_cli_args(self, run: Run, *, limit: int | None = None, batch_size: int = 8) -> list[str]:
        """Arguments after ``python -m lm_eval --model hf --model_args pretrained=<dir>``."""
        args = ["--tasks", ",".join(run.tasks), "--batch_size", str(batch_size)]
        if run.num_fewshot is not None:
            args += ["--num_fewshot", str(run.num_fewshot)]
        if limit is not None:
            args += ["--limit", str(limit)]
        if self.include_dir is not None:
            args += ["--include_path", str(self.include_dir)]
        return args


def build_plan(
    suites: Sequence[Suite], roots: list[tuple[Origin, Path]], *, divided: bool = False
) -> EvalPlan:
    """Expand suites, resolve every leaf's data (HarnessError on bad local data), write YAML.

    ``divided``: the plan of a study with a search / held-out division. A leaf whose dataset
    has an official search split (``Part.search_split``) then scores that split's documents
    after its evaluated split's, so both parts are one lm-eval task (see ``joined_splits``).
    """
    index = default_task_index()
    targets: dict[tuple[str, int | None], Target] = {}
    requested: dict[str, str | None] = {}  # leaf -> the search_split its parts ask for
    for suite in suites:
        for part in suite.parts:
            key = (part.task, part.num_fewshot)
            if key not in targets:
                targets[key] = Target(expand(part.task, index), part.num_fewshot, suite.name)
            for leaf in targets[key].node.leaves():
                if requested.setdefault(leaf.name, part.search_split) != part.search_split:
                    raise HarnessError(
                        f"{leaf.name} is asked for with search_split {requested[leaf.name]} and "
                        f"{part.search_split} in the same study",
                        "give every suite part that scores it the same search_split",
                    )
    # One resolution per leaf name: the data does not depend on the few-shot count, the
    # notes only mention few-shot sources when some run uses shots.
    max_shots: dict[str, int | None] = {}
    for target in targets.values():
        for leaf in target.node.leaves():
            shots = target.num_fewshot
            prev = max_shots.get(leaf.name, -1)
            max_shots[leaf.name] = None if shots is None or prev is None else max(prev, shots)
    resolved: dict[str, Source] = {}
    search_splits: dict[str, str | None] = {}
    for target in targets.values():
        for leaf in target.node.leaves():
            if leaf.name not in resolved:
                # An inline task (no YAML file of its own) cannot be redirected to local
                # files: it gets the hub or "no data", never a local copy it would not read.
                usable = roots if leaf.yaml_path is not None else []
                shots = max_shots[leaf.name]
                wanted = _wanted_search_split(leaf, requested[leaf.name]) if divided else None
                extra = [wanted] if wanted else []
                leaf.source = resolved[leaf.name] = resolve_source(leaf.name, leaf.cfg, usable, shots, extra)
                named = requested[leaf.name] is not None
                search_splits[leaf.name] = _search_split(leaf, wanted, named, shots) if wanted else None
            leaf.source = resolved[leaf.name]
            leaf.search_split = search_splits[leaf.name]
    include_dir = write_include_dir(_yaml_files(targets.values()))
    return EvalPlan(list(suites), targets, _schedule(list(targets.values())), include_dir, divided)


def _wanted_search_split(leaf: Node, requested: str | None) -> str | None:
    if requested == "hash":
        return None
    family = FAMILIES.get(leaf.cfg.get("dataset_path") or "")
    return requested or (family.search_split if family else None)


def _search_split(leaf: Node, split: str, named: bool, shots: int | None) -> str | None:
    """``split`` if it can be a divided leaf's search part, else None (the seeded hash).

    Only a split disjoint from both the evaluated documents and the few-shot examples will
    do, and appending it must not change what the held-out questions are asked with: so not
    where the few-shot examples are drawn from the evaluated split itself. A split the suite
    asked for by name that cannot be used is bad input; the dataset's default falls back.
    """
    source = leaf.source
    if source is None or source.kind == "none":
        return None
    cfg = leaf.effective_cfg
    evaluated = leaf.eval_split
    fewshot = _official_fewshot_split(cfg)
    used_shots = shots if shots is not None else int(cfg.get("num_fewshot") or 0)
    problem = None
    if source.kind == "configured":
        problem = "its data is configured by its own lm-eval YAML"
    elif source.local is not None and split not in source.local.files:
        problem = f"its local copy ({source.data_source}) has no {split} split"
    elif split == evaluated:
        problem = f"{split} is the split it is scored on"
    elif used_shots > 0 and fewshot in (evaluated, split):
        problem = f"its few-shot examples come from the {fewshot} split"
    if problem is None:
        return split
    if named:
        raise HarnessError(
            f"search_split {split} cannot divide {leaf.name}: {problem}",
            "name another split, or set search_split: hash to divide the scored split by a seeded hash",
        )
    return None


def _schedule(targets: list[Target]) -> list[Run]:
    """Group targets into simple_evaluate calls: one per few-shot count, split on overlap.

    lm-eval refuses a leaf claimed by two top-level items, and a group's results already
    hold its subgroups and subtasks, so nested requests are dropped and overlapping ones
    go to a separate call.
    """
    runs: list[Run] = []
    by_shots: dict[int | None, list[Target]] = {}
    for t in targets:
        if t.run_names():
            by_shots.setdefault(t.num_fewshot, []).append(t)
    for shots, pending in by_shots.items():
        pending = sorted(pending, key=lambda t: -len(t.node.leaves()))
        while pending:
            chosen: list[Target] = []
            used: set[str] = set()
            rest: list[Target] = []
            for t in pending:
                if any(t.node.name in {n.name for n in c.node.walk()} for c in chosen):
                    continue
                leaves = {leaf.name for leaf in t.node.leaves()}
                if leaves & used:
                    rest.append(t)
                    continue
                chosen.append(t)
                used |= leaves
            runs.append(Run(shots, [n for t in chosen for n in t.run_names()]))
            pending = rest
    return runs


def _yaml_files(targets: Sequence[Target] | Any) -> dict[str, str]:
    files: dict[str, dict[str, Any]] = {}
    joined: set[str] = set()  # tasks whose documents joined_splits loads
    for target in targets:
        for node in target.node.walk():
            if node.name in files or node.yaml_path is None:
                continue
            if node.kind == "task" and node.search_split is not None:
                files[node.name] = _joined_task(node)
                joined.add(node.name)
            elif node.kind == "task" and node.source is not None and node.source.kind == "local":
                files[node.name] = {
                    "include": str(node.yaml_path),
                    "task": node.name,
                    "tag": None,
                    **node.source.overrides,
                }
            elif node.kind == "group" and node.has_data and not node.complete:
                files[node.name] = {
                    "include": str(node.yaml_path),
                    "group": node.name,
                    "task": _members_with_data(node),
                }
    texts = {
        f"{name}.yaml": _HEADERS["group" if "group" in body else "task"]
        + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)
        # safe_dump cannot write lm-eval's !function tag: the one line is added as text.
        + (f"custom_dataset: !function {JOIN_MODULE}.{joined_splits.__name__}\n" if name in joined else "")
        for name, body in sorted(files.items())
    }
    if joined:
        texts[f"{JOIN_MODULE}.py"] = JOIN_MODULE_TEXT
    return texts


def _joined_task(node: Node) -> dict[str, Any]:
    """A divided leaf's YAML: lm-eval's task, loaded by ``joined_splits`` with its search
    split's documents after the evaluated split's (local files or the hub alike)."""
    cfg = node.effective_cfg
    load: dict[str, Any] = {"path": cfg.get("dataset_path")}
    if cfg.get("dataset_name"):
        load["name"] = cfg["dataset_name"]
    load.update(cfg.get("dataset_kwargs") or {})
    overrides = {
        k: v
        for k, v in (node.source.overrides if node.source else {}).items()
        if not k.startswith("dataset_")
    }
    return {
        "include": str(node.yaml_path),
        "task": node.name,
        "tag": None,
        **overrides,
        "dataset_kwargs": {"harness_load": load, "harness_join": [node.eval_split, node.search_split]},
    }


_HEADERS = {
    "task": "# Generated by harness.evaluate: lm-eval's own task, documents from local files.\n",
    "group": "# Generated by harness.evaluate: lm-eval's own group, narrowed to subtasks with data.\n",
}


def _members_with_data(group: Node) -> list[Any]:
    members: list[Any] = []
    for child in group.children:
        if not child.has_data:
            continue
        if child.kind == "tag":  # a tag member is narrowed to its tasks that have data
            members += [leaf.name for leaf in child.leaves() if leaf.has_data]
        elif "::" in child.name:  # inline member: keep lm-eval's definition as written
            members.append(child.cfg)
        else:
            members.append(child.name)
    return members


def write_include_dir(files: dict[str, str]) -> Path | None:
    """Write the YAML files into ``<home>/lm_eval_tasks/<content hash>`` (atomic, reused)."""
    if not files:
        return None
    digest = hashlib.sha256()
    for name, text in sorted(files.items()):
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    base = harness_home() / "lm_eval_tasks"
    final = base / digest.hexdigest()[:16]
    if final.is_dir():
        return final
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=base))
    try:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        os.replace(tmp, final)
    except OSError:
        # Another process wrote the same content first: theirs is identical.
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise
    return final
