"""Preference data for the alignment stage: loading, checking, and the seed recipe.

Formats are TRL's preference formats: ``prompt``/``chosen``/``rejected``, either *standard*
(strings) or *conversational* (lists of ``{"role", "content"}`` messages, rendered with the
model's chat template by TRL); ``prompt`` may be left implicit in conversational data (TRL
extracts the shared prefix of ``chosen`` and ``rejected``).

A source (:class:`~harness.align.config.PreferenceSource`) is a local ``.jsonl``/``.json``/
``.parquet`` file, a ``save_to_disk`` folder, a hub id (from the local HF cache when offline),
or ``demo:<set>``: a set built here by the *seed recipe* (gold answer = chosen, a wrong option
= rejected, near-duplicates removed) from the offline QA datasets that the leaderboard does not
score (SciQ, OpenBookQA, PIQA, Social-IQA, CommonsenseQA), decontaminated against the scored
ones (ARC, HellaSwag, MMLU) that are available offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.align.config import AlignConfig, PreferenceSource
from harness.errors import HarnessError
from harness.paths import harness_home

if TYPE_CHECKING:
    from datasets import Dataset

DEMO_PREFIX = "demo:"
# Bump when the seed recipe changes: cached demo sets from another version are rebuilt.
SEED_RECIPE_VERSION = 2
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
    conversational = _is_messages(first["chosen"])
    checked = ("chosen",) if on_policy else ("chosen", "rejected")
    for column in checked + (("prompt",) if "prompt" in columns else ()):
        value = first[column]
        if conversational and not _is_messages(value):
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


def _is_messages(value: Any) -> bool:
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
    return bool(_read_json(folder / "tokenizer_config.json").get("chat_template"))


# --- demo preference sets: the seed recipe on offline QA data ---------------------------------


@dataclass(frozen=True)
class QAItem:
    """A labelled multiple-choice item: the seed recipe's input."""

    question: str
    options: tuple[str, ...]
    gold: int
    context: str = ""
    id: str = ""


@dataclass(frozen=True)
class DemoSetSpec:
    """How one offline dataset becomes QA items (never a benchmark the leaderboard scores)."""

    name: str
    dataset_dir: str  # under demo_datasets_dir()
    reader: Callable[[dict[str, Any]], QAItem | None]
    # Options stay out of the prompt: the pair then scores answer texts as continuations of the
    # question (how ARC/HellaSwag-style tasks are scored), and sequences are ~40% shorter.
    list_options: bool = False
    description: str = ""


def _letters_item(row: dict[str, Any], question: str, choices: dict[str, Any], key: str) -> QAItem | None:
    labels = list(choices["label"])
    if key not in labels:
        return None
    return QAItem(question=question, options=tuple(choices["text"]), gold=labels.index(key))


def _sciq(row: dict[str, Any]) -> QAItem | None:
    options = [row["correct_answer"], row["distractor1"], row["distractor2"], row["distractor3"]]
    # Fixed, content-derived order: the gold is not always first.
    order = sorted(range(4), key=lambda i: zlib.crc32(f"{row['question']}|{i}".encode()))
    return QAItem(question=row["question"], options=tuple(options[i] for i in order), gold=order.index(0))


def _openbookqa(row: dict[str, Any]) -> QAItem | None:
    return _letters_item(row, row["question_stem"], row["choices"], row["answerKey"])


def _commonsense_qa(row: dict[str, Any]) -> QAItem | None:
    return _letters_item(row, row["question"], row["choices"], row["answerKey"])


def _piqa(row: dict[str, Any]) -> QAItem | None:
    if row["label"] not in (0, 1):
        return None
    return QAItem(question=row["goal"], options=(row["sol1"], row["sol2"]), gold=int(row["label"]))


def _social_iqa(row: dict[str, Any]) -> QAItem | None:
    if str(row["label"]) not in ("1", "2", "3"):
        return None
    return QAItem(
        question=row["question"],
        context=row["context"],
        options=(row["answerA"], row["answerB"], row["answerC"]),
        gold=int(row["label"]) - 1,
    )


