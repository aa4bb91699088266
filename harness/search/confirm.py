"""Held-out confirmation of a study's top K at the end of a run, from weights kept on disk.

The leaderboard ranks the held-out objective of the study's best K trials (by the search
objective). Confirming each trial as it finishes among the best K *so far* also confirms every
early trial (the first K always are) and every trial that later drops out: about
K (1 + ln(N / K)) held-out scorings in N trials in random order, more when the sampler improves,
where only K are needed. Each is a full held-out scoring, the most expensive thing a trial does.

So while a trial is among the best K, its weights wait here (``save_pretrained``: safetensors,
the model's own dtype); an entry is dropped as soon as its trial falls out of the top K, so at
most about K models are on disk at once. At the end of the run the ones still in the top K are
loaded and confirmed. Disk, not memory: K resident models would not fit beside a 7B search.

An entry is written under a temporary name and renamed when complete, so a half-written model
is never confirmed. A run that stops early (Ctrl-C, a killed worker) leaves its entries; the
next run of the study on this machine confirms them at its end. An entry whose worker still runs
belongs to that worker. A worker killed while writing leaves a half-written folder: the next
look at the folder on that machine removes it (its writer is named inside from the start).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from harness.memory import freeze_survivors
from harness.record import TrialRecord
from harness.search.workers import is_alive, is_local, worker_identity
from harness.stages import stage

if TYPE_CHECKING:
    from rich.console import Console

    from harness.pipeline import Scorer
    from harness.placement import Placement
    from harness.search.runner import SearchOutcome
    from harness.search.space import SearchSpace

RECORD_FILE = "harness_kept.json"
WRITER_FILE = "harness_writer.json"  # in a half-written entry: whose it is
ORPHAN_AGE_S = 3600.0  # a half-written entry without its writer file (an older harness's)


@dataclass(frozen=True)
class KeptTrial:
    """A trial's weights waiting for confirmation, with the record its scores are added to."""

    path: Path
    record: TrialRecord
    worker: dict[str, Any]


class KeptModels:
    """The folder of one study's trials that wait for their held-out confirmation."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.me = worker_identity()

    def keep(self, record: TrialRecord, model: Any, tokenizer: Any) -> KeptTrial:
        """Write the trial's model folder (the one ``harness build`` writes: weights, tokenizer,
        mergekit_config.yml, recipe.yaml, card); OSError (a full disk, an unwritable folder)
        leaves nothing."""
        final = self.folder / record.id
        partial = self.folder / f".{record.id}.partial"
        from harness.evaluate.transformers_compat import weight_bars_off  # imports torch
        from harness.merge import save_model_folder

        recipe, merge_config = _recipe_of(record)
        try:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            (partial / WRITER_FILE).write_text(json.dumps(self.me))
            with weight_bars_off():
                save_model_folder(
                    partial,
                    recipe,
                    merge_config,
                    model=model,
                    tokenizer=tokenizer,
                    trial_id=record.id,
                    db=self.board_path(),
                )
            entry = {"record": asdict(record), "worker": self.me}
            (partial / RECORD_FILE).write_text(json.dumps(entry))
            shutil.rmtree(final, ignore_errors=True)
            partial.rename(final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return KeptTrial(final, record, self.me)

    def board_path(self) -> Path | None:
        """The leaderboard file this folder belongs to (``<db folder>/.<db name>.kept/<study>``,
        as the search runner places it), for the rebuild command in a kept model's card."""
        holder = self.folder.parent.name
        if holder.startswith(".") and holder.endswith(".kept"):
            return self.folder.parent.parent / holder[1 : -len(".kept")]
        return None

    def entries(self) -> Iterator[KeptTrial]:
        """Complete entries this process may confirm: its own, and those of dead local workers.
        An unreadable entry (its files damaged) is removed: its trial's search scores stand."""
        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.iterdir()):
            if path.name.startswith(".") and path.name.endswith(".partial") and self._orphaned(path):
                self.drop(path)  # its writer was killed mid-save: nothing in it can be confirmed
            if path.name.startswith(".") or not path.is_dir():
                continue
            try:
                data = json.loads((path / RECORD_FILE).read_text())
                entry = KeptTrial(path, TrialRecord(**data["record"]), dict(data["worker"]))
            except (OSError, ValueError, KeyError, TypeError):
                self.drop(path)
                continue
            if entry.worker == self.me or (is_local(entry.worker) and not is_alive(entry.worker)):
                yield entry

    @staticmethod
    def _orphaned(partial: Path) -> bool:
        """Whether a half-written entry's writer is gone (a dead process on this machine)."""
        try:
            writer = json.loads((partial / WRITER_FILE).read_text())
        except FileNotFoundError:  # just created, or written before writers were named
            try:
                return time.time() - partial.stat().st_mtime > ORPHAN_AGE_S
            except OSError:
                return False
        except (OSError, ValueError):
            return False  # being written right now, or unreadable: leave it
        return isinstance(writer, dict) and is_local(writer) and not is_alive(writer)

    def drop(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)


def _recipe_of(record: TrialRecord) -> tuple[Any, Any]:
    """The trial's recipe as recorded and its merge resolved as the build resolved it (the
    alignment's data checks are not repeated: they ran before the trial was built)."""
    import yaml

    from harness.recipe import recipe_from_dict, resolve_recipe

    if not record.recipe_yaml:  # a model without a recipe: its weights and tokenizer alone
        return None, None
    where = f"trial {record.id}"
    recipe = recipe_from_dict(yaml.safe_load(record.recipe_yaml), where)
    merge_only = recipe.model_copy(update={"align": None})
    return recipe, resolve_recipe(merge_only, where).merge_config


