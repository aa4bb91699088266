"""Preference data for the alignment stage: loading and checking sources.

Formats are TRL's preference formats: ``prompt``/``chosen``/``rejected``, either *standard*
(strings) or *conversational* (lists of ``{"role", "content"}`` messages, rendered with the
model's chat template by TRL); ``prompt`` may be left implicit in conversational data (TRL
extracts the shared prefix of ``chosen`` and ``rejected``).

A source (:class:`~harness.align.config.PreferenceSource`) is a local ``.jsonl``/``.json``/
``.parquet`` file, a ``save_to_disk`` folder, a hub id (from the local HF cache when offline),
or ``demo:<set>``: a set built here by the *seed recipe* (gold answer = chosen, a wrong option
= rejected, near-duplicates removed) from the offline QA datasets that the leaderboard does not
score (SciQ, OpenBookQA, PIQA, Social-IQA, CommonsenseQA), decontaminated against the scored
ones (ARC, HellaSwag, MMLU) that are available offline; the demo sets are built in
:mod:`harness.align.demo_sets`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.align.config import AlignConfig, PreferenceSource
from harness.align.demo_sets import DEMO_PREFIX, demo_preference_path
from harness.assets.fsutil import read_json
from harness.errors import HarnessError

if TYPE_CHECKING:
    from datasets import Dataset


LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")

# --- loading and checking --------------------------------------------------------------------


@dataclass
class LoadedSource:
    """One source's pairs, ready for TRL, plus what the record needs about it."""

    name: str
    dataset: Dataset
    location: str  # resolved file / folder / hub id
    fingerprint: str  # sha256 of the file(s), or the datasets fingerprint for hub data
    conversational: bool
    # rejected: on_policy: ``rejected`` is the starting model's own answer (harness.align.onpolicy),
    # made when the step runs; the data's own ``rejected`` column, if any, is not used.
    on_policy: bool = False

    def __len__(self) -> int:
        return len(self.dataset)


def load_sources(config: AlignConfig, where: str = "align") -> list[LoadedSource]:
    """Load and check every source of ``config`` (HarnessError naming the problem)."""
    return [load_source(source, where) for source in config.data]


def load_source(source: PreferenceSource, where: str = "align") -> LoadedSource:
    label = f"{where}: data {source.name!r} ({source.path})"
    dataset, location, fingerprint = _read(source, label)
    on_policy = source.rejected == "on_policy"
    conversational = check_preference_columns(dataset, label, on_policy=on_policy)
    if source.limit is not None and len(dataset) > source.limit:
        dataset = dataset.select(range(source.limit))
    return LoadedSource(
        name=str(source.name),
        dataset=dataset,
        location=location,
        fingerprint=fingerprint,
        conversational=conversational,
        on_policy=on_policy,
    )


def check_preference_columns(dataset: Dataset, label: str, *, on_policy: bool = False) -> bool:
    """TRL preference format or HarnessError naming the missing column; True if conversational.

    ``on_policy`` (the source says ``rejected: on_policy``): the model's answer will be
    ``rejected``, so that column may be missing (and is not checked: it is replaced); the label
    ``chosen`` and an explicit ``prompt`` are needed (without ``rejected`` there is no shared
    prefix to find an implicit prompt in).
    """
    columns = set(dataset.column_names)
    has = ", ".join(sorted(columns)) or "none"
    if on_policy:
        if "chosen" not in columns:
            raise HarnessError(
                f"{label}: on-policy pairs need a label column 'chosen' (has: {has})",
                "name the data's answer column 'chosen'; the model's own answer becomes 'rejected'",
            )
        if "prompt" not in columns:
            raise HarnessError(
                f"{label}: on-policy pairs need a 'prompt' column (has: {has})",
                "add the prompt (a string, or the messages before the answer); it cannot be "
                "inferred without a 'rejected' column",
            )
    for column in () if on_policy else ("chosen", "rejected"):
        if column not in columns:
            raise HarnessError(
                f"{label}: missing column {column!r} (has: {has})",
                "preference data needs prompt/chosen/rejected columns (TRL's preference format)",
            )
    if len(dataset) == 0:
        raise HarnessError(f"{label}: the preference set is empty", "give at least one pair")
    first = dataset[0]
    conversational = is_messages(first["chosen"])
    checked = ("chosen",) if on_policy else ("chosen", "rejected")
    for column in checked + (("prompt",) if "prompt" in columns else ()):
        value = first[column]
        if conversational and not is_messages(value):
            raise HarnessError(
                f"{label}: column {column!r} is not a list of {{role, content}} messages while 'chosen' is",
                "use one format for all columns (standard strings or conversational messages)",
            )
        if not conversational and not isinstance(value, str):
            raise HarnessError(
                f"{label}: column {column!r} holds {type(value).__name__}, expected text",
                "use strings (standard) or lists of {role, content} messages (conversational)",
            )
    if "prompt" not in columns and not conversational:
        raise HarnessError(
            f"{label}: missing column 'prompt'",
            "standard (string) preference data needs prompt/chosen/rejected; only "
            "conversational data may leave the prompt implicit",
        )
    return conversational


