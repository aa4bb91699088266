"""The Optuna boundary (``harness/search/optuna_compat.py``): the private pieces the search
relies on still exist and still do what it needs. An Optuna upgrade that moves them fails here."""

from __future__ import annotations

import time
import warnings

import optuna
from optuna.trial import TrialState

from harness.search.optuna_compat import heartbeat, storage_trial_id, tpe_good_group_size
from harness.search.study import StaleTrials, open_storage


def test_heartbeat_keeps_an_ask_tell_trial_alive_and_its_absence_fails_it(tmp_path) -> None:
    warnings.simplefilter("ignore")  # Optuna flags the heartbeat API experimental
    stale = StaleTrials(max_retry=1)
    seen: list[int] = []
    stale.on_stale = lambda frozen: seen.append(frozen.number) or True
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat=1, stale=stale)
    study = optuna.create_study(storage=storage, study_name="hb")
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    assert storage_trial_id(study.get_trials()[0]) == storage_trial_id(trial)
    with heartbeat(storage, trial):
        time.sleep(3)  # past the grace period (2 beats): alive because it beats
        optuna.storages.fail_stale_trials(study)
        assert study.get_trials()[0].state == TrialState.RUNNING
    time.sleep(3)  # no beats now: stale
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL and seen == [0]
    # Re-queued with the same parameters; the failed one no longer counts as finished.
    assert trials[1].state == TrialState.WAITING and trials[1].params == trials[0].params
    assert StaleTrials.retried(trials) == {0}


def test_tpe_good_group_is_the_default_gammas() -> None:
    """The replay of pruners assumes TPE's default good group for one objective: the best 10 %
    of the finished trials, rounded up, at most 25."""
    assert [tpe_good_group_size(n) for n in (1, 10, 11, 50, 250, 300)] == [1, 1, 2, 5, 25, 25]
