"""The model card (``README.md``) of a built model folder. Entry point: :func:`write_card`.

Made with huggingface_hub's own ``ModelCard`` / ``ModelCardData`` / ``EvalResult``, so its
front matter is what the hub parses and indexes:

- ``base_model``: the merge inputs that are hub ids (a ``demo:`` model or a local folder is
  not one: the body lists those);
- ``tags``: ``merge``, ``mergekit`` and the alignment method (``dpo``, ``kto``, ``orpo``,
  ``sdpo``) when aligned; ``library_name: transformers``;
- ``datasets``: the alignment data that are hub ids (local and ``demo:`` sets: in the body);
- ``model-index``: one result per score row the leaderboard holds for the trial, the metric's
  name saying how it was measured: shots, number of questions, which questions (held-out,
  search or a plain eval), a limit, offline substitute data. A task without data is absent,
  never 0.

The body: the recipe as YAML, the scores beside the study's reference models with the paired
test of ``harness compare``, the versions, the command that rebuilds the folder, and how to
upload it.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from harness.assets.registry import is_hub_id
from harness.recipe import Recipe

# What the board's partitions are called in a metric's name.
PARTITION_LABELS = {"heldout": "held-out", "search": "search", "all": "eval"}
# Libraries whose versions a card gives (requirements.lock names).
CARD_LIBRARIES = ("torch", "transformers", "mergekit", "lm-eval", "trl", "peft")

_TEMPLATE = "---\n{{ card_data }}\n---\n\n{{ body }}"


def write_card(
    folder: Path,
    recipe: Recipe,
    merge_config: Any,
    *,
    board: Any = None,
    trial_id: str | None = None,
    db: Path | None = None,
) -> Path:
    """Write ``folder/README.md`` for a model built from ``recipe`` (``merge_config``: its
    resolved mergekit configuration). With ``board`` (a :class:`~harness.record.Leaderboard`)
    and ``trial_id``, the trial's scores and its study's references come from the board;
    ``db`` (else the board's file) is named in the rebuild command."""
    from huggingface_hub import ModelCard, ModelCardData

    trial = board.trial(trial_id) if board is not None and trial_id else None
    scores = _scores(board, trial) if trial else []
    name = (trial or {}).get("name") or recipe.display_name()
    data = [s.path for s in recipe.align.data if _is_hub_dataset(s.path)] if recipe.align else []
    card_data = ModelCardData(
        model_name=name,
        base_model=_hub_models(merge_config) or None,
        tags=_tags(recipe),
        library_name="transformers",
        pipeline_tag="text-generation",
        datasets=list(dict.fromkeys(data)) or None,
        eval_results=([_eval_result(row, trial) for row in scores] if trial else []) or None,
    )
    db = board.path if board is not None else db
    body = _body(folder, recipe, merge_config, name, trial, scores, board, trial_id, db)
    card = ModelCard.from_template(card_data, template_str=_TEMPLATE, body=body)
    path = folder / "README.md"
    card.save(path)
    return path


# --- front matter ------------------------------------------------------------------------


def _is_hub_dataset(ref: str) -> bool:
    from harness.align.data import LOCAL_SUFFIXES

    return is_hub_id(ref) and not ref.lower().endswith(LOCAL_SUFFIXES)


def _hub_models(merge_config: Any) -> list[str]:
    """The merge inputs (and LoRAs) that are hub ids, in the config's order, once each."""
    out: list[str] = []
    for ref in merge_config.referenced_models():
        for path in (ref.model.path, ref.lora.path if ref.lora else None):
            if path and is_hub_id(path) and path not in out:
                out.append(path)
    return out


def _tags(recipe: Recipe) -> list[str]:
    tags = ["merge", "mergekit"]
    if recipe.align is not None:
        tags.append(recipe.align.method)
        if recipe.align.schedule:
            tags.append(recipe.align.schedule)
    return list(dict.fromkeys(tags))


def _metric_name(row: dict[str, Any], limit: int | None) -> str:
    """``acc (0-shot, 150 questions, held-out)``: how a score row was measured."""
    from harness.report.data import is_substitute

    bits = []
    if row.get("num_fewshot") is not None:
        bits.append(f"{row['num_fewshot']}-shot")
    if row.get("n_samples") is not None:
        bits.append(f"{row['n_samples']} questions")
    partition = row.get("partition") or "all"
    bits.append(PARTITION_LABELS.get(partition, partition))
    if limit is not None and partition != "heldout":  # the held-out part has its own cap
        bits.append(f"limit {limit}")
    if is_substitute(row.get("data_source")):
        bits.append("offline substitute data")
    return f"{row['metric']} ({', '.join(bits)})"


def _eval_result(row: dict[str, Any], trial: dict[str, Any]) -> Any:
    from huggingface_hub import EvalResult

    return EvalResult(
        task_type="text-generation",
        dataset_type=row["task"],
        dataset_name=row["task"],
        metric_type=row["metric"],
        metric_value=row["value"],
        metric_name=_metric_name(row, trial.get("eval_limit")),
    )


def _scores(board: Any, trial: dict[str, Any]) -> list[dict[str, Any]]:
    """The trial's score rows with data, held-out before search, in the board's order."""
    order = {"heldout": 0, "all": 1, "search": 2}
    rows = [r for r in board.scores(trial["id"]) if r.get("value") is not None]
    return sorted(rows, key=lambda r: order.get(r.get("partition") or "all", 3))


# --- body ----------------------------------------------------------------------------------


def _body(
    folder: Path,
    recipe: Recipe,
    merge_config: Any,
    name: str,
    trial: dict[str, Any] | None,
    scores: list[dict[str, Any]],
    board: Any,
    trial_id: str | None,
    db: Path | None,
) -> str:
    parts = [f"# {name}\n", _summary(recipe, merge_config, trial, trial_id, db)]
    parts += ["## Merge inputs\n", _inputs(recipe, merge_config)]
    if recipe.align is not None:
        parts += ["## Alignment\n", _alignment(recipe)]
    recipe_data = recipe.canonical()
    recipe_data["seed"] = recipe.seed  # said even when 0 (recipe.yaml leaves the default out)
    parts += [
        "## Recipe\n",
        "The whole recipe (`recipe.yaml` in this folder; `mergekit_config.yml` is its merge part "
        "with the model paths the build read, for `mergekit-yaml`):\n",
        "```yaml\n" + yaml.safe_dump(recipe_data, sort_keys=False, allow_unicode=True) + "```\n",
    ]
    parts += ["## Scores\n", _scores_section(scores, board, trial) if trial else _not_scored(trial_id)]
    parts += ["## Reproduce\n", _reproduce(folder, trial_id, db)]
    parts += ["## Versions\n", _versions(trial)]
    parts += [
        "## Upload\n",
        "This folder is ready for the hub (weights, config, tokenizer, this card):\n",
        f"```sh\nhf upload YOUR_NAME/{_repo_name(name)} {shlex.quote(str(folder))}\n```\n",
    ]
    return "\n".join(parts)


def _summary(
    recipe: Recipe, merge_config: Any, trial: dict[str, Any] | None, trial_id: str | None, db: Path | None
) -> str:
    text = f"A `{merge_config.merge_method}` merge made with [mergekit](https://github.com/arcee-ai/mergekit)"
    if recipe.align is not None:
        text += f", then aligned with {recipe.align.method}"
        if recipe.align.schedule:
            text += f" on the {recipe.align.schedule} schedule"
    text += ", by merge-harness.\n"
    if trial:
        where = f"study `{trial['study']}`, trial #{trial['trial_number']}, " if trial.get("study") else ""
        text += f"\nBuilt from leaderboard row `{trial['id']}` ({where}source {trial['source']}) of `{db}`.\n"
    elif trial_id:
        text += f"\nLeaderboard row `{trial_id}`" + (f" of `{db}`" if db else "") + ".\n"
    return text


def _inputs(recipe: Recipe, merge_config: Any) -> str:
    from harness.recipe.validate import weight_references

    written = list(dict.fromkeys(weight_references(recipe.merge)))
    tok = recipe.merge.get("tokenizer_source")
    if isinstance(tok, str) and tok not in ("union", "base") and tok not in written:
        written.append(tok)
    lines = []
    for ref in written:
        if is_hub_id(ref):
            lines.append(f"- [{ref}](https://huggingface.co/{ref})")
        elif ref.startswith("demo:"):
            lines.append(f"- `{ref}`: the harness's offline demo model (a local conversion, not a hub id)")
        else:
            lines.append(f"- `{ref}` (a local folder)")
    base = recipe.merge.get("base_model")
    if isinstance(base, str):
        lines.append(f"\nBase model: `{base}`.")
    return "\n".join(lines) + "\n"


def _alignment(recipe: Recipe) -> str:
    align = recipe.align
    assert align is not None
    settings = align.model_dump(exclude_none=True)
    lines = [
        f"- method: {align.method}" + (f" ({align.schedule} schedule)" if align.schedule else ""),
        f"- steps: {align.num_steps}",
    ]
    # The method's own fields (DPO's loss_type, KTO's weights...) and the shared ones that
    # matter most; the whole configuration is in the recipe below.
    for key in ("beta", *align.trainer.options.model_fields, "learning_rate", "max_steps"):
        if key in settings:
            lines.append(f"- {key}: {settings[key]}")
    if align.lora is not None:
        lines.append(f"- adapter: LoRA {align.lora.model_dump()} (merged back)")
    elif align.ia3 is not None:
        lines.append(f"- adapter: IA3 {align.ia3.model_dump(exclude_none=True)} (merged back)")
    else:
        lines.append("- adapter: none (full fine-tune)")
    lines.append(f"- seed: {recipe.seed}")
    lines.append("- data:")
    for source in align.data:
        kind = (
            "hub dataset"
            if _is_hub_dataset(source.path)
            else "offline demo set"
            if source.path.startswith("demo:")
            else "local file"
        )
        extra = f", first {source.limit} pairs" if source.limit else ""
        extra += ", rejected answers generated on-policy" if source.rejected == "on_policy" else ""
        lines.append(f"  - `{source.name}`: `{source.path}` ({kind}, split {source.split}{extra})")
    return "\n".join(lines) + "\n"


def _not_scored(trial_id: str | None) -> str:
    if trial_id:
        return (
            f"Not scored yet: the leaderboard's numbers for `{trial_id}` are what `harness leaderboard "
            f"--trial {trial_id}` shows once they are recorded.\n"
        )
    return "Not scored: build it with `harness build --trial ID` (or `--suite`) to carry scores.\n"


def _scores_section(scores: list[dict[str, Any]], board: Any, trial: dict[str, Any]) -> str:
    from harness.report.data import is_substitute

    if not scores:
        return "The leaderboard has no scores with data for this row.\n"
    refs = _references(board, trial)
    ref_scores = {r["id"]: _by_leaf(board.scores(r["id"])) for r in refs}
    paired = _paired(board, trial, refs, scores)
    head = ["task", "metric", "shots", "questions", "questions from", "this model"]
    for r in refs:
        head += [_cell(r["name"]), f"vs {_cell(r['name'])} (paired)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in scores:
        leaf = _leaf(row)
        cells = [
            _cell(row["task"]),
            _cell(row["metric"]),
            "" if row["num_fewshot"] is None else str(row["num_fewshot"]),
            "" if row["n_samples"] is None else str(row["n_samples"]),
            PARTITION_LABELS.get(leaf[3], leaf[3]) + (" †" if is_substitute(row["data_source"]) else ""),
            _value(row),
        ]
        for r in refs:
            theirs = ref_scores[r["id"]].get(leaf)
            cells += [_value(theirs) if theirs else "no data", paired.get((r["id"], leaf), "")]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "Value ± stderr. *held-out*: questions the search never saw (what the leaderboard ranks); "
        "*search*: the questions the study selected on (optimistic); *eval*: a plain evaluation.",
    ]
    if trial.get("eval_limit") is not None:
        notes.append(
            f"A limited run: at most {trial['eval_limit']} questions per task (search / eval rows): "
            "noisy, not comparable with full runs."
        )
    if refs:
        notes.append(
            "Paired: this model − the reference on the questions both answered (held-out or eval "
            "rows), with its 95% bootstrap interval and p-value (`harness compare`'s test)."
        )
    sources = sorted({r["data_source"] for r in scores if is_substitute(r["data_source"])})
    if sources:
        notes.append("† offline substitute data, not the official setting: " + "; ".join(sources) + ".")
    if trial.get("split_rule"):
        notes.append(f"Questions split: {trial['split_rule']}.")
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes) + "\n"


