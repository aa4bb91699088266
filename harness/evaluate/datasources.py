"""Where each lm-eval task's documents come from: user data dir → demo datasets → hub.

Resolution is keyed on lm-eval's own data address, the ``dataset_path`` (+ ``dataset_name``)
of a task config, through :data:`FAMILIES`. Any lm-eval task reading one of these addresses
(``mmlu_anatomy``, every ``mmlu_*`` variant, ``arc_challenge``, ``arc_easy``, ``hellaswag``,
``truthfulqa_mc1/mc2``, ``kmmlu_*``) therefore resolves without being listed by name.

Expected layout of a data dir (``--data-dir`` / ``$HARNESS_DATA_DIR``; the demo datasets of
``harness assets`` use the same rules). ``<name>`` is the lm-eval ``dataset_name`` (an MMLU
subject, ``ARC-Challenge``, a KMMLU subject such as ``Accounting``, ``multiple_choice``),
``<split>`` a split lm-eval reads (``test``, ``dev``, ``validation``, ``train``):

=================  ==========================================================================
dataset            folders tried, in order (first one holding the evaluated split wins)
=================  ==========================================================================
MMLU               ``cais/mmlu/<name>``, ``hails/mmlu_no_train/<name>``, ``mmlu/<name>``
ARC                ``allenai/ai2_arc/<name>``, ``ai2_arc/<name>``
HellaSwag          ``Rowan/hellaswag``, ``Rowan/hellaswag/none``, ``hellaswag/none``, ``hellaswag``
TruthfulQA         ``truthfulqa/truthful_qa/<name>``, ``truthful_qa/<name>``, ``truthfulqa/<name>``
KMMLU              ``HAERAE-HUB/KMMLU/<name>``, ``KMMLU/<name>``, ``kmmlu/<name>``; and the hub
                   repository's own CSVs: ``{HAERAE-HUB/KMMLU,KMMLU,kmmlu}/data/<name>-<split>.csv``
=================  ==========================================================================

Inside such a folder each split is one of (first match wins, one format per task):
``<split>/`` (a ``datasets.save_to_disk`` folder), ``<split>.parquet``,
``<split>-*.parquet`` and ``data/<split>-*.parquet`` (hub shards), ``<split>.arrow``,
``<split>.csv``, ``<split>.jsonl`` / ``<split>.json``. Columns must match the hub
dataset's (see ``Family.columns``); a missing column is a :class:`HarnessError` naming it.

Where a local copy lacks a split lm-eval uses, a registered substitute is used and every
score row says so (ARC: ``validation`` instead of ``test``; few-shot examples drawn from
the evaluated split, never the question itself, instead of ``train``).
"""

from __future__ import annotations

import csv
import json
import os
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from harness.errors import HarnessError
from harness.paths import user_data_dir

Origin = Literal["user", "demo"]

# Per-split file layouts inside a dataset folder, in preference order. "{split}" alone is a
# save_to_disk folder; a glob picks hub-style shards.
SPLIT_LAYOUTS: tuple[str, ...] = (
    "{split}",
    "{split}.parquet",
    "{split}-*.parquet",
    "data/{split}-*.parquet",
    "{split}.arrow",
    "{split}-*.arrow",
    "{split}.csv",
    "{split}.jsonl",
    "{split}.json",
)

# datasets' packaged builder for each file suffix (lm-eval passes dataset_path to load_dataset).
_BUILDERS = {
    ".arrow": "arrow",
    ".parquet": "parquet",
    ".csv": "csv",
    ".jsonl": "json",
    ".json": "json",
}


@dataclass(frozen=True)
class Family:
    """One benchmark dataset as lm-eval addresses it, and where local copies may live."""

    title: str
    # Folders relative to a data root; "{name}" is lm-eval's dataset_name.
    dirs: tuple[str, ...]
    # Columns lm-eval's prompts read, per dataset_name ("*" = any name).
    columns: Mapping[str, tuple[str, ...]]
    # Extra whole-path layouts relative to the root ("{name}", "{split}"), tried after `dirs`.
    files: tuple[str, ...] = ()
    # Official split -> local stand-ins, in preference order (recorded on every row).
    substitutes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The official split a study's search part is drawn from (the evaluated split is then
    # all held out): one disjoint from the evaluated split and from the few-shot examples.
    # None: the study divides the evaluated split by a seeded hash.
    search_split: str | None = None

    def required_columns(self, name: str | None) -> tuple[str, ...]:
        return self.columns.get(name or "", self.columns.get("*", ()))

    def layouts(self, name: str | None) -> list[str]:
        """Every path template (relative to a root) with "{split}" left to fill."""
        label = name or "none"
        out = [f"{d.format(name=label)}/{s}" for d in self.dirs for s in SPLIT_LAYOUTS]
        out += [f.format(name=label, split="{split}") for f in self.files]
        return out