DEMO_SETS: dict[str, DemoSetSpec] = {
    "sciq": DemoSetSpec("sciq", "sciq/none/validation", _sciq, description="SciQ science questions (1000)"),
    "openbookqa": DemoSetSpec(
        "openbookqa",
        "openbookqa/main/validation",
        _openbookqa,
        description="OpenBookQA elementary science (500)",
    ),
    "piqa": DemoSetSpec(
        "piqa",
        "piqa/plain_text/validation",
        _piqa,
        description="PIQA physical commonsense (1838)",
    ),
    "social_iqa": DemoSetSpec(
        "social_iqa",
        "social_i_qa/none/validation",
        _social_iqa,
        description="Social-IQA social commonsense (1954)",
    ),
    "commonsense_qa": DemoSetSpec(
        "commonsense_qa",
        "tau/commonsense_qa/none/validation",
        _commonsense_qa,
        description="CommonsenseQA (1221)",
    ),
}

# Offline copies of what the leaderboard scores: demo pairs must not contain these items.
SCORED_BENCHMARKS: tuple[tuple[str, str], ...] = (
    ("ai2_arc", "arc"),
    ("hellaswag", "hellaswag"),
    ("hails/mmlu_no_train", "mmlu"),
)


def preference_dir() -> Path:
    """Where demo preference sets are cached: ``<home>/preference``."""
    return harness_home() / "preference"


def demo_preference_path(name: str, label: str = "align") -> Path:
    """The JSONL of demo set ``name``, built on first use from the offline datasets."""
    if name not in DEMO_SETS:
        raise HarnessError(
            f"{label}: unknown demo preference set {name!r}",
            f"known: {', '.join(DEMO_PREFIX + n for n in DEMO_SETS)}",
        )
    path = preference_dir() / f"{name}.jsonl"
    meta = _read_json(path.with_suffix(".meta.json"))
    if path.is_file() and meta.get("seed_recipe_version") == SEED_RECIPE_VERSION:
        return path
    prepare_demo_preference_sets([name])
    return path


