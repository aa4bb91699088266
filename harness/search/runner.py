"""The main job: ``harness search`` — sample, build, score, record, repeat.

Each trial: sample a recipe (define-by-run) -> build it in memory against resident
donors -> score it with lm-eval on the study's *search* questions, in rungs of growing
fidelity with Optuna's pruner deciding after each -> record it in DuckDB -> tell Optuna ->
if it is among the top ``confirm_top`` so far, keep its weights on disk -> free it. At the
end of the run the trials still in the top K are scored on the *held-out* questions (what the
leaderboard ranks; :mod:`harness.search.confirm` says why then). The space's reference models
get both scores before the first trial.

A recipe already scored with the same suites, limit and split is never rebuilt or rescored:
its scores are reused and the row says so. A failing trial is recorded as failed and the
study goes on; Ctrl-C marks the running trial interrupted and a rerun resumes.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TextColumn

from harness.assets.fsutil import Reporter, progress_columns
from harness.errors import HarnessError, StoreUnavailable
from harness.evaluate.questions import Partition
from harness.evaluate.results import Composition, Sample
from harness.memory import freeze_survivors, survivors_frozen
from harness.pipeline import Scorer, Scoring
from harness.placement import Placement
from harness.record import Leaderboard, RecordLog, TrialRecord, is_log_url
from harness.search.confirm import Confirmation, KeptModels
from harness.search.faults import INTERRUPTED, LEADERBOARD_ID, WORKER, TrialFaults
from harness.search.optuna_compat import heartbeat, quiet_experimental
from harness.search.space import SearchSpace
from harness.search.study import (
    DEFAULT_HEARTBEAT,
    StaleTrials,
    check_storage,
    check_study_name,
    default_journal,
    make_pruner,
    make_sampler,
    open_storage,
    question_values,
)
from harness.search.workers import recipe_claim, worker_identity
from harness.stages import stage

if TYPE_CHECKING:
    from harness.evaluate.answers import RequestCache

SPLIT_RULE = "split_rule"  # study user attr: how its questions are divided (fixed at creation)


@dataclass
class SearchOptions:
    budget: int
    db: Path
    study_name: str | None = None
    storage: str | None = None
    limit: int | None = None  # overrides the space's per-task limit
    device: str | None = None
    confirm_top: int | None = None  # overrides the space's selection.confirm_top
    heartbeat: float = DEFAULT_HEARTBEAT  # seconds between heartbeats on an RDB storage
    # Wall-clock budget (seconds from the start of ``run``): no trial starts after it; the one
    # running finishes and is recorded, so a CI job with a time limit ends with its results.
    timeout: float | None = None


@dataclass
class SearchOutcome:
    study_name: str
    finished: int
    ran: int
    reused: int
    failed: int
    seconds: float
    pruned: int = 0
    confirmed: int = 0
    questions: int = 0  # question-evaluations this run spent on trials (references excluded)
    timed_out: bool = False  # stopped by ``SearchOptions.timeout`` before the budget was reached
    best: list[dict[str, Any]] = field(default_factory=list)
    references: list[TrialRecord] = field(default_factory=list)  # scored by this run


def donor_headroom(space: SearchSpace) -> float:
    """How many times a donor's size the device must keep free beside the resident donors
    (:class:`harness.merge.DonorPool`): the trial's merged model and the merge's temporaries
    (2); with alignment, its training state too: a LoRA adapter and activations (+1), or for a
    full fine-tune the reference copy, gradients and Adam's two moments (+4)."""
    templates = [t for t in (space.align or {}).values() if t is not None]
    if not templates:
        return 2.0
    return 3.0 if all(t.get("lora") is not None for t in templates) else 6.0


