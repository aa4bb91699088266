"""Search stage: Optuna over recipes. Entry point: :func:`run_search`."""

from __future__ import annotations

from rich.console import Console

from harness.search.runner import SearchOptions, SearchOutcome, SearchRunner
from harness.search.space import ObjectiveSpec, SamplerSpec, SearchSpace, load_space


def run_search(space: SearchSpace, options: SearchOptions, console: Console | None = None) -> SearchOutcome:
    """Run (or resume) a study until it has ``options.budget`` finished trials."""
    return SearchRunner(space, options, console=console).run()


__all__ = [
    "ObjectiveSpec",
    "SamplerSpec",
    "SearchOptions",
    "SearchOutcome",
    "SearchRunner",
    "SearchSpace",
    "load_space",
    "run_search",
]