class Confirmation:
    """The runner's side of confirmation (a mixin of
    :class:`~harness.search.runner.SearchRunner`): which finished trials are in the top K,
    keeping their weights, and scoring them on the held-out questions."""

    space: SearchSpace
    scorer: Scorer
    study: Any
    study_name: str
    search_part: str
    confirm_top: int
    selection: Any
    kept: KeptModels
    placement: Placement
    console: Console

    if TYPE_CHECKING:

        def _warn(self, message: str) -> None: ...

        def _build(self, recipe: Any, record: TrialRecord) -> Any: ...

    def _weights_to_confirm(self, recipe: Any, record: TrialRecord, source: dict[str, Any]) -> Any:
        """A reused trial in the study's top K whose source is another study's unconfirmed
        trial (outside that study's top K, say) has no held-out score and no weights: build it
        again for its confirmation, or it would be a top-K trial the leaderboard never ranks.
        Its search scores stay reused. A source in this study is in the top K too (an earlier
        trial with the same score) and is confirmed itself: the recipe is confirmed once.
        None when no build is needed, or when it fails (warned: the trial stands, unconfirmed)."""
        if record.heldout_objective is not None or not self._in_top(record.objective):
            return None
        if source.get("study") == self.study_name:
            return None
        try:
            return self._build(recipe, record)
        except Exception as err:  # noqa: BLE001  (recorded already; only the confirmation is lost)
            self._warn(f"{record.name}: cannot be built again for its held-out confirmation: {err}")
            return None

    def _keep(self, record: TrialRecord, built: Any) -> bool:
        """Keep a top-K trial's weights for the end of the run; False (confirm it now) when
        they cannot be written: a full disk costs time, never the confirmation."""
        try:
            with stage("keep weights") as kept:
                self.kept.keep(record, built.model, built.tokenizer)
                kept(built.model)
        except OSError as err:
            self._warn(
                f"cannot keep {record.name}'s weights in {self.kept.folder} ({err}); "
                "confirming it on the held-out questions now"
            )
            return False
        return True

    def _drop_fallen(self) -> list[KeptTrial]:
        """Remove the kept trials that are no longer in the top K (they will not be confirmed);
        return the rest."""
        completed = self._completed_objectives()
        staying = []
        for entry in self.kept.entries():
            if self._in_top(entry.record.objective, completed):
                staying.append(entry)
            else:
                self.kept.drop(entry.path)
        return staying

    def confirm_kept(self, outcome: SearchOutcome | None = None) -> None:
        """Score the kept trials still in the top K on the held-out questions; drop the rest.
        An entry is removed once its confirmation is recorded; Ctrl-C or a failed scoring
        leaves it for the next run."""
        from harness.merge.loading import load_pretrained

        entries = sorted(self._drop_fallen(), key=lambda e: -(e.record.objective or 0.0))
        for i, entry in enumerate(entries, 1):
            record = entry.record
            self.console.print(
                f"confirming {escape(record.name)} on the held-out questions ({i} of {len(entries)})"
            )
            try:
                with stage("load kept") as loaded:
                    model, tokenizer, _ = load_pretrained(
                        str(entry.path),
                        device=self.placement.device,
                        dtype=record.dtype or self.placement.dtype,
                    )
                    loaded(model)
            except Exception as err:  # noqa: BLE001  (damaged files: the search scores stand)
                self._warn(f"{record.name}: kept weights cannot be loaded, not confirmed: {err}")
                self.kept.drop(entry.path)
                continue
            try:
                if self._confirm(record, model, tokenizer, outcome):
                    self.kept.drop(entry.path)
            finally:
                del model, tokenizer  # both sit in reference cycles: gone before the freeze
                freeze_survivors()

    def _confirm(
        self, record: TrialRecord, model: Any, tokenizer: Any, outcome: SearchOutcome | None
    ) -> bool:
        """Score a trial on the held-out questions; a failure is reported and the study goes on."""
        try:
            heldout = self._score_heldout(record, model, tokenizer)
        except Exception as err:  # noqa: BLE001
            self._warn(f"{record.name}: held-out confirmation failed: {type(err).__name__}: {err}")
            return False
        if outcome is not None:
            outcome.confirmed += 1
            outcome.questions += heldout.questions
        return True

    def _score_heldout(self, record: TrialRecord, model: Any, tokenizer: Any) -> Any:
        """Score on the held-out questions and add them to the row (its leaderboard numbers)."""
        result = self.scorer.measure(model, tokenizer, "heldout")
        values = self.space.objective.values(result.summary)
        if values is not None:
            record.heldout_objective = sum(values) / len(values)
            record.heldout_objective_stderr = self.space.objective.stderr(result.summary_stderr)
        record.eval_seconds = (record.eval_seconds or 0.0) + result.seconds
        self.scorer.record(record, result)
        return result

    def _completed_objectives(self) -> list[float]:
        """The search objective of every completed trial of the study (any worker's)."""
        from optuna.trial import TrialState

        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return [sum(t.values) / len(t.values) for t in done if t.values]

    def _in_top(self, objective: float | None, completed: list[float] | None = None) -> bool:
        """Whether a finished trial with this search objective is among the best
        ``confirm_top`` so far (``completed``: the study's objectives, read once by a caller
        that asks for several trials). Every trial of the final top K was in the top K when it
        finished, so keeping (or confirming) those misses none of them."""
        if self.search_part != "search" or self.confirm_top == 0 or objective is None:
            return False
        completed = self._completed_objectives() if completed is None else completed
        return sum(v > objective for v in completed) < self.confirm_top