class SearchRunner(TrialFaults, Confirmation):
    def __init__(self, space: SearchSpace, options: SearchOptions, console: Console | None = None):
        if options.budget <= 0:
            raise HarnessError(
                f"--budget must be >= 1, got {options.budget}", "pass a positive number of trials"
            )
        if options.limit is not None and options.limit <= 0:
            raise HarnessError(f"--limit must be >= 1, got {options.limit}", "pass a positive limit")
        if options.timeout is not None and not options.timeout > 0:
            raise HarnessError(
                f"--timeout must be > 0 seconds, got {options.timeout}",
                "pass the wall-clock seconds after which no new trial starts, or leave it out",
            )
        self.space = space
        self.options = options
        self.console = console or Console(stderr=True)
        # Every check before anything is written: name, sampler, storage URL, database.
        self.study_name = check_study_name(
            space.name if options.study_name is None else options.study_name,
            "the space's name" if options.study_name is None else "--study",
        )
        self.limit = options.limit if options.limit is not None else space.limit
        self.selection = space.selection
        self.confirm_top = (
            options.confirm_top if options.confirm_top is not None else self.selection.confirm_top
        )
        if self.confirm_top < 0:
            raise HarnessError(f"--confirm-top must be >= 0, got {self.confirm_top}", "pass 0 or more")
        if self.selection.rungs and self.limit is not None and self.selection.rungs[-1] >= self.limit:
            raise HarnessError(
                f"--limit {self.limit} is not above the space's last rung ({self.selection.rungs[-1]})",
                "raise --limit or lower selection.rungs in the space",
            )
        # One device and dtype decision for every stage of the run (harness.placement).
        self.placement = Placement.decide(options.device, space.dtype)
        sampler = make_sampler(space)
        target = check_storage(options.storage, default_journal(options.db, self.study_name), warn=self._warn)
        # On PostgreSQL the leaderboard's records go to a log beside the study, shared by every
        # machine; each machine's DuckDB file is materialised from it (harness.record.log).
        log = RecordLog(target) if is_log_url(target) else None
        self.board = Leaderboard(options.db, warn=self._warn, log=log)
        self.board.check_writable()
        data_dir = Path(space.data_dir) if space.data_dir else None
        self.scorer = Scorer(
            Scoring(
                suites=space.suite_refs,
                limit=self.limit,
                data_dir=data_dir,
                batch_size=space.batch_size,
                fast=space.fast_scoring,
                split=self.selection.split,
                heldout_limit=self.selection.heldout_limit,
            ),
            self.board,
            placement=self.placement,
        )
        self.suites = self.scorer.suites
        # Without a split the objective's questions are the board's too ("all"), unconfirmed.
        self.search_part: Partition = "search" if self.selection.split else "all"
        with quiet_experimental():
            self.stale = StaleTrials()
            self.stale.on_stale = self._record_stale
            self.storage = open_storage(target, options.heartbeat, self.stale)
        self.study = self._open_study(sampler)
        self._check_study_is_this_boards(target)
        self.claims = options.db.parent / f".{options.db.name}.claims"
        # Trials in the top K so far wait here for their confirmation at the end of the run.
        self.kept = KeptModels(options.db.parent / f".{options.db.name}.kept" / self.study_name)
        from harness.merge import DonorPool

        # Donors stay loaded for the whole search: on the GPU when they fit beside a trial.
        self.pool = DonorPool(self.placement.device, headroom=donor_headroom(space))
        # Called after the references and after every trial (e.g. the CLI's live report).
        self.after_record: Callable[[], None] | None = None
        self._leaf_index: dict[str, int] = {t: i for i, t in enumerate(self.scorer.plan.leaves())}

    def _warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning[/]: {escape(message)}", soft_wrap=True)

    # -- study bookkeeping -----------------------------------------------------------

    def _open_study(self, sampler: Any) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        pruner = make_pruner(self.selection)
        directions = [optuna.study.StudyDirection[d.upper()] for d in self.space.objective.directions]
        try:
            study = None
            try:
                self.storage.get_study_id_from_name(self.study_name)
            except KeyError:  # a new study
                try:
                    study = optuna.create_study(
                        study_name=self.study_name,
                        storage=self.storage,
                        sampler=sampler,
                        pruner=pruner,
                        directions=directions,
                    )
                except optuna.exceptions.DuplicatedStudyError:
                    pass  # a worker started together with this one created it first: join it
            if study is None:  # resumed: loading writes nothing (create_study would log a no-op create)
                study = optuna.load_study(
                    study_name=self.study_name, storage=self.storage, sampler=sampler, pruner=pruner
                )
                if list(study.directions) != directions:
                    raise ValueError(
                        f"its directions are {[d.name.lower() for d in study.directions]}, the "
                        f"space's {[d.name.lower() for d in directions]}"
                    )
        except ValueError as err:  # e.g. directions differ from the stored study
            raise HarnessError(
                f"study {self.study_name!r} cannot be resumed: {err}",
                "use another --study name or the original space file",
            ) from None
        # A study's trials are paired on its questions: resuming it with another division (a
        # changed selection seed or search_split) would compare trials on different questions.
        rule = self.scorer.split_rule or "no split"
        stored = study.user_attrs.get(SPLIT_RULE)
        if stored is None:
            study.set_user_attr(SPLIT_RULE, rule)
        elif stored != rule:
            raise HarnessError(
                f"study {self.study_name!r} divided its questions as {stored!r}; this space divides "
                f"them as {rule!r}",
                "use another --study name, or the study's original selection and search_split settings",
            )
        return study

    def _check_study_is_this_boards(self, storage: str) -> None:
        """Refuse a study whose finished trials this board has never recorded: resuming it
        would count them toward the budget (a second board in the same folder, with a space of
        the same name, once found the first board's budget met and ran nothing)."""
        ids = [t.user_attrs[LEADERBOARD_ID] for t in self.finished_trials() if LEADERBOARD_ID in t.user_attrs]
        if not ids:
            return
        if self.board.log is not None:
            self.board.refresh()  # the file is a copy of the shared log: bring it up to date
        if self.board.recorded(ids):
            return
        raise HarnessError(
            f"study {self.study_name!r} in {storage} has {len(ids)} finished trials that "
            f"{self.options.db} has never recorded (it belongs to another leaderboard)",
            "pass the --db that study wrote to, or another --study name for a new study on this board",
        )

    def finished_trials(self) -> list[Any]:
        from optuna.trial import TrialState

        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        trials = self.study.get_trials(deepcopy=False)
        retried = StaleTrials.retried(trials)  # a dead worker's trial, queued again: not finished
        return [
            t
            for t in trials
            if t.state in states and not t.user_attrs.get(INTERRUPTED) and t.number not in retried
        ]

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> SearchOutcome:
        """The study's references, then trials until the budget, then the confirmations."""
        with survivors_frozen():  # each trial's end freezes what outlives it (harness.memory)
            return self._run()

    def _run(self) -> SearchOutcome:
        start = time.perf_counter()
        outcome = SearchOutcome(self.study_name, len(self.finished_trials()), 0, 0, 0, 0.0)
        columns = progress_columns(None, TextColumn("{task.fields[best]}"))
        self.close_dead_trials()
        if self.board.refresh():
            self._warn(
                f"{self.board.pending()} earlier records still wait to be written to {self.options.db}"
            )
        self.console.print(f"computing on {escape(self.placement.describe())}", soft_wrap=True)
        outcome.references = self.score_references()
        self._recorded()
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
                if self.options.timeout is not None and time.perf_counter() - start >= self.options.timeout:
                    outcome.timed_out = True
                    self.console.print(
                        f"--timeout {self.options.timeout:g} s reached: no new trial started "
                        "(run the same command to go on)"
                    )
                    break
                self.board.refresh()  # other machines' trials: reuse and stale checks see them
                self.fail_stale_trials()
                status = self.run_one(outcome)
                outcome.ran += status == "ok"
                outcome.reused += status == "reused"
                outcome.failed += status == "failed"
                outcome.pruned += status == "pruned"
                progress.update(bar, completed=len(self.finished_trials()), best=self._best_text())
                self._recorded()
        self.confirm_kept(outcome)
        outcome.finished = len(self.finished_trials())
        outcome.seconds = time.perf_counter() - start
        try:
            self.board.refresh()
            outcome.best = self.board.ranking(top=5, study=self.study_name)
        except StoreUnavailable as err:  # the trials are recorded (or spooled); only the summary waits
            self._warn(f"no summary: {err}")
        return outcome

    def _recorded(self) -> None:
        if self.after_record is not None:
            self.after_record()

    def score_references(self) -> list[TrialRecord]:
        """Score the space's reference models once per study, suites, limit and split, on the
        search questions and on the held-out ones (not Optuna trials: they never count towards
        the budget). A failure is recorded and skipped."""
        from harness.align.donors import donor_training
        from harness.merge.loading import load_pretrained, model_facts

        scored = []
        for ref in self.space.reference_models:
            try:
                if self.board.find_reference(
                    ref, self.study_name, self.suites, self.limit, self.scorer.split_rule
                ):
                    continue
            except StoreUnavailable as err:  # cannot tell whether it was scored: skip it this run
                self._warn(f"reference {ref} not scored this run: {err}")
                continue
            record = self.scorer.describe(
                TrialRecord(name=ref, source="eval", model_ref=ref, study=self.study_name)
            )
            self.console.print(f"scoring reference model {escape(ref)} on {escape(self.suites)}")
            try:
                with stage("load reference") as loaded:
                    model, tokenizer, path = load_pretrained(
                        ref, device=self.placement.device, dtype=self.placement.dtype
                    )
                    loaded(model)
                record.align_method, record.align_steps = donor_training(path)
                record.num_parameters, record.dtype = model_facts(model)
                result = self.scorer.measure(model, tokenizer, self.search_part)
                record.fidelity = self.limit
                self._set_objective(record, result.summary, result.summary_stderr)
                self.scorer.record(record, result)
                if self.search_part == "search":
                    self._score_heldout(record, model, tokenizer)
                del model
            except KeyboardInterrupt:
                raise
            except Exception as err:  # noqa: BLE001  (recorded; the search still runs)
                record.status, record.error = "failed", f"{type(err).__name__}: {str(err)[:2000]}"
                self.scorer.record(record)
                self._warn(f"reference {ref} failed: {record.error[:200]}")
                continue
            finally:
                gc.collect()  # not frozen here: after a failure the model may still be referenced
            scored.append(record)
        return scored

    def _build(self, recipe: Any, record: TrialRecord) -> Any:
        """Build a recipe against the resident donors; the record gets what the build reports."""
        from harness.merge import build_model
        from harness.recipe import resolve_recipe

        built = build_model(
            resolve_recipe(recipe, where=record.name), pool=self.pool, placement=self.placement
        )
        record.build_seconds, record.num_parameters, record.dtype = (
            built.seconds,
            built.num_parameters,
            built.dtype,
        )
        record.align_steps = built.align_steps
        return built

    def rescore(self, row_id: str, label: str, source: str = "nightly", search: bool = False) -> TrialRecord:
        """Build a recorded trial's recipe again and score it on the board's questions (the
        held-out part, or all of them without a split) as a new row: a later measurement of
        the same recipe, to compare per question with the earlier one (``harness nightly``).
        ``search=True`` also scores every search question (what a pruned trial never saw)."""
        import yaml

        from harness.recipe import recipe_from_dict

        row = self.board.trial(row_id)
        if row is None or not row.get("recipe_yaml"):
            raise HarnessError(f"trial {row_id!r} has no recorded recipe", "pick a search trial")
        record = self.scorer.describe(
            TrialRecord(
                name=f"{row['name']} ({label})",
                source=source,
                study=self.study_name,
                recipe_yaml=row["recipe_yaml"],
                recipe_hash=row["recipe_hash"],
                merge_method=row["merge_method"],
                align_method=row["align_method"],
            )
        )
        recipe = recipe_from_dict(yaml.safe_load(row["recipe_yaml"]), where=f"trial {row_id}")
        built = self._build(recipe, record)
        record.objective_weights = self.space.objective.weights
        try:
            if self.search_part == "search":
                if search:
                    result = self.scorer.measure(built.model, built.tokenizer, "search")
                    self._set_objective(record, result.summary, result.summary_stderr)
                    record.fidelity = self.limit
                    self.scorer.record(record, result)
                self._score_heldout(record, built.model, built.tokenizer)
            else:
                result = self.scorer.measure(built.model, built.tokenizer, self.search_part)
                self._set_objective(record, result.summary, result.summary_stderr)
                self.scorer.record(record, result)
        finally:
            del built
            gc.collect()
        return record

    def run_one(self, outcome: SearchOutcome | None = None) -> str:
        """One trial, start to finish, beating while it runs. Returns ok | reused | pruned | failed."""
        with quiet_experimental():  # Optuna warns that heartbeats are meant for optimize()
            trial = self.study.ask()
        with heartbeat(self.storage, trial):
            return self._run_trial(trial, outcome)

    def _run_trial(self, trial: Any, outcome: SearchOutcome | None) -> str:
        record = self.scorer.describe(
            TrialRecord(
                name=f"{self.study_name}#{trial.number}",
                source="search",
                study=self.study_name,
                trial_number=trial.number,
            )
        )
        trial.set_user_attr(WORKER, worker_identity())
        trial.set_user_attr(LEADERBOARD_ID, record.id)
        built = None
        source: dict[str, Any] = {}  # the row a reused trial copies
        try:
            method = trial.suggest_categorical("method", list(self.space.methods))
            align = trial.suggest_categorical("align", list(self.space.align)) if self.space.align else None
            recipe = self.space.recipe(method, trial, align=align, dtype=self.placement.dtype_name)
            recipe.name = f"{self.study_name}#{trial.number}-{method}" + (f"+{align}" if recipe.align else "")
            record.name = recipe.name
            record.merge_method = recipe.merge.get("merge_method")
            record.align_method = recipe.align.method if recipe.align else None
            record.recipe_yaml, record.recipe_hash = recipe.to_yaml(), recipe.content_hash()
            record.params = dict(trial.params)

            # One worker at a time per recipe: a second one drawing it waits, then reuses.
            with recipe_claim(
                self.claims,
                f"{record.recipe_hash}|{self.suites}|{self.limit}|{record.split_rule}",
                Reporter(self.console, "search"),
                f"trial {trial.number}: another worker is scoring the same recipe; waiting to reuse its scores",
            ):
                reused = self._find_scored(record.recipe_hash)
                if reused:
                    source = self.board.trial(reused) or {"id": reused}
                    status = self._reuse(trial, record, source)
                else:
                    built = self._build(recipe, record)
                    status = self._score_trial(trial, record, built.model, built.tokenizer, outcome)
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
        self._say_trial(trial.number, record, status)
        # Told and recorded: a failure (or Ctrl-C) from here on leaves a complete trial.
        if status == "reused":
            built = self._weights_to_confirm(recipe, record, source)
        if status in ("ok", "reused") and built is not None and self._in_top(record.objective):
            if self.selection.confirm_at == "end" and self._keep(record, built):
                self._drop_fallen()
            else:
                self._confirm(record, built.model, built.tokenizer, outcome)
        del built  # the model and tokenizer sit in reference cycles: gone before the freeze
        freeze_survivors()
        return status

    def _reuse(self, trial: Any, record: TrialRecord, source: dict[str, Any]) -> str:
        """Record a trial whose recipe was already scored in full, from that row's scores
        (any study's): nothing is built or scored. The source's held-out score comes with it
        when the source was confirmed."""
        source_id = source["id"]
        record.reused_from = source_id
        record.fidelity = source.get("fidelity")
        record.heldout_objective = source.get("heldout_objective")
        record.heldout_objective_stderr = source.get("heldout_objective_stderr")
        record.num_parameters, record.dtype = source.get("num_parameters"), source.get("dtype")
        self._report_stored(trial, source_id)
        summary = self.board.suite_summary(source_id, partition=self.search_part)
        return self._finish(trial, record, summary, copy_from=source_id)

    def _say_trial(self, number: int, record: TrialRecord, status: str) -> None:
        """One line per finished trial: what a log without a live progress bar (nightly CI, a
        worker's output file) shows while the search runs, and a scrollback on a terminal."""
        score = "no score" if record.objective is None else f"search objective {record.objective:.3f}"
        at = f" at {record.fidelity} questions per task" if record.fidelity else ""
        took = sum(s or 0.0 for s in (record.build_seconds, record.eval_seconds))
        self.console.print(
            f"trial {number} {status}: {escape(record.name)}, {score}{at}"
            + (f", {took:.0f} s" if took else "")
            + (f" (reused from {record.reused_from})" if record.reused_from else "")
            + (f": {escape(record.error[:200])}" if status == "failed" and record.error else ""),
            soft_wrap=True,
        )

    def _score_trial(
        self, trial: Any, record: TrialRecord, model: Any, tokenizer: Any, outcome: SearchOutcome | None
    ) -> str:
        """Score on the search questions rung by rung (each rung adds the next questions of every
        task; the model's remembered answers keep earlier ones), letting the pruner stop a trial
        that is significantly worse than the best one on the questions both saw."""
        rungs: list[int | None] = (
            [*self.selection.rungs, self.limit] if self.search_part == "search" else [self.limit]
        )
        reported: set[int] = set()
        scored = 0  # questions scored so far (each rung adds only new ones)
        answers: RequestCache = {}  # this model's, for its rungs only: keyed by request text
        for rung, count in enumerate(rungs, 1):
            result = self.scorer.measure(model, tokenizer, self.search_part, count=count, cache=answers)
            record.eval_seconds = (record.eval_seconds or 0.0) + result.seconds  # every rung
            record.fidelity = count
            questions = result.questions
            if outcome is not None:
                outcome.questions += questions - scored
            scored = questions
            self._report(trial, result.samples, result.summary_parts, reported)
            if rung < len(rungs) and trial.should_prune():
                self._set_objective(record, result.summary, result.summary_stderr)
                record.status = "pruned"
                record.error = f"pruned after {count} of {self.limit} search questions per task"
                self._close(trial, record, result=result, pruned=True)
                return "pruned"
        return self._finish(trial, record, result.summary, result=result)

    def _report(
        self, trial: Any, samples: list[Sample], parts: dict[str, Composition], reported: set[int]
    ) -> None:
        """Tell the pruner each new question's share of the objective (step = question id)."""
        if len(self.space.objective.directions) > 1:
            return  # Optuna prunes single-objective studies only
        values = question_values(samples, parts, self.space.objective.weights, self._step)
        for step, value in values.items():
            if step not in reported:
                trial.report(value, step)
                reported.add(step)

    def _report_stored(self, trial: Any, source_id: str) -> None:
        """A reused trial reports its source's per-question values: it may become the best
        trial, against which the pruner compares."""
        parts = (self.search_part,)
        samples = [
            Sample(r["task"], r["num_fewshot"], r["doc_id"], r["doc_hash"], r["metric"], r["value"], None)
            for r in self.board.samples([source_id], partitions=parts)
        ]
        self._report(trial, samples, self.board.compositions([source_id], parts)[source_id], set())

    def _step(self, task: str, doc_id: int) -> int:
        """A question's id for the pruner: the same for every trial of the study."""
        leaves = self._leaf_index
        return leaves.setdefault(task, len(leaves)) * 10_000_000 + doc_id

    def _close(
        self,
        trial: Any,
        record: TrialRecord,
        values: list[float] | None = None,
        result: Any = None,
        copy_from: str | None = None,
        pruned: bool = False,
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
            if pruned:
                self.study.tell(trial, state=TrialState.PRUNED)
            elif values is None:
                self.study.tell(trial, state=TrialState.FAIL)
            else:
                self.study.tell(trial, values)

    def _find_scored(self, recipe_hash: str | None) -> str | None:
        """A trial that already scored this recipe; None when the store cannot say (rescoring
        then costs time, but loses nothing)."""
        if recipe_hash is None:
            return None
        try:
            return self.board.find_scored(recipe_hash, self.suites, self.limit, self.scorer.split_rule)
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
            result.summary_stderr
            if result is not None
            else self.board.suite_summary(copy_from, "stderr", partition=self.search_part)  # type: ignore[arg-type]
        )
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
