"""A worker that died mid-trial: its trial is closed, its result kept if it was recorded, its
parameters queued again otherwise. One mixin of :class:`~harness.search.runner.SearchRunner`.

Two ways a worker is found dead: on an RDB storage (PostgreSQL, any host) Optuna's heartbeat
goes stale and :meth:`TrialFaults.fail_stale_trials` hands the trial to
:meth:`TrialFaults._record_stale`; with a journal file (one machine), the trial's recorded worker
process is gone (:mod:`harness.search.workers`) and :meth:`TrialFaults.close_dead_trials` closes
it. Either way nothing completed is lost and nothing is counted twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.errors import StoreUnavailable
from harness.record import Leaderboard, TrialRecord
from harness.search.optuna_compat import quiet_experimental, storage_trial_id
from harness.search.study import StaleTrials
from harness.search.workers import is_alive, is_local

if TYPE_CHECKING:
    from harness.pipeline import Scorer
    from harness.search.space import SearchSpace

INTERRUPTED = "interrupted"
WORKER = "worker"  # user attr: host, pid and start time of the process running the trial
LEADERBOARD_ID = "leaderboard_id"  # user attr: the trial's row id, fixed when it starts


class TrialFaults:
    """Closing the trials of workers that stopped (the runner provides the state below)."""

    space: SearchSpace
    board: Leaderboard
    scorer: Scorer
    study: Any
    storage: Any
    stale: StaleTrials
    study_name: str
    search_part: str

    if TYPE_CHECKING:

        def _warn(self, message: str) -> None: ...

    def fail_stale_trials(self) -> None:
        """Fail (and re-queue) RDB-storage trials whose worker stopped beating (any host)."""
        from optuna.storages import fail_stale_trials

        with quiet_experimental():
            fail_stale_trials(self.study)

    def _record_stale(self, frozen: Any) -> bool:
        """A trial whose worker stopped beating was failed: mark its row interrupted, unless
        the worker recorded its result before it died (then the result stands and the trial is
        not run again). Returns whether to re-queue its parameters."""
        row_id = frozen.user_attrs.get(LEADERBOARD_ID)
        try:
            row = self.board.trial(row_id) if row_id else None
        except StoreUnavailable:
            row = None
        if row is not None and row["status"] in ("ok", "pruned"):
            self._warn(f"trial {frozen.number}: its worker stopped after recording it; its row stands")
            return False
        self._record_interrupted(
            frozen, "stopped beating during this trial (killed or lost); its parameters are queued again"
        )
        self._warn(f"trial {frozen.number} was left RUNNING by a worker that stopped beating: re-queued")
        return True

    def _record_interrupted(self, frozen: Any, what: str) -> None:
        """The leaderboard row of a trial whose worker is gone: interrupted, with who and why."""
        worker = frozen.user_attrs.get(WORKER) or {}
        record = TrialRecord(
            name=f"{self.study_name}#{frozen.number}",
            source="search",
            status=INTERRUPTED,
            error=f"worker pid {worker.get('pid')} on {worker.get('host')} {what}",
            study=self.study_name,
            trial_number=frozen.number,
            params=dict(frozen.params),
        )
        row_id = frozen.user_attrs.get(LEADERBOARD_ID)
        if row_id:
            record.id = row_id
        self.scorer.record(record)

    def close_dead_trials(self) -> int:
        """Close RUNNING trials whose worker process on this host is gone (``kill -9``, OOM).

        A trial that was already recorded before its worker died is told its recorded score
        (nothing completed is lost); otherwise it is recorded as interrupted on both sides, does
        not count towards the budget, and its parameters are queued again (the same rule as a
        heartbeat-stale trial on an RDB storage). Returns how many were closed.
        """
        import optuna
        from optuna.trial import TrialState

        closed = 0
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = frozen.user_attrs.get(WORKER)
            if not isinstance(worker, dict) or not is_local(worker) or is_alive(worker):
                continue  # another host's trials need a heartbeat (RDB storage), not a pid check
            row_id = frozen.user_attrs.get(LEADERBOARD_ID)
            row = self.board.trial(row_id) if row_id else None
            values = None
            if row is not None and row["status"] == "ok":
                values = self.space.objective.values(
                    self.board.suite_summary(row_id, partition=self.search_part)
                )
            try:
                if values is None:
                    self.storage.set_trial_user_attr(storage_trial_id(frozen), INTERRUPTED, True)
                    self.study.tell(frozen.number, state=TrialState.FAIL)
                else:
                    self.study.tell(frozen.number, values)
            except (RuntimeError, ValueError, optuna.exceptions.UpdateFinishedTrialError):
                continue  # another process closed it first
            closed += 1
            if values is None:
                self._record_interrupted(
                    frozen, "died during this trial (killed?); its parameters are queued again"
                )
                with quiet_experimental():
                    self.stale.retry(self.study, frozen)  # as a heartbeat-stale trial is
            self._warn(
                f"trial {frozen.number} was left RUNNING by dead worker pid {worker.get('pid')}: "
                + ("closed with its recorded score" if values is not None else "marked interrupted")
            )
        return closed
