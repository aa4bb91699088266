"""Optuna plumbing: storages and samplers from names in the space file / CLI."""

from __future__ import annotations

import functools
import hashlib
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.search.distributions import iter_distributions
from harness.search.optuna_compat import quiet_experimental
from harness.search.space import SearchSpace

STUDY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_study_name(name: str, where: str = "--study") -> str:
    """A study name is part of file names (the default journal): no paths, no odd characters."""
    if not STUDY_NAME_RE.match(name):
        raise HarnessError(
            f"{where}: invalid study name {name!r}",
            "use up to 100 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def default_journal(db: Path, study: str) -> Path:
    """A study's journal when no ``--storage`` is given: ``<db folder>/optuna-<db name>-<study>.journal``,
    so two boards in one folder never share a study of the same name. A journal under the
    name used before (``optuna-<study>.journal``, keyed by the study alone) is kept where it
    exists: studies started then resume, and :meth:`SearchRunner` refuses one whose trials that
    board has never recorded."""
    older = db.parent / f"optuna-{study}.journal"
    return older if older.exists() else db.parent / f"optuna-{db.stem}-{study}.journal"


def check_storage(url: str | None, default_path: Path, warn: Callable[[str], None]) -> str:
    """The storage target an URL or path names, checked without creating anything.

    ``*.journal`` or ``journal:///path``: a journal file (safe for several processes on one
    machine); ``postgresql://...`` and other SQLAlchemy URLs: RDBStorage. In-memory SQLite is
    refused (a rerun could never resume it); file SQLite is allowed with a warning, since it is
    not safe for concurrent workers.
    """
    target = url or str(default_path)
    if target.startswith("journal://"):
        target = target.removeprefix("journal://")
        if not target:
            raise HarnessError("--storage journal:// names no file", "write journal:///path/to/study.journal")
        return target
    if "://" not in target:
        if not target.endswith(".journal"):
            raise HarnessError(
                f"--storage {target!r} is neither a storage URL nor a *.journal file",
                "pass postgresql://user@host/db, sqlite:///path.db or a path ending in .journal",
            )
        return target
    scheme, _, rest = target.partition("://")
    if scheme.startswith("sqlite"):
        db_path = rest.removeprefix("/").split("?")[0]
        if db_path in ("", ":memory:") or "mode=memory" in rest:
            raise HarnessError(
                f"--storage {target!r} is an in-memory SQLite database: the study is lost when the "
                "process ends and a rerun cannot resume it",
                "use a *.journal file (the default) or sqlite:///path/to/file.db",
            )
        warn(
            "SQLite storage is not safe for several concurrent workers; use a *.journal file on one "
            "machine or postgresql:// across machines"
        )
    return target


DEFAULT_HEARTBEAT = 60.0  # seconds between a worker's heartbeats on an RDB storage
MAX_RETRY = 2  # a trial whose worker died is re-run with the same parameters at most this often


class StaleTrials:
    """Optuna's stale-trial callback for RDB storages: a trial whose worker stopped beating
    (``kill -9``, a lost machine) is failed by the next worker that looks. This hands it to
    ``on_stale`` (the search records its leaderboard row) and, unless ``on_stale`` says its
    result is already recorded, re-queues its parameters (Optuna's retry callback)."""

    def __init__(self, max_retry: int = MAX_RETRY) -> None:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self.on_stale: Callable[[Any], bool] | None = None  # FrozenTrial -> retry it?

    def __call__(self, study: Any, trial: Any) -> None:
        if self.on_stale is None or self.on_stale(trial):
            self.retry(study, trial)

    @staticmethod
    def retried(trials: Iterable[Any]) -> set[int]:
        """Numbers of the trials that were re-queued by a retry (they do not count as finished)."""
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        done: set[int] = set()
        with quiet_experimental():  # experimental in Optuna, stable since 2.8
            for t in trials:
                if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) is not None:
                    done.update(RetryHeartbeatStaleTrialCallback.retry_history(t))
        return done