def prepare_demo_preference_sets(
    names: Sequence[str] | None = None,
    *,
    force: bool = False,
    say: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Build (once) the demo preference sets as JSONL under :func:`preference_dir`.

    Deterministic and model-free: the rejected answer is a seeded random wrong option. Pairs
    whose prompt near-duplicates another pair's, or an item of a scored benchmark, are dropped.
    """
    from harness.assets import demo_datasets_dir

    names = list(names or DEMO_SETS)
    out: dict[str, Path] = {}
    todo = []
    for name in names:
        path = preference_dir() / f"{name}.jsonl"
        meta = _read_json(path.with_suffix(".meta.json"))
        if not force and path.is_file() and meta.get("seed_recipe_version") == SEED_RECIPE_VERSION:
            out[name] = path
        else:
            todo.append(name)
    if not todo:
        return out
    root = demo_datasets_dir()
    if root is None:
        raise HarnessError(
            "the offline demo datasets are not prepared (needed for demo: preference sets)",
            "run `harness assets` once",
        )
    exclude = scored_benchmark_index(root)
    for name in todo:
        spec = DEMO_SETS[name]
        items = list(read_qa_items(root / spec.dataset_dir, spec.reader))
        report: dict[str, int] = {}
        pairs = pairs_from_qa(
            items,
            list_options=spec.list_options,
            seed=zlib.crc32(name.encode()),
            exclude=exclude,
            report=report,
        )
        path = preference_dir() / f"{name}.jsonl"
        _atomic_write_text(path, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
        meta = {
            "name": name,
            "source": spec.dataset_dir,
            "description": spec.description,
            "seed_recipe_version": SEED_RECIPE_VERSION,
            "pairs": len(pairs),
            **report,
        }
        _atomic_write_text(path.with_suffix(".meta.json"), json.dumps(meta, indent=2) + "\n")
        if say is not None:
            say(
                f"preference set demo:{name}: {len(pairs)} pairs from {report.get('items', 0)} "
                f"items ({report.get('near_duplicates', 0)} near-duplicates, "
                f"{report.get('contaminated', 0)} overlapping scored benchmarks removed)"
            )
        out[name] = path
    return out


def read_qa_items(folder: Path, reader: Callable[[dict[str, Any]], QAItem | None]) -> Iterator[QAItem]:
    from datasets import load_from_disk

    for i, row in enumerate(load_from_disk(str(folder))):
        item = reader(row)
        if item is not None and item.question.strip() and len(set(item.options)) > 1:
            yield QAItem(item.question, item.options, item.gold, item.context, item.id or str(i))


def format_prompt(item: QAItem, list_options: bool = False) -> str:
    """The user turn: context, question and optionally the options; the answer is the option text."""
    parts = [item.context.strip()] if item.context.strip() else []
    parts.append(item.question.strip())
    if list_options:
        parts.append("Options:\n" + "\n".join(f"- {o.strip()}" for o in item.options))
        parts.append("Answer with the correct option.")
    return "\n\n".join(parts)


OptionScorer = Callable[[str, Sequence[str]], Sequence[float]]


def pairs_from_qa(
    items: Iterable[QAItem],
    *,
    list_options: bool = False,
    conversational: bool = True,
    scorer: OptionScorer | None = None,
    seed: int = 0,
    dedupe_threshold: float = 0.8,
    exclude: NearDuplicateIndex | None = None,
    report: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """The seed recipe: gold answer = ``chosen``, a wrong answer = ``rejected``.

    ``rejected`` is the model's own preferred wrong option when ``scorer`` (prompt, options ->
    scores, e.g. log-likelihoods) is given, else a seeded random wrong option. Items whose
    prompt is a near-duplicate (word-shingle Jaccard >= ``dedupe_threshold``) of an earlier
    item, or of an entry of ``exclude`` (the scored benchmarks), are removed.
    """
    rng = random.Random(seed)
    items = list(items)
    prompts = [format_prompt(item, list_options) for item in items]
    keys = [_question_text(item) for item in items]
    keep = near_duplicate_mask(keys, dedupe_threshold)
    contaminated = 0
    pairs: list[dict[str, Any]] = []
    for item, prompt, key, kept in zip(items, prompts, keys, keep, strict=True):
        if not kept:
            continue
        if exclude is not None and exclude.contains(key):
            contaminated += 1
            continue
        wrong = [i for i in range(len(item.options)) if item.options[i] != item.options[item.gold]]
        if not wrong:
            continue
        if scorer is not None:
            scores = scorer(prompt, item.options)
            bad = max(wrong, key=lambda i: scores[i])
        else:
            bad = rng.choice(wrong)
        chosen, rejected = item.options[item.gold].strip(), item.options[bad].strip()
        if conversational:
            pairs.append(
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                }
            )
        else:
            pairs.append({"prompt": f"{prompt}\nAnswer:", "chosen": f" {chosen}", "rejected": f" {rejected}"})
    if report is not None:
        report.update(
            items=len(items),
            near_duplicates=len(items) - sum(keep),
            contaminated=contaminated,
            pairs=len(pairs),
        )
    return pairs


def model_option_scorer(model: Any, tokenizer: Any, *, conversational: bool = True) -> OptionScorer:
    """Score options by the model's summed log-likelihood (for "the model's own wrong answer")."""

    def score(prompt: str, options: Sequence[str]) -> list[float]:
        rows = [
            (
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "chosen": [{"role": "assistant", "content": o}],
                }
                if conversational
                else {"prompt": f"{prompt}\nAnswer:", "chosen": f" {o}"}
            )
            for o in options
        ]
        return completion_logps(model, tokenizer, rows, "chosen")

    return score


def _question_text(item: QAItem) -> str:
    return f"{item.context} {item.question}".strip()


# --- log-probabilities of completions (reward accuracy, option scoring) -----------------------