_MMLU = Family(
    title="MMLU",
    dirs=("cais/mmlu/{name}", "hails/mmlu_no_train/{name}", "mmlu/{name}"),
    columns={"*": ("question", "choices", "answer")},
    search_split="validation",  # scored on test, few-shot from dev
)

# Keyed by lm-eval's dataset_path: two MMLU addresses share one layout (same schema).
FAMILIES: dict[str, Family] = {
    "cais/mmlu": _MMLU,
    "hails/mmlu_no_train": _MMLU,
    "allenai/ai2_arc": Family(
        title="ARC",
        dirs=("allenai/ai2_arc/{name}", "ai2_arc/{name}"),
        columns={"*": ("question", "choices", "answerKey")},
        substitutes={"test": ("validation",)},
        search_split="validation",  # scored on test, few-shot from train
    ),
    "Rowan/hellaswag": Family(
        title="HellaSwag",
        dirs=("Rowan/hellaswag", "Rowan/hellaswag/{name}", "hellaswag/{name}", "hellaswag"),
        columns={"*": ("activity_label", "ctx_a", "ctx_b", "endings", "label")},
    ),
    "truthfulqa/truthful_qa": Family(
        title="TruthfulQA",
        dirs=("truthfulqa/truthful_qa/{name}", "truthful_qa/{name}", "truthfulqa/{name}"),
        columns={
            "multiple_choice": ("question", "mc1_targets", "mc2_targets"),
            "generation": ("question", "best_answer", "correct_answers", "incorrect_answers"),
        },
    ),
    "HAERAE-HUB/KMMLU": Family(
        title="KMMLU",
        dirs=("HAERAE-HUB/KMMLU/{name}", "KMMLU/{name}", "kmmlu/{name}"),
        files=(
            "HAERAE-HUB/KMMLU/data/{name}-{split}.csv",
            "KMMLU/data/{name}-{split}.csv",
            "kmmlu/data/{name}-{split}.csv",
        ),
        columns={"*": ("question", "answer", "A", "B", "C", "D")},
        search_split="train",  # scored on test, few-shot from dev
    ),
}

# dataset_path values that already name local data (packaged builders), run as configured.
_LOCAL_BUILDERS = frozenset({"arrow", "parquet", "csv", "json", "text", "pandas", "imagefolder"})


@dataclass(frozen=True)
class LocalData:
    """A task's splits found on disk: what the generated lm-eval YAML points at."""

    origin: Origin
    root: Path
    builder: str  # datasets packaged builder: arrow | parquet | csv | json
    files: dict[str, tuple[Path, ...]]  # split -> files, only splits that exist

    def where(self, split: str) -> str:
        """Short location of one split for data_source strings."""
        first = self.files[split][0]
        # save_to_disk shards name the folder; a file names itself.
        shown = first.parent if first.name.startswith("data-") and self.builder == "arrow" else first
        rel = shown.relative_to(self.root) if shown.is_relative_to(self.root) else shown
        return str(rel) if self.origin == "demo" else str(shown)


def data_roots(data_dir: Path | None) -> list[tuple[Origin, Path]]:
    """The local roots to search, in order: the user's data dir, then the demo datasets."""
    roots: list[tuple[Origin, Path]] = []
    user = data_dir if data_dir is not None else user_data_dir()
    if user is not None:
        user = Path(user).expanduser()
        if not user.is_dir():
            raise HarnessError(
                f"data dir {user} is not a folder",
                "pass the folder holding your datasets (or unset HARNESS_DATA_DIR)",
            )
        roots.append(("user", user))
    if (demo := demo_datasets_root()) is not None:
        roots.append(("demo", demo))
    return roots


def demo_datasets_root() -> Path | None:
    """Root of the extracted demo datasets, None when not prepared (or assets unavailable)."""
    try:
        from harness.assets import demo_datasets_dir
    except ImportError:
        return None
    return demo_datasets_dir()


def _split_files(root: Path, template: str, split: str) -> tuple[Path, ...]:
    rel = template.format(split=split)
    if "*" in rel:
        return tuple(sorted(p for p in root.glob(rel) if p.is_file()))
    path = root / rel
    if path.is_dir():
        # A save_to_disk folder: its Arrow shards, in order.
        return tuple(sorted(path.glob("*.arrow")))
    return (path,) if path.is_file() else ()


def _builder_for(files: tuple[Path, ...]) -> str | None:
    suffixes = {p.suffix for p in files}
    if len(suffixes) != 1:
        return None
    return _BUILDERS.get(suffixes.pop())


def find_local(
    family: Family,
    name: str | None,
    wanted: Iterable[str],
    eval_splits: Iterable[str],
    roots: list[tuple[Origin, Path]],
) -> LocalData | None:
    """First layout, over roots in order, holding one of ``eval_splits``; None if none does.

    ``wanted`` are all split names worth collecting (official ones and substitutes).
    """
    wanted = list(dict.fromkeys(wanted))
    eval_splits = list(eval_splits)
    for origin, root in roots:
        for template in family.layouts(name):
            files = {s: _split_files(root, template, s) for s in wanted}
            files = {s: f for s, f in files.items() if f}
            if not any(s in files for s in eval_splits):
                continue
            builders = {_builder_for(f) for f in files.values()}
            if len(builders) != 1 or None in builders:
                continue
            return LocalData(origin, root, builders.pop() or "", files)
    return None


