"""Building the DPO-made demo donors: models that really differ, for the demo search to merge.

Which donors there are (base, alignment, seed) is demo data, in :mod:`harness.assets.donors`;
this module trains them with the alignment stage.

The demo has one real model (SmolLM2-135M-Instruct). Merging it with itself is pointless, so
this module aligns it on two disjoint preference sets built by the seed recipe from offline
data the leaderboard does not score, and caches the results as demo models:

* ``demo:smollm2-135m-dpo-science``: sDPO, T=2, over SciQ and OpenBookQA pairs (easy -> hard
  by the base model's reward accuracy);
* ``demo:smollm2-135m-dpo-commonsense``: DPO over PIQA, Social-IQA and CommonsenseQA pairs.

Each is built once (about 4 minutes on 2 idle CPU cores, with a progress bar), in a staging
folder renamed into place, with a ``harness_demo.json`` marker holding the recipe hash and the
training records; a re-run skips donors whose marker matches the current spec.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.assets.donors import DEMO_DONORS, DonorSpec
from harness.assets.fsutil import Reporter, exclusive_lock, progress_columns

if TYPE_CHECKING:
    from rich.console import Console

log = logging.getLogger(__name__)
MARKER = "harness_demo.json"  # same marker name as the converted demo model


@dataclass
class DonorsInfo:
    """Where the donors are; ``built`` lists what this call trained ([] = all cached)."""

    models: dict[str, Path]
    built: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        lines = ["Demo donors:"]
        for name, path in self.models.items():
            took = f" (built in {self.seconds[name]:.0f} s)" if name in self.seconds else ""
            lines.append(f"  demo:{name}  {path}{took}")
        return "\n".join(lines)


def donor_ready(path: Path, spec: DonorSpec) -> bool:
    """True if ``path`` holds this donor built from the current spec (marker written last)."""
    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (path / "config.json").is_file() and marker.get("spec_hash") == spec.spec_hash()


def prepare_demo_donors(
    console: Console | None = None,
    *,
    names: list[str] | None = None,
    force: bool = False,
    device: str | None = None,
) -> DonorsInfo:
    """Build (once) the DPO demo donors as ``demo:<name>`` models; idempotent.

    Prepares the demo assets and preference sets first if needed. ``device`` defaults to CUDA
    when available. Raises HarnessError for unknown names or missing assets.
    """
    from harness.align.demo_sets import prepare_demo_preference_sets
    from harness.assets import demo_model_dir, prepare_assets
    from harness.errors import HarnessError
    from harness.paths import harness_home

    say = Reporter(console, "donors")
    selected = list(names or DEMO_DONORS)
    unknown = [n for n in selected if n not in DEMO_DONORS]
    if unknown:
        raise HarnessError(f"unknown demo donor(s): {', '.join(unknown)}", f"known: {', '.join(DEMO_DONORS)}")
    prepare_assets(console)
    needed = sorted(
        {
            s.path.removeprefix("demo:")
            for n in selected
            for s in DEMO_DONORS[n].config().data
            if s.path.startswith("demo:")
        }
    )
    if needed:
        prepare_demo_preference_sets(needed, say=say)

    info = DonorsInfo(models={})
    home = harness_home()
    with exclusive_lock(home / ".donors.lock", f"waiting for another run building donors in {home} ...", say):
        for name in selected:
            spec = DEMO_DONORS[name]
            final = demo_model_dir(name)
            _sweep(final)
            if not force and donor_ready(final, spec):
                info.models[name] = final
                continue
            start = time.perf_counter()
            say(f"training demo:{name}: {spec.description}")
            with _step_bar(console, name) as on_progress:
                build_donor(spec, final, device=device, say=say, on_progress=on_progress)
            info.seconds[name] = time.perf_counter() - start
            info.built.append(name)
            info.models[name] = final
            say(f"demo:{name} ready in {info.seconds[name]:.0f} s at {final}")
    return info


@contextlib.contextmanager
def _step_bar(console: Console | None, name: str) -> Iterator[Callable[[int, int, int], None] | None]:
    """A progress bar (optimizer steps, elapsed, ETA) for one donor's training, on ``console``."""
    if console is None:
        yield None
        return
    from rich.progress import Progress

    with Progress(*progress_columns("steps"), console=console, transient=True) as progress:
        bar = progress.add_task(f"demo:{name}", total=None)

        def update(step: int, done: int, total: int) -> None:
            progress.update(bar, description=f"demo:{name} align step {step}", completed=done, total=total)

        yield update


def build_donor(
    spec: DonorSpec,
    final: Path,
    *,
    device: str | None = None,
    say: Any = None,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> Path:
    """Train one donor and publish it atomically at ``final``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.align.trainer import align_model
    from harness.assets import atomic_dir, resolve_model
    from harness.assets.fsutil import make_readable

    base_path = resolve_model(spec.base)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    config = spec.config()

    def progress(record: dict[str, Any]) -> None:
        if say is not None:
            say(
                f"  step {record['step']} ({record['chunk']}): {record['train_steps']} steps, "
                f"{record['seconds']:.0f} s, loss {record['loss']:.3f}, "
                f"margin {record['rewards_margins']:.3f}, acc {record['rewards_accuracies']:.2f}"
            )

    result = align_model(
        model, tokenizer, config, device=device, seed=spec.seed, on_step=progress, on_progress=on_progress
    )
    with atomic_dir(final) as stage:
        result.model.to("cpu").save_pretrained(stage)
        tokenizer.save_pretrained(stage)
        (stage / "align.yaml").write_text(_align_yaml(spec), encoding="utf-8")
        marker = {
            "name": spec.name,
            "ref": f"demo:{spec.name}",
            "kind": "dpo-donor",
            "description": spec.description,
            "base": spec.base,
            "spec_hash": spec.spec_hash(),
            "align": config.model_dump(exclude_none=True),
            "seed": spec.seed,
            "order": result.order,
            "difficulty": result.difficulty,
            "steps": result.steps,  # the align_steps records, TRL's logs included
            "seconds": round(result.seconds, 1),
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (stage / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        make_readable(stage)
    return final


def _align_yaml(spec: DonorSpec) -> str:
    import yaml

    return yaml.safe_dump(
        {"base": spec.base, "seed": spec.seed, "align": spec.config().model_dump(exclude_none=True)},
        sort_keys=False,
    )


def _sweep(final: Path) -> None:
    from harness.assets.fsutil import sweep_stale

    sweep_stale(final)


def donor_training(path: str | Path) -> tuple[str | None, list[dict[str, Any]]]:
    """(align method, per-step training records) of a donor folder built here; (None, [])
    for any other model. Lets a leaderboard row of a donor carry how it was made."""
    try:
        marker = json.loads((Path(path) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, []
    if marker.get("kind") != "dpo-donor":
        return None, []
    return (marker.get("align") or {}).get("method"), list(marker.get("steps") or [])
