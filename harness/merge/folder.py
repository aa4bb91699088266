"""A built model's folder: what the ecosystem expects of a merge, ready for ``hf upload``.

Every build writes the same files (``harness build``, and a search's kept models):

- the weights and ``config.json`` (``save_pretrained``: safetensors, sharded with an index
  when large) and the tokenizer files;
- ``mergekit_config.yml``: the recipe's merge part as mergekit itself serialises it, model
  references resolved to the paths the build read (``mergekit-yaml`` rebuilds the merge);
- ``recipe.yaml``: the whole recipe (merge, alignment, seed), what ``harness build`` reads;
- ``README.md``: the model card (:func:`harness.merge.card.write_card`).

Files follow the user's umask: ``save_pretrained`` writes the weights through a private
temporary file (mode 0600), so every file written here gets the mode a plain ``open`` would
give in that folder.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from harness.merge.card import write_card
from harness.recipe import Recipe

MERGEKIT_CONFIG = "mergekit_config.yml"
RECIPE_FILE = "recipe.yaml"

Snapshot = dict[str, tuple[int, int, int]]


def snapshot(folder: Path) -> Snapshot:
    """The folder's files as (inode, mtime, size): what a later save changed is told apart
    from what was there (an --overwrite folder keeps the user's other files' modes)."""
    if not folder.is_dir():
        return {}
    out: Snapshot = {}
    for path in folder.iterdir():
        with contextlib.suppress(OSError):
            st = path.stat()
            out[path.name] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def save_model_folder(
    out_dir: Path,
    recipe: Recipe | None,
    merge_config: Any,
    *,
    model: Any = None,
    tokenizer: Any = None,
    since: Snapshot | None = None,
    trial_id: str | None = None,
    db: Path | None = None,
) -> Path:
    """Write the model folder (``model`` / ``tokenizer`` None: already there, e.g. written by
    mergekit's disk route after ``since`` was taken; ``recipe`` None: a model without one, the
    weights and tokenizer alone). ``trial_id`` / ``db``: the leaderboard row the card names for
    a rebuild (no scores are read here: see :func:`write_card`)."""
    before = snapshot(out_dir) if since is None else since
    if model is not None:
        model.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    if recipe is not None:
        (out_dir / MERGEKIT_CONFIG).write_text(mergekit_yaml(merge_config), encoding="utf-8")
        (out_dir / RECIPE_FILE).write_text(recipe.to_yaml(), encoding="utf-8")
        write_card(out_dir, recipe, merge_config, trial_id=trial_id, db=db)
    follow_umask(out_dir, before)
    return out_dir


def mergekit_yaml(merge_config: Any) -> str:
    """A mergekit configuration as mergekit writes it beside its own merges (round-trips
    through ``MergeConfiguration``)."""
    return merge_config.to_yaml() + "\n"


def follow_umask(folder: Path, before: Snapshot | None = None) -> None:
    """Give each file written in ``folder`` since ``before`` (default: every file) the mode a
    new file gets there: ``0o666 & ~umask``, read from a probe file (so a default ACL counts
    too, and the process's umask is never changed, even for a moment)."""
    mode = new_file_mode(folder)
    before = before or {}
    for name, stat in snapshot(folder).items():
        path = folder / name
        if before.get(name) == stat or not path.is_file() or path.is_symlink():
            continue
        if (path.stat().st_mode & 0o777) != mode:
            os.chmod(path, mode)


def new_file_mode(folder: Path) -> int:
    """The permission bits a file created in ``folder`` with mode 0666 gets."""
    probe = folder / f".harness-mode-probe-{os.getpid()}"
    fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    try:
        return os.fstat(fd).st_mode & 0o777
    finally:
        os.close(fd)
        probe.unlink()
