"""The one place that touches Optuna's private API (pinned by ``tests/test_optuna_compat.py``).

Optuna's heartbeat runs inside ``study.optimize`` only; the search drives trials with
ask/tell, so it starts the same heartbeat thread itself. Closing a trial left RUNNING by a
dead process needs its storage id, which Optuna keeps private on ``FrozenTrial``. Replaying
a study (``scripts/replay_pruners.py``) needs the size of TPE's "good" group, which Optuna's
default ``gamma`` (private) decides.
If an Optuna upgrade moves either, the boundary test fails by name. The public APIs Optuna
still flags experimental (heartbeats, retries, TPE ``group``, WilcoxonPruner) are used inside
:func:`quiet_experimental`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any


def storage_trial_id(trial: Any) -> int:
    """The storage's id of a Trial or FrozenTrial (not its number)."""
    return int(trial._trial_id)


def tpe_good_group_size(n: int) -> int:
    """How many of ``n`` finished trials TPE with its default ``gamma`` models as "good"."""
    from optuna.samplers._tpe.sampler import default_gamma

    return int(default_gamma(n))


@contextlib.contextmanager
def heartbeat(storage: Any, trial: Any) -> Iterator[None]:
    """Beat for ``trial`` while the block runs, when ``storage`` has heartbeats enabled (RDB
    storage with ``heartbeat_interval``); a no-op otherwise."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    with get_heartbeat_thread(storage_trial_id(trial), storage):
        yield


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
    """Silence Optuna's ExperimentalWarning (and its note that heartbeats are meant for
    ``optimize``: the search drives ask/tell and starts the heartbeat itself)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        yield