def tokenize_pair(
    tokenizer: Any, prompt: Any, completion: Any, max_length: int | None = None
) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) the way TRL's DPO tokenizes them (common-prefix split)."""
    if isinstance(prompt, list):
        prompt_ids = _chat_ids(tokenizer, prompt, add_generation_prompt=True)
        full_ids = _chat_ids(tokenizer, prompt + completion, add_generation_prompt=False)
    else:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        eos = tokenizer.eos_token or ""
        text = completion if completion.endswith(eos) else completion + eos
        full_ids = tokenizer(prompt + text, add_special_tokens=False)["input_ids"]
    n = 0
    while n < min(len(prompt_ids), len(full_ids)) and prompt_ids[n] == full_ids[n]:
        n += 1
    ids_prompt, ids_completion = full_ids[:n], full_ids[n:]
    if max_length is not None and len(ids_prompt) + len(ids_completion) > max_length:
        ids_completion = ids_completion[: max(0, max_length - len(ids_prompt))]
    return ids_prompt, ids_completion


def _chat_ids(tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "conversational preference data needs a tokenizer with a chat template; "
            "this model's tokenizer has none (use standard prompt/chosen/rejected strings)"
        )
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    if isinstance(out, dict) or hasattr(out, "keys"):  # transformers 5 may return a BatchEncoding
        out = out["input_ids"]
    return list(out)


def completion_logps(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    column: str,
    *,
    max_length: int | None = None,
    batch_size: int = 8,
) -> list[float]:
    """Summed log-probability of ``row[column]`` given ``row["prompt"]``, per row.

    Rows are left-padded (positions counted from each row's first real token), so every
    completion ends at the right edge and the LM head runs only on the last positions of the
    batch (``logits_to_keep``): over a 49k-word vocabulary, the logits of the prompt positions
    were most of the work, and all thrown away.
    """
    import inspect

    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [tokenize_pair(tokenizer, r["prompt"], r[column], max_length) for r in rows]
    keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
    out: list[float] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start : start + batch_size]
            width = max(len(p) + len(c) for p, c in batch)
            # The completion positions, right-aligned; the first token of a row has no predictor.
            tail = min(max(1, max(len(c) for _, c in batch)), width - 1)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            target = torch.zeros((len(batch), width), dtype=torch.bool)
            for i, (p, c) in enumerate(batch):
                seq = p + c
                ids[i, width - len(seq) :] = torch.tensor(seq)
                mask[i, width - len(seq) :] = 1
                target[i, width - len(c) :] = True
            positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
            extra = {"logits_to_keep": tail + 1} if keeps_logits else {}
            with torch.no_grad():
                logits = model(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    position_ids=positions.to(device),
                    **extra,
                ).logits
            # logits[:, -(tail + 1) + j] predicts token width - tail + j.
            logp = torch.log_softmax(logits[:, -(tail + 1) : -1].float(), dim=-1)
            tok = logp.gather(-1, ids[:, width - tail :].to(device).unsqueeze(-1)).squeeze(-1)
            sums = (tok * target[:, width - tail :].to(device)).sum(dim=1)
            out.extend(float(v) for v in sums.cpu())
    finally:
        model.train(was_training)
    return out


def reward_accuracy(
    model: Any,
    tokenizer: Any,
    dataset: Dataset,
    *,
    sample: int = 64,
    seed: int = 0,
    max_length: int | None = None,
    batch_size: int = 8,
) -> float:
    """Share of pairs (a seeded sample) where ``model`` prefers chosen over rejected.

    This is DPO's implicit-reward accuracy of the starting model against a uniform reference
    (log pi(chosen|x) > log pi(rejected|x)): with the model as its own reference every reward
    is 0, so sDPO's easy -> hard rule needs this reference-free form.
    """
    rows = _rows_with_prompt(dataset, sample, seed)
    chosen = completion_logps(model, tokenizer, rows, "chosen", max_length=max_length, batch_size=batch_size)
    rejected = completion_logps(
        model, tokenizer, rows, "rejected", max_length=max_length, batch_size=batch_size
    )
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / max(1, len(rows))


def _rows_with_prompt(dataset: Dataset, sample: int, seed: int) -> list[dict[str, Any]]:
    from trl.data_utils import extract_prompt

    indices = list(range(len(dataset)))
    if len(indices) > sample:
        indices = sorted(random.Random(seed).sample(indices, sample))
    rows = [dict(dataset[i]) for i in indices]
    return [r if "prompt" in r else {**r, **extract_prompt(r)} for r in rows]