def read_columns(path: Path) -> list[str]:
    """Column names of one data file without loading it."""
    suffix = path.suffix
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    if suffix == ".arrow":
        import datasets

        return list(datasets.Dataset.from_file(str(path)).column_names)
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            return next(csv.reader(fh), [])
    with path.open(encoding="utf-8") as fh:
        if suffix == ".jsonl":
            first = fh.readline()
            return list(json.loads(first)) if first.strip() else []
        data = json.load(fh)
        row = data[0] if isinstance(data, list) and data else data
        return list(row) if isinstance(row, dict) else []


def check_columns(local: LocalData, family: Family, name: str | None, task: str) -> None:
    """Refuse a local copy that lacks a column lm-eval's prompt reads (one line, exit 2)."""
    required = family.required_columns(name)
    for split, files in local.files.items():
        try:
            present = set(read_columns(files[0]))
        except Exception as err:  # unreadable file: the user's to fix
            raise HarnessError(
                f"cannot read {files[0]} ({type(err).__name__}: {err})",
                f"fix or remove it; it was found as the {split} split of {family.title}",
            ) from None
        missing = [c for c in required if c not in present]
        if missing:
            raise HarnessError(
                f"{files[0]} has no column {missing[0]!r} (lm-eval task {task} needs "
                f"{', '.join(required)}; found {', '.join(sorted(present)) or 'none'})",
                f"rename the column or fix the {family.title} files in {local.root}",
            )


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """True when the Hugging Face Hub must not or cannot be reached."""
    if _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("HF_DATASETS_OFFLINE")):
        return True
    return not _hub_reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))


@lru_cache(maxsize=4)
def _hub_reachable(endpoint: str) -> bool:
    # A TCP connect is enough to tell "no network" from "online" before lm-eval would hang
    # on retries; it is asked once per process.
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=3):
            return True
    except OSError:
        return False


def is_local_builder(dataset_path: str | None) -> bool:
    """A task config that already reads local files (packaged builder or a folder)."""
    if not dataset_path:
        return True
    return dataset_path in _LOCAL_BUILDERS or Path(dataset_path).expanduser().is_dir()


def layout_hint(family: Family, name: str | None, splits: Iterable[str]) -> str:
    """Where a user would put the files, for "no data" messages."""
    wanted = sorted(set(splits))
    joined = wanted[0] if len(wanted) == 1 else "{" + ",".join(wanted) + "}"
    if family.files:
        return family.files[0].format(name=name or "none", split=joined)
    return f"{family.dirs[0].format(name=name or 'none')}/{joined}.parquet (or save_to_disk folders)"


# The module lm-eval imports ``custom_dataset`` from (written beside the generated YAML: lm-eval
# resolves ``!function`` relative to the YAML file), and the one function it names.
JOIN_MODULE = "harness_join_splits"
JOIN_MODULE_TEXT = (
    "# Generated by harness.evaluate: the task's documents with a study's search split appended.\n"
    "from harness.evaluate.datasources import joined_splits as joined_splits  # noqa: F401\n"
)


def joined_splits(*, harness_load: Mapping[str, Any], harness_join: Sequence[str], **_: Any) -> Any:
    """lm-eval's ``custom_dataset`` for a divided task: the dataset as lm-eval would load it,
    with the official search split's documents appended to the evaluated split.

    The evaluated split's documents keep their doc ids (0..n-1, the held-out part) and the
    search split's follow them, so one lm-eval task, with its own prompts, few-shot examples
    and group, scores both parts. Other keyword arguments (lm-eval's task metadata) are ignored.
    """
    import datasets

    evaluated, search = harness_join
    kwargs = dict(harness_load)
    if int(datasets.__version__.split(".")[0]) >= 4:
        kwargs.pop("trust_remote_code", None)  # as lm-eval's own download does
    loaded = datasets.load_dataset(**kwargs)
    if search not in loaded:
        raise HarnessError(
            f"the {search} split, a study's search part, is not in {harness_load.get('path')} "
            f"(it has {', '.join(loaded)})",
            "set search_split: hash on this suite part, or add the split to the data",
        )
    loaded[evaluated] = datasets.concatenate_datasets([loaded[evaluated], loaded[search]])
    return loaded


@contextmanager
def datasets_bars_off() -> Iterator[None]:
    """No ``datasets`` progress bars ("Generating test split", "Map") while the harness loads
    or prepares data itself: the search's own progress is the one the user reads. Restored on
    exit when it was on."""
    from datasets.utils import logging as ds_logging

    enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            ds_logging.enable_progress_bar()