def _references(board: Any, trial: dict[str, Any]) -> list[dict[str, Any]]:
    """The models the trial's study scored beside its trials (base, donors)."""
    if not trial.get("study"):
        return []
    return [
        r
        for r in board.ranking(study=trial["study"])
        if r["trial_number"] is None and r["status"] == "ok" and r["id"] != trial["id"]
    ]


def _leaf(row: dict[str, Any]) -> tuple[str, str, int | None, str]:
    return (row["task"], row["metric"], row["num_fewshot"], row.get("partition") or "all")


def _by_leaf(rows: list[dict[str, Any]]) -> dict[tuple[str, str, int | None, str], dict[str, Any]]:
    return {_leaf(r): r for r in rows if r.get("value") is not None}


def _paired(
    board: Any, trial: dict[str, Any], refs: list[dict[str, Any]], scores: list[dict[str, Any]]
) -> dict[tuple[str, tuple[str, str, int | None, str]], str]:
    """(reference id, leaf) -> "+0.0500 [-0.10, +0.20], p 0.62" on the board's questions."""
    if not refs:
        return {}
    from harness.compare import TrialData
    from harness.record.schema import BOARD_PARTITIONS

    data = TrialData(board, [trial["id"], *(r["id"] for r in refs)])
    out = {}
    for row in scores:
        leaf = _leaf(row)
        if leaf[3] not in BOARD_PARTITIONS:
            continue  # per-question rows are kept for the board's partitions only
        for r in refs:
            got = data.compare(trial["id"], r["id"], row["task"], composition={leaf[:3]: 1.0})
            t = got.test
            out[(r["id"], leaf)] = (
                f"{t.difference:+.4f} [{t.ci_low:+.4f}, {t.ci_high:+.4f}], p {t.p_value:.3g}"
                if t is not None
                else got.note
            )
    return out