# --- near-duplicate removal (MinHash LSH over word shingles) ----------------------------------

_WORD_RE = re.compile(r"[a-z0-9]+")
_NUM_PERM = 64
_BANDS = 16  # 16 bands x 4 rows: pairs with Jaccard >= ~0.6 collide with high probability
_PRIME = (1 << 31) - 1  # a Mersenne prime


def _shingles(text: str, n: int = 3) -> set[int]:
    words = _WORD_RE.findall(text.lower())
    if len(words) < n:
        return {zlib.crc32(" ".join(words).encode())}
    return {zlib.crc32(" ".join(words[i : i + n]).encode()) for i in range(len(words) - n + 1)}


_PERM_RNG = random.Random(1234)
_PERM_A = [_PERM_RNG.randrange(1, _PRIME) for _ in range(_NUM_PERM)]
_PERM_B = [_PERM_RNG.randrange(0, _PRIME) for _ in range(_NUM_PERM)]


def _minhash(shingles: set[int]) -> tuple[int, ...]:
    import numpy as np

    values = np.fromiter(shingles, dtype=np.uint64, count=len(shingles))
    a = np.asarray(_PERM_A, dtype=np.uint64)[:, None]
    b = np.asarray(_PERM_B, dtype=np.uint64)[:, None]
    # a < 2^31 and a crc32 < 2^32: a*x + b stays below 2^64, so uint64 is exact.
    return tuple(((a * values[None, :] + b) % np.uint64(_PRIME)).min(axis=1).tolist())


def _jaccard(a: set[int], b: set[int]) -> float:
    return len(a & b) / max(1, len(a | b))


@dataclass
class NearDuplicateIndex:
    """MinHash-LSH index: ``contains(text)`` if an indexed text has Jaccard >= threshold."""

    threshold: float = 0.8
    _buckets: dict[tuple[int, tuple[int, ...]], list[int]] = field(default_factory=dict)
    _sets: list[set[int]] = field(default_factory=list)

    def _bands(self, sig: tuple[int, ...]) -> Iterator[tuple[int, tuple[int, ...]]]:
        rows = _NUM_PERM // _BANDS
        for band in range(_BANDS):
            yield band, sig[band * rows : (band + 1) * rows]

    def add(self, text: str) -> None:
        shingles = _shingles(text)
        sig = _minhash(shingles)
        idx = len(self._sets)
        self._sets.append(shingles)
        for key in self._bands(sig):
            self._buckets.setdefault(key, []).append(idx)

    def contains(self, text: str) -> bool:
        shingles = _shingles(text)
        sig = _minhash(shingles)
        seen: set[int] = set()
        for key in self._bands(sig):
            for idx in self._buckets.get(key, ()):
                if idx not in seen:
                    seen.add(idx)
                    if _jaccard(shingles, self._sets[idx]) >= self.threshold:
                        return True
        return False

    def __len__(self) -> int:
        return len(self._sets)


def near_duplicate_mask(texts: Sequence[str], threshold: float = 0.8) -> list[bool]:
    """True for each text kept: the first of every near-duplicate group (Jaccard >= threshold)."""
    index = NearDuplicateIndex(threshold)
    keep: list[bool] = []
    for text in texts:
        dup = index.contains(text)
        keep.append(not dup)
        if not dup:
            index.add(text)
    return keep


def scored_benchmark_index(root: Path, threshold: float = 0.8) -> NearDuplicateIndex:
    """Questions of the scored benchmarks available offline (ARC, HellaSwag, MMLU)."""
    from datasets import load_from_disk

    index = NearDuplicateIndex(threshold)
    for family, kind in SCORED_BENCHMARKS:
        base = root / family
        if not base.is_dir():
            continue
        for state in sorted(base.rglob("state.json")):
            for row in load_from_disk(str(state.parent)):
                if kind == "hellaswag":
                    text = row.get("ctx") or ""
                else:
                    text = row.get("question") or ""
                if text.strip():
                    index.add(text)
    return index


# --- small file helpers ---------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