def is_messages(value: Any) -> bool:
    """A conversational value: a non-empty list of {role, content} messages."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)
    )


def _read(source: PreferenceSource, label: str) -> tuple[Dataset, str, str]:
    from datasets import Dataset, DatasetDict, load_from_disk

    ref = source.path.strip()
    if ref.startswith(DEMO_PREFIX):
        path = demo_preference_path(ref[len(DEMO_PREFIX) :], label)
        return _read_file(path, label), str(path), _sha256(path)
    path = Path(ref).expanduser()
    if path.is_file():
        if path.suffix.lower() not in LOCAL_SUFFIXES:
            raise HarnessError(
                f"{label}: unsupported file type {path.suffix!r}",
                f"use one of {', '.join(LOCAL_SUFFIXES)}",
            )
        return _read_file(path, label), str(path.resolve()), _sha256(path)
    if path.is_dir():
        try:
            loaded = load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as err:
            raise HarnessError(
                f"{label}: folder is not a datasets save_to_disk folder ({err})",
                "give a .jsonl/.parquet file or a folder written by Dataset.save_to_disk",
            ) from None
        if isinstance(loaded, DatasetDict):
            if source.split not in loaded:
                raise HarnessError(
                    f"{label}: no split {source.split!r} (has: {', '.join(loaded)})",
                    "set split: to one of those",
                )
            loaded = loaded[source.split]
        assert isinstance(loaded, Dataset)
        return loaded, str(path.resolve()), loaded._fingerprint
    if ref.startswith(("/", "./", "../", "~")) or ref.endswith(LOCAL_SUFFIXES) or ref.count("/") > 1:
        raise HarnessError(
            f"{label}: file not found",
            "give an existing .jsonl/.parquet file, demo:<set> or a hub id",
        )
    return _read_hub(ref, source.split, label)


def _read_hub(ref: str, split: str, label: str) -> tuple[Dataset, str, str]:
    from datasets import load_dataset

    try:
        dataset = load_dataset(ref, split=split)
    except Exception as err:  # noqa: BLE001 - datasets raises many types (offline, missing split)
        raise HarnessError(
            f"{label}: hub dataset could not be loaded ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:160] if str(err) else ''})",
            "give a local .jsonl/.parquet file or demo:<set>, or a hub id in the local HF cache",
        ) from None
    return dataset, ref, dataset._fingerprint


def _read_file(path: Path, label: str) -> Dataset:
    from datasets import Dataset

    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return Dataset(pq.read_table(path))
        except Exception as err:  # noqa: BLE001 - pyarrow's errors vary by corruption
            raise HarnessError(f"{label}: unreadable parquet ({err})", "rewrite the file") from None
    text = path.read_text(encoding="utf-8")
    rows: list[Any]
    try:
        if suffix == ".json" and text.lstrip().startswith("["):
            rows = json.loads(text)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise HarnessError(
            f"{label}: malformed JSON at line {err.lineno}", "one JSON object per line (JSONL)"
        ) from None
    if rows and not all(isinstance(r, dict) for r in rows):
        raise HarnessError(f"{label}: every row must be a JSON object", "write one object per line")
    if not rows:
        raise HarnessError(f"{label}: the preference set is empty", "give at least one pair")
    return Dataset.from_list(rows)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def count_examples(config: AlignConfig, where: str = "align") -> dict[str, int]:
    """Pairs per source (after ``limit``); loads each source once (cheap: local or cached)."""
    return {s.name: len(s) for s in load_sources(config, where)}


def check_align(
    config: AlignConfig, where: str = "recipe", tokenizer_path: str | None = None
) -> dict[str, int]:
    """Every cheap check before any weights are loaded; returns pairs per source.

    Each source loads and has TRL's columns (HarnessError naming the missing one), none is
    empty, all share one format (they are concatenated), T <= the number of pairs, and, given
    the local folder of the tokenizer the build will use, conversational data has a chat
    template to render it.
    """
    return {s.name: len(s) for s in checked_sources(config, where, tokenizer_path)}


def checked_sources(
    config: AlignConfig, where: str = "recipe", tokenizer_path: str | None = None
) -> list[LoadedSource]:
    """:func:`check_align`'s checks; returns the loaded sources."""
    sources = load_sources(config, f"{where}: align")
    if len({s.conversational for s in sources}) > 1:
        raise HarnessError(
            f"{where}: align.data mixes conversational and standard (string) sources",
            "convert them to one format",
        )
    if tokenizer_path is not None and any(s.conversational for s in sources):
        if not has_chat_template(tokenizer_path):
            raise HarnessError(
                f"{where}: align.data is conversational but the merge's tokenizer "
                f"({tokenizer_path}) has no chat template",
                "use standard prompt/chosen/rejected strings, or set chat_template in the merge",
            )
    total = sum(len(s) for s in sources)
    if config.num_steps > total:
        raise HarnessError(
            f"{where}: align.steps = {config.num_steps} but the preference data has only {total} pairs",
            f"use steps <= {total} or add data",
        )
    return sources


def has_chat_template(tokenizer_path: str) -> bool:
    """Whether a local tokenizer folder ships a chat template (files only; hub ids: assume so)."""
    folder = Path(tokenizer_path)
    if not folder.is_dir():
        return True  # a hub id: checked when the tokenizer is loaded
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    return bool(read_json(folder / "tokenizer_config.json").get("chat_template"))