def _value(row: dict[str, Any]) -> str:
    text = f"{row['value']:.4f}"
    return text + (f" ± {row['stderr']:.4f}" if row.get("stderr") is not None else "")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _reproduce(folder: Path, trial_id: str | None, db: Path | None) -> str:
    out = shlex.quote(str(folder))
    if trial_id:
        where = shlex.quote(str(db)) if db else "LEADERBOARD.duckdb"
        command = f"harness build --trial {trial_id} --db {where} --out {out}"
    else:
        command = f"harness build {shlex.quote(str(folder / 'recipe.yaml'))} --out NEW_FOLDER"
    return (
        f"```sh\n{command}\n```\n\nThe merge alone, with mergekit's own command (no alignment):\n\n"
        f"```sh\nmergekit-yaml {shlex.quote(str(folder / 'mergekit_config.yml'))} NEW_FOLDER\n```\n"
    )


def _locked_versions() -> dict[str, str]:
    """Library -> version from the ``requirements.lock`` beside the package (a checkout);
    {} where there is none (an installed wheel)."""
    lock = Path(__file__).resolve().parents[2] / "requirements.lock"
    pins: dict[str, str] = {}
    if not lock.is_file():
        return pins
    text = lock.read_text(encoding="utf-8")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    # torch is chosen per machine (TORCH_SPEC); the header names the CPU pin
    named = re.search(r"\btorch==([\w.+]+)", text)
    if "torch" not in pins and named:
        pins["torch"] = f"{named.group(1)} (CPU; TORCH_SPEC elsewhere)"
    return pins


def _versions(trial: dict[str, Any] | None) -> str:
    from importlib import metadata

    from harness import __version__
    from harness.record.versions import harness_commit

    commit = (trial or {}).get("harness_commit") or harness_commit()
    pins = _locked_versions()
    scored = json.loads((trial or {}).get("versions") or "{}")
    lines = [
        f"merge-harness {__version__}" + (f" (commit `{commit}`)" if commit else "") + ".\n",
        "| library | locked (requirements.lock) | installed at build | scored with |",
        "|---|---|---|---|",
    ]
    for lib in CARD_LIBRARIES:
        try:
            installed = metadata.version(lib)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        lines.append(
            f"| {lib} | {pins.get(lib, 'not locked')} | {installed} | {scored.get(lib.replace('-', '_'), '')} |"
        )
    return "\n".join(lines) + "\n"


def _repo_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-.")
    return cleaned or "merged-model"
