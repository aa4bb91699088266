"""The seed recipe on offline QA data: the ``demo:<set>`` preference sets.

Gold answer = ``chosen``, a wrong option = ``rejected`` (or the model's own preferred wrong
option), near-duplicates removed (:mod:`harness.align.dedupe`), and anything close to a scored
benchmark item (ARC, HellaSwag, MMLU, available offline) left out. Built from the offline QA
datasets the leaderboard does not score (SciQ, OpenBookQA, PIQA, Social-IQA, CommonsenseQA),
once, and cached under ``<home>/preference``.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.align.dedupe import NearDuplicateIndex, near_duplicate_mask
from harness.align.logps import completion_logps
from harness.assets.fsutil import read_json
from harness.errors import HarnessError
from harness.paths import harness_home

if TYPE_CHECKING:
    pass


DEMO_PREFIX = "demo:"
# Bump when the seed recipe changes: cached demo sets from another version are rebuilt.
SEED_RECIPE_VERSION = 2


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
    meta = read_json(path.with_suffix(".meta.json"))
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
        meta = read_json(path.with_suffix(".meta.json"))
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
