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
from typing import Any

from harness.record import TrialRecord
from harness.search.workers import is_alive, is_local, worker_identity

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
