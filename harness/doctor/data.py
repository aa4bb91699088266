"""Synthetic benchmark documents in the real datasets' schemas, and preference pairs.

``harness doctor`` checks where and how fast the pipeline computes, not what a model knows, and
it must run on a GPU box with no hub and no registry. So it writes its own small copies of the
H4 datasets: for each leaf task lm-eval would run, the splits its config reads (scored, few-shot
and a study's search split), in the layout and columns :mod:`harness.evaluate.datasources`
resolves, with texts of about the real datasets' lengths so that contexts (25-shot ARC,
10-shot HellaSwag, 5-shot MMLU) are as long as the real ones. The words are random; so are
the answers.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.evaluate.datasources import FAMILIES, Family

_WORDS = (
    "river stone light cell energy plant water heat force metal animal system paper number "
    "market law court king city field wave color sound rock star planet moon body blood heart "
    "brain nerve acid salt gas liquid solid motion speed time year price trade rule vote state "
    "tree leaf root seed rain wind cloud storm sea coast island hill valley road bridge tower "
    "engine wheel tool glass iron copper gold silver carbon oxygen protein gene cause effect"
).split()
_LETTERS = ("A", "B", "C", "D")


def _text(rng: random.Random, words: int) -> str:
    count = max(1, int(rng.gauss(words, words / 4)))
    return " ".join(rng.choice(_WORDS) for _ in range(count)).capitalize()


def _mmlu(rng: random.Random, i: int, name: str | None) -> dict[str, Any]:
    return {
        "question": _text(rng, 30) + "?",
        "subject": name or "",
        "choices": [_text(rng, 5) for _ in range(4)],
        "answer": rng.randrange(4),
    }


def _arc(rng: random.Random, i: int, name: str | None) -> dict[str, Any]:
    return {
        "id": f"doctor_{i}",
        "question": _text(rng, 20) + "?",
        "choices": {"text": [_text(rng, 4) for _ in range(4)], "label": list(_LETTERS)},
        "answerKey": rng.choice(_LETTERS),
    }


def _hellaswag(rng: random.Random, i: int, name: str | None) -> dict[str, Any]:
    ctx_a, ctx_b = _text(rng, 25) + ".", _text(rng, 3).lower()
    return {
        "ind": i,
        "activity_label": _text(rng, 2),
        "ctx_a": ctx_a,
        "ctx_b": ctx_b,
        "ctx": f"{ctx_a} {ctx_b}",
        "endings": [_text(rng, 14).lower() + "." for _ in range(4)],
        "source_id": f"doctor~{i}",
        "split": "val",
        "split_type": "indomain",
        "label": str(rng.randrange(4)),
    }


def _truthfulqa(rng: random.Random, i: int, name: str | None) -> dict[str, Any]:
    def targets(n: int, true: int) -> dict[str, Any]:
        return {"choices": [_text(rng, 9) + "." for _ in range(n)], "labels": [1] * true + [0] * (n - true)}

    return {"question": _text(rng, 11) + "?", "mc1_targets": targets(4, 1), "mc2_targets": targets(7, 3)}


def _kmmlu(rng: random.Random, i: int, name: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"question": _text(rng, 30) + "?", "answer": rng.randrange(1, 5)}
    row.update({letter: _text(rng, 5) for letter in _LETTERS})
    return {**row, "Category": name or "", "Human Accuracy": 0.5}


# One generator per family (by title): the columns Family.columns requires, and the rest of
# the hub dataset's so that lm-eval's prompts and processing see what they expect.
GENERATORS: dict[str, Callable[[random.Random, int, str | None], dict[str, Any]]] = {
    "MMLU": _mmlu,
    "ARC": _arc,
    "HellaSwag": _hellaswag,
    "TruthfulQA": _truthfulqa,
    "KMMLU": _kmmlu,
}


def write_split(family: Family, name: str | None, split: str, rows: int, root: Path, seed: int) -> Path:
    """``rows`` synthetic documents of one split, as ``<split>.parquet`` in the family's first
    layout under ``root``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = root / family.dirs[0].format(name=name or "none")
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{family.title}/{name}/{split}/{seed}")
    generate = GENERATORS[family.title]
    path = folder / f"{split}.parquet"
    pq.write_table(pa.Table.from_pylist([generate(rng, i, name) for i in range(rows)]), path)
    return path


def write_benchmark_data(tasks: list[str], root: Path, questions: int, seed: int = 0) -> list[Path]:
    """Synthetic data under ``root`` for every leaf of ``tasks`` (lm-eval names or groups):
    ``questions`` documents in each split a leaf scores or searches, and enough few-shot
    examples for its shots (25 for ARC). Leaves of a family without a generator are skipped
    (their tasks then report "no data", as anywhere else)."""
    from harness.evaluate.tasks import default_task_index, expand

    index = default_task_index()
    written: dict[Path, None] = {}
    for task in tasks:
        for leaf in expand(task, index).leaves():
            family = FAMILIES.get(leaf.cfg.get("dataset_path") or "")
            if family is None or family.title not in GENERATORS:
                continue
            name = leaf.cfg.get("dataset_name")
            scored = leaf.cfg.get("test_split") or leaf.cfg.get("validation_split")
            fewshot = leaf.cfg.get("fewshot_split") or leaf.cfg.get("training_split")
            sizes = {scored: questions, family.search_split: questions, fewshot: 30}
            for split, rows in sizes.items():
                if split:
                    written[write_split(family, name, split, rows, root, seed)] = None
    return list(written)


def write_preference_pairs(path: Path, pairs: int = 32, seed: int = 0) -> Path:
    """``pairs`` prompt / chosen / rejected rows (TRL's standard format) as JSONL."""
    rng = random.Random(f"pairs/{seed}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(pairs):
            row = {
                "prompt": f"Question {i}: {_text(rng, 20)}?\nAnswer:",
                "chosen": " " + _text(rng, 12) + ".",
                "rejected": " " + _text(rng, 12) + ".",
            }
            fh.write(json.dumps(row) + "\n")
    return path