def open_storage(target: str, heartbeat: float = DEFAULT_HEARTBEAT, stale: StaleTrials | None = None) -> Any:
    """An Optuna storage for a target checked by :func:`check_storage` (this creates it).

    RDB storages (PostgreSQL across machines) get heartbeats every ``heartbeat`` seconds and a
    grace period of two beats; ``stale`` handles the trials of workers that stopped beating.
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    try:
        if "://" not in target:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        interval = max(1, round(heartbeat))
        for attempt in range(5):
            try:
                return optuna.storages.RDBStorage(
                    target,
                    heartbeat_interval=interval,
                    grace_period=2 * interval,
                    heartbeat_stale_trial_callback=stale or StaleTrials(),
                )
            except Exception as err:  # noqa: BLE001
                # Workers started together race to create Optuna's tables (PostgreSQL:
                # duplicate key in pg_type): the loser retries and finds them made.
                if attempt == 4 or "duplicate key" not in str(err) and "already exists" not in str(err):
                    raise
                time.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")
    except Exception as err:  # noqa: BLE001  (any driver error means: cannot open)
        raise HarnessError(
            f"cannot open Optuna storage {target!r}: {str(err).splitlines()[0][:200]}",
            "pass a reachable --storage URL or a writable *.journal path",
        ) from None


def make_sampler(space: SearchSpace) -> Any:
    """The space's sampler; a misspelt option is one line (exit 2), before anything is written.

    Random-number samplers are re-seeded per trial from ``(seed, trial number)``
    (:class:`TrialSeededSampler`): a resumed or second process continues the sequence instead
    of repeating trial 0's draws, and one process's run stays reproducible. The grid sampler
    already assigns grid points by trial number.
    """
    spec = space.sampler
    where = f"sampler {spec.name!r}"
    if spec.name == "grid":
        if spec.options:
            raise HarnessError(
                f"{where} takes no options, got {sorted(spec.options)}", "remove sampler.options"
            )
        return _AskTellGridSampler(grid_space(space), seed=spec.seed)
    factory = functools.partial(_seeded_sampler, spec.name, dict(spec.options))
    try:
        factory(spec.seed)
    except (TypeError, ValueError) as err:
        raise HarnessError(f"{where}: bad sampler.options: {err}", "fix or remove the option") from None
    return TrialSeededSampler(factory, spec.seed)


def _seeded_sampler(name: str, options: dict[str, Any], seed: int) -> Any:
    import optuna

    options = dict(options)
    if name == "tpe":
        # multivariate + group: TPE models the per-method parameter groups jointly.
        options.setdefault("multivariate", True)
        options.setdefault("group", True)
        with quiet_experimental():  # `group` is flagged experimental; it is what conditional spaces need
            return optuna.samplers.TPESampler(seed=seed, **options)
    if name == "cmaes":
        # CMA-ES handles the continuous parameters; the method choice falls back to random.
        options.setdefault("warn_independent_sampling", False)
        with quiet_experimental():
            return optuna.samplers.CmaEsSampler(seed=seed, **options)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, **options)
    return optuna.samplers.RandomSampler(seed=seed, **options)


def trial_seed(seed: int, number: int) -> int:
    """A 32-bit seed for trial ``number`` of a study seeded with ``seed``."""
    digest = hashlib.sha256(f"{seed}:{number}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _sampler_base() -> type:
    import optuna

    return optuna.samplers.BaseSampler


class TrialSeededSampler(_sampler_base()):  # type: ignore[misc]
    """A sampler whose random state is a function of the seed and the trial number.

    Optuna's samplers seed their RNG once per process, so each new process (a resume after a
    crash, a second worker) replays the same draws. This wrapper builds the inner sampler
    afresh in ``before_trial`` with :func:`trial_seed`; the samplers keep no other state that
    the study's storage does not hold (TPE, random, CMA-ES and NSGA-II read the history from it).
    """

    def __init__(self, factory: Callable[[int], Any], seed: int):
        self._factory = factory
        self._seed = seed
        self._sampler = factory(seed)

    def before_trial(self, study: Any, trial: Any) -> None:
        self._sampler = self._factory(trial_seed(self._seed, trial.number))
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()


def _grid_sampler_base() -> type:
    import optuna

    return optuna.samplers.GridSampler


class _AskTellGridSampler(_grid_sampler_base()):  # type: ignore[misc]
    """GridSampler calls ``study.stop()`` when the grid is done, which only works inside
    ``study.optimize``; the search loop (ask/tell) checks ``is_exhausted`` itself."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


def grid_space(space: SearchSpace) -> dict[str, list[Any]]:
    """Grid search needs every distribution to be a finite set: choices, or ranges with a step."""
    grid: dict[str, list[Any]] = {"method": list(space.methods)}
    for method in space.methods:
        for path, dist in iter_distributions(space.template(method)):
            name = f"{method}.{path}"
            if "choice" in dist:
                grid[name] = list(dist["choice"])
            elif "step" in dist and "gradient" not in dist:
                low, high = dist.get("float") or dist["int"]
                step = dist["step"]
                count = int(round((high - low) / step)) + 1
                grid[name] = [low + i * step for i in range(count)]
            else:
                raise HarnessError(
                    f"grid sampler: {name} has no finite set of values",
                    "give it a step or a choice list, or use another sampler",
                )
    return grid


def make_pruner(selection: Any) -> Any:
    """Optuna's pruner for a space's ``selection``: ``WilcoxonPruner`` when it has rungs.

    Why Wilcoxon and not successive halving / Hyperband: every trial is scored on the same
    questions in the same order, so a trial can be compared with the best one *question by
    question* (paired), which is what makes a 0/1 score on a few dozen questions informative;
    a rung-average rule (halving) compares noisy means and stops a fixed share of trials at
    every rung, whatever the evidence. Replayed on the demo's 50 trials
    (``scripts/replay_pruners.py``, README "Selection"), halving spent 78-81 % of the
    question-evaluations to Wilcoxon's 90 %, with the same top five: cheaper there, but with
    no bound on how often it stops the best trial.
    """
    import optuna

    if not selection.rungs or selection.pruner == "none":
        return optuna.pruners.NopPruner()
    with quiet_experimental():
        return optuna.pruners.WilcoxonPruner(p_threshold=selection.p_threshold, n_startup_steps=0)


def question_values(
    samples: Iterable[Any],
    parts: dict[str, Any],
    weights: dict[str, float] | None,
    step: Callable[[str, int], int],
) -> dict[int, float]:
    """Each question's share of a weighted-mean objective: its per-question values times the
    weight of its task in the objective (so the shares of a task average to its part of the
    objective). Keyed by ``step(task, doc_id)``, the id the pruner pairs trials on."""
    from harness.evaluate.results import mix_compositions

    if not weights or any(k not in parts for k in weights):
        return {}
    composition = mix_compositions(weights, parts) or {}
    out: dict[int, float] = {}
    for sample in samples:
        weight = composition.get((sample.task, sample.metric, sample.num_fewshot))
        if weight is None or sample.value is None:
            continue
        key = step(sample.task, sample.doc_id)
        out[key] = out.get(key, 0.0) + weight * sample.value
    return out
