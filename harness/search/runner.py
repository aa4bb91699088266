"""The main job: ``harness search`` — sample, build, score, record, repeat.

Each trial: sample a recipe (define-by-run) -> build it in memory against resident
donors -> score it with lm-eval -> record it in DuckDB -> tell Optuna -> free it.
A recipe already scored with the same suites and limit is never rebuilt or rescored:
its scores are reused and the row says so. A failing trial is recorded as failed and
the study goes on; Ctrl-C marks the running trial interrupted and a rerun resumes.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TextColumn

from harness.assets.fsutil import Reporter, progress_columns
from harness.build.loading import check_device
from harness.errors import HarnessError, StoreUnavailable
from harness.record import Leaderboard, TrialRecord
from harness.search.space import SearchSpace
from harness.search.study import check_storage, check_study_name, make_sampler, open_storage
from harness.search.workers import is_alive, is_local, recipe_claim, worker_identity

INTERRUPTED = "interrupted"
WORKER = "worker"  # user attr: host, pid and start time of the process running the trial
LEADERBOARD_ID = "leaderboard_id"  # user attr: the trial's row id, fixed when it starts


@dataclass
class SearchOptions:
    budget: int
    db: Path
    study_name: str | None = None
    storage: str | None = None
    limit: int | None = None  # overrides the space's per-task limit
    device: str | None = None


@dataclass
class SearchOutcome:
    study_name: str
    finished: int
    ran: int
    reused: int
    failed: int
    seconds: float
    best: list[dict[str, Any]] = field(default_factory=list)
    references: list[TrialRecord] = field(default_factory=list)  # scored by this run


class SearchRunner:
    def __init__(self, space: SearchSpace, options: SearchOptions, console: Console | None = None):
        if options.budget <= 0:
            raise HarnessError(
                f"--budget must be >= 1, got {options.budget}", "pass a positive number of trials"
            )
        if options.limit is not None and options.limit <= 0:
            raise HarnessError(f"--limit must be >= 1, got {options.limit}", "pass a positive limit")
        self.space = space
        self.options = options
        self.console = console or Console(stderr=True)
        # Every check before anything is written: name, sampler, storage URL, database.
        self.study_name = check_study_name(
            space.name if options.study_name is None else options.study_name,
            "the space's name" if options.study_name is None else "--study",
        )
        self.limit = options.limit if options.limit is not None else space.limit
        self.suites = ",".join(space.suite_names)
        check_device(options.device)
        sampler = make_sampler(space)
        default_storage = options.db.parent / f"optuna-{self.study_name}.journal"
        target = check_storage(options.storage, default_storage, warn=self._warn)
        self.board = Leaderboard(options.db, warn=self._warn)
        self.board.check_writable()
        self.storage = open_storage(target)
        self.study = self._open_study(sampler)
        self.claims = options.db.parent / f".{options.db.name}.claims"
        from harness.build import DonorPool

        self.pool = DonorPool()  # donors stay loaded for the whole search

    def _warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning[/]: {escape(message)}", soft_wrap=True)

    # -- study bookkeeping -----------------------------------------------------------

    def _open_study(self, sampler: Any) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            return optuna.create_study(
                study_name=self.study_name,
                storage=self.storage,
                sampler=sampler,
                directions=self.space.objective.directions,
                load_if_exists=True,
            )
        except ValueError as err:  # e.g. directions differ from the stored study
            raise HarnessError(
                f"study {self.study_name!r} cannot be resumed: {err}",
                "use another --study name or the original space file",
            ) from None

    def finished_trials(self) -> list[Any]:
        from optuna.trial import TrialState

        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        return [
            t
            for t in self.study.get_trials(deepcopy=False, states=states)
            if not t.user_attrs.get(INTERRUPTED)
        ]

    def close_dead_trials(self) -> int:
        """Close RUNNING trials whose worker process on this host is gone (``kill -9``, OOM).

        A trial that was already recorded before its worker died is told its recorded score
        (nothing completed is lost); otherwise it is recorded as interrupted on both sides and
        does not count towards the budget. Returns how many were closed.
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
                values = self.space.objective.values(self.board.suite_summary(row_id))
            try:
                if values is None:
                    self.storage.set_trial_user_attr(frozen._trial_id, INTERRUPTED, True)
                    self.study.tell(frozen.number, state=TrialState.FAIL)
                else:
                    self.study.tell(frozen.number, values)
            except (RuntimeError, ValueError, optuna.exceptions.UpdateFinishedTrialError):
                continue  # another process closed it first
            closed += 1
            if values is None:
                record = TrialRecord(
                    name=f"{self.study_name}#{frozen.number}",
                    source="search",
                    status=INTERRUPTED,
                    error=f"worker pid {worker.get('pid')} on {worker.get('host')} died during this "
                    "trial (killed?); closed by a later run",
                    study=self.study_name,
                    trial_number=frozen.number,
                    suites=self.suites,
                    eval_limit=self.limit,
                    params=dict(frozen.params),
                )
                if row_id:
                    record.id = row_id
                self.board.record(record)
            self._warn(
                f"trial {frozen.number} was left RUNNING by dead worker pid {worker.get('pid')}: "
                + ("closed with its recorded score" if values is not None else "marked interrupted")
            )
        return closed

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> SearchOutcome:
        start = time.perf_counter()
        outcome = SearchOutcome(self.study_name, len(self.finished_trials()), 0, 0, 0, 0.0)
        columns = progress_columns(None, TextColumn("{task.fields[best]}"))
        self.close_dead_trials()
        if self.board.flush_pending():
            self._warn(
                f"{self.board.pending()} earlier records still wait to be written to {self.options.db}"
            )
        outcome.references = self.score_references()
        with Progress(*columns, console=self.console, transient=False) as progress:
            bar = progress.add_task(
                self.study_name,
                total=self.options.budget,
                completed=min(outcome.finished, self.options.budget),
                best=self._best_text(),
            )
            while len(self.finished_trials()) < self.options.budget:
                if self._grid_exhausted():
                    self._warn("the grid is exhausted: every grid point has been tried")
                    break
                status = self.run_one()
                outcome.ran += status == "ok"
                outcome.reused += status == "reused"
                outcome.failed += status == "failed"
                progress.update(bar, completed=len(self.finished_trials()), best=self._best_text())
        outcome.finished = len(self.finished_trials())
        outcome.seconds = time.perf_counter() - start
        try:
            self.board.flush_pending()
            outcome.best = self.board.ranking(top=5, sort="objective", study=self.study_name)
        except StoreUnavailable as err:  # the trials are recorded (or spooled); only the summary waits
            self._warn(f"no summary: {err}")
        return outcome

    def score_references(self) -> list[TrialRecord]:
        """Score the space's reference models once per study, suites and limit (not Optuna
        trials: they never count towards the budget). A failure is recorded and skipped."""
        from harness.align.donors import donor_training
        from harness.build.loading import load_pretrained, model_facts

        scored = []
        for ref in self.space.reference_models:
            try:
                if self.board.find_reference(ref, self.study_name, self.suites, self.limit):
                    continue
            except StoreUnavailable as err:  # cannot tell whether it was scored: skip it this run
                self._warn(f"reference {ref} not scored this run: {err}")
                continue
            record = TrialRecord(
                name=ref,
                source="eval",
                model_ref=ref,
                study=self.study_name,
                suites=self.suites,
                eval_limit=self.limit,
            )
            self.console.print(f"scoring reference model {escape(ref)} on {escape(self.suites)}")
            try:
                model, tokenizer, path = load_pretrained(
                    ref, device=self.options.device, dtype=self.space.dtype
                )
                record.align_method, record.align_steps = donor_training(path)
                record.num_parameters, record.dtype = model_facts(model)
                result = self._evaluate(model, tokenizer)
                del model
            except KeyboardInterrupt:
                raise
            except Exception as err:  # noqa: BLE001  (recorded; the search still runs)
                record.status, record.error = "failed", f"{type(err).__name__}: {str(err)[:2000]}"
                self.board.record(record)
                self._warn(f"reference {ref} failed: {record.error[:200]}")
                continue
            finally:
                gc.collect()
            self._set_objective(record, result.summary, result.summary_stderr)
            self.board.record(record, result)
            scored.append(record)
        return scored

    def _evaluate(self, model: Any, tokenizer: Any) -> Any:
        from harness.evaluate import evaluate_model

        data_dir = Path(self.space.data_dir) if self.space.data_dir else None
        return evaluate_model(
            model,
            tokenizer,
            self.space.suite_names,
            limit=self.limit,
            data_dir=data_dir,
            batch_size=self.space.batch_size,
            progress=False,
        )

    def run_one(self) -> str:
        """One trial, start to finish. Returns ok | reused | failed."""

        trial = self.study.ask()
        record = TrialRecord(
            name=f"{self.study_name}#{trial.number}",
            source="search",
            study=self.study_name,
            trial_number=trial.number,
            suites=self.suites,
            eval_limit=self.limit,
        )
        trial.set_user_attr(WORKER, worker_identity())
        trial.set_user_attr(LEADERBOARD_ID, record.id)
        try:
            method = trial.suggest_categorical("method", list(self.space.methods))
            align = trial.suggest_categorical("align", list(self.space.align)) if self.space.align else None
            recipe = self.space.recipe(method, trial, align=align)
            recipe.name = f"{self.study_name}#{trial.number}-{method}" + (f"+{align}" if recipe.align else "")
            record.name = recipe.name
            record.merge_method = recipe.merge.get("merge_method")
            record.align_method = recipe.align.method if recipe.align else None
            record.recipe_yaml, record.recipe_hash = recipe.to_yaml(), recipe.content_hash()
            record.params = dict(trial.params)

            # One worker at a time per recipe: a second one drawing it waits, then reuses.
            with recipe_claim(
                self.claims,
                f"{record.recipe_hash}|{self.suites}|{self.limit}",
                Reporter(self.console, "search"),
                f"trial {trial.number}: another worker is scoring the same recipe; waiting to reuse its scores",
            ):
                reused = self._find_scored(record.recipe_hash)
                if reused:
                    summary = self.board.suite_summary(reused)
                    record.reused_from = reused
                    return self._finish(trial, record, summary, copy_from=reused)

                from harness.build import build_model
                from harness.recipe import resolve_recipe

                resolved = resolve_recipe(recipe, where=record.name)
                built = build_model(resolved, pool=self.pool, device=self.options.device)
                record.build_seconds, record.num_parameters, record.dtype = (
                    built.seconds,
                    built.num_parameters,
                    built.dtype,
                )
                record.align_steps = built.align_steps
                result = self._evaluate(built.model, built.tokenizer)
                del built
                return self._finish(trial, record, result.summary, result=result)
        except KeyboardInterrupt:
            record.status, record.error = (
                INTERRUPTED,
                "interrupted (Ctrl-C or SIGTERM); a rerun resumes the study",
            )
            trial.set_user_attr(INTERRUPTED, True)
            self._close(trial, record)
            raise
        except StoreUnavailable:
            raise  # a record could not be kept anywhere: _close told Optuna; stop the search
        except Exception as err:  # noqa: BLE001  (any run-time failure: record it, go on)
            record.status, record.error = "failed", f"{type(err).__name__}: {str(err)[:2000]}"
            trial.set_user_attr("error", record.error)
            self._close(trial, record)
            self._warn(f"trial {trial.number} failed: {record.error[:200]}")
            return "failed"
        finally:
            gc.collect()

    def _close(
        self,
        trial: Any,
        record: TrialRecord,
        values: list[float] | None = None,
        result: Any = None,
        copy_from: str | None = None,
    ) -> None:
        """Record the trial, then tell Optuna whatever happens to the record: no trial is
        left RUNNING, and a record the store cannot take right now is spooled by ``record``."""
        from optuna.trial import TrialState

        try:
            if copy_from:
                self.board.record_copy(record, copy_from)
            else:
                self.board.record(record, result)
        finally:
            if values is None:
                self.study.tell(trial, state=TrialState.FAIL)
            else:
                self.study.tell(trial, values)

    def _find_scored(self, recipe_hash: str | None) -> str | None:
        """A trial that already scored this recipe; None when the store cannot say (rescoring
        then costs time, but loses nothing)."""
        if recipe_hash is None:
            return None
        try:
            return self.board.find_scored(recipe_hash, self.suites, self.limit)
        except StoreUnavailable as err:
            self._warn(f"cannot look up earlier scores ({err}); scoring this recipe anyway")
            return None

    def _finish(
        self,
        trial: Any,
        record: TrialRecord,
        summary: dict[str, float | None],
        result: Any = None,
        copy_from: str | None = None,
    ) -> str:
        errors = (
            result.summary_stderr if result is not None else self.board.suite_summary(copy_from, "stderr")
        )  # type: ignore[arg-type]
        values = self._set_objective(record, summary, errors)
        if values is None:
            missing = [k for k in self.space.objective.keys if summary.get(k) is None]
            record.status, record.error = "failed", f"objective has no data for {missing}"
            trial.set_user_attr("error", record.error)
        self._close(trial, record, values, result=result, copy_from=copy_from)
        if values is None:
            return "failed"
        return "reused" if copy_from else "ok"

    def _set_objective(
        self, record: TrialRecord, summary: dict[str, float | None], errors: dict[str, float | None]
    ) -> list[float] | None:
        """Optuna's value(s) for a summary (None: a key has no data); the record gets the
        leaderboard's objective (the value, or the mean of a Pareto study's) and its stderr."""
        values = self.space.objective.values(summary)
        if values is not None:
            record.objective = sum(values) / len(values)
            record.objective_stderr = self.space.objective.stderr(errors)
            record.objective_weights = self.space.objective.weights
        return values

    def _grid_exhausted(self) -> bool:
        is_exhausted = getattr(self.study.sampler, "is_exhausted", None)
        return bool(is_exhausted and is_exhausted(self.study))

    def _best_text(self) -> str:
        from optuna.trial import TrialState

        done = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        if not done:
            return "best: -"
        if len(self.space.objective.directions) > 1:
            return f"pareto front: {len(self.study.best_trials)} trials"
        best = max(done, key=lambda t: t.value)
        return escape(f"best {best.value:.4f} (#{best.number} {best.params.get('method')})")
