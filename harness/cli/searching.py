"""The main job and its schedule: ``harness search`` and ``harness nightly``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from harness.cli.common import (
    DEFAULT_DB,
    DEFAULT_REPORT,
    DbOption,
    DeviceOption,
    SpaceOption,
    StorageOption,
    StudyOption,
    app,
    console,
    format_value,
    print_ranking,
    stop_on_sigterm,
    user_errors,
)
from harness.errors import HarnessError, StoreUnavailable

TimeoutOption = Annotated[
    float | None,
    typer.Option(
        help="Wall-clock seconds after which no new trial starts; the running one finishes and "
        "is recorded, then the study's top K are confirmed (for CI jobs with a time limit: "
        "leave room for K held-out scorings)."
    ),
]


@app.command()
@user_errors
def search(
    space: SpaceOption = Path("search/demo.yaml"),
    budget: Annotated[int, typer.Option(help="Finished trials wanted in this study (a rerun resumes).")] = 50,
    study: StudyOption = None,
    storage: StorageOption = None,
    limit: Annotated[int | None, typer.Option(help="Questions per task (overrides the space).")] = None,
    device: DeviceOption = None,
    heartbeat: Annotated[
        float,
        typer.Option(
            help="Seconds between a worker's heartbeats on a postgresql:// storage; a trial whose "
            "worker misses two is failed and its parameters re-run."
        ),
    ] = 60.0,
    report: Annotated[
        bool,
        typer.Option("--report/--no-report", help="Write the HTML report after every trial and at the end."),
    ] = True,
    report_out: Annotated[Path, typer.Option(help="Where the HTML report goes.")] = DEFAULT_REPORT,
    confirm_top: Annotated[
        int | None,
        typer.Option(
            help="The study's top K (by the search objective), confirmed on held-out questions at "
            "the end of the run (default: the space's selection.confirm_top)."
        ),
    ] = None,
    timeout: TimeoutOption = None,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Optuna over merge recipes: every trial is built, scored and recorded."""
    from harness.paths import check_output_file
    from harness.placement import check_device
    from harness.search import SearchOptions, SearchRunner, load_space

    if budget <= 0:
        raise HarnessError(f"--budget must be >= 1, got {budget}", "pass a positive number of trials")
    if not 1 <= heartbeat <= 3600:
        raise HarnessError(f"--heartbeat must be 1..3600 seconds, got {heartbeat}", "pass e.g. 60")
    check_device(device)
    if report:  # a finished search must not fail on its report's path: check it first
        check_output_file(report_out, "--report-out")
    loaded = load_space(space)
    stop_on_sigterm()
    runner = SearchRunner(
        loaded,
        SearchOptions(
            budget=budget,
            db=db,
            study_name=study,
            storage=storage,
            limit=limit,
            device=device,
            confirm_top=confirm_top,
            heartbeat=heartbeat,
            timeout=timeout,
        ),
        console=console,
    )
    if report:  # written after the references and every trial: open it while the search runs
        from harness.report.live import LiveReport

        runner.after_record = LiveReport(runner.board, report_out, lambda line: console.print(escape(line)))
    try:
        outcome = runner.run()
    except KeyboardInterrupt:
        done = len(runner.finished_trials())
        console.print(
            f"[yellow]interrupted[/]: {done} finished trials are kept in {format_value(db)}; "
            "the running trial is marked interrupted. Run the same command to resume."
        )
        raise typer.Exit(code=130) from None
    _print_search_summary(runner, outcome, db)
    if report:
        from harness.report import generate_report

        try:  # a report problem must never fail a finished search
            files = generate_report(runner.board, report_out)
            console.print(f"report: {escape(str(files.html))} ({files.trials} trials)")
        except (HarnessError, StoreUnavailable) as err:
            console.print(f"[yellow]report not written[/]: {escape(str(err))}")


@app.command()
@user_errors
def nightly(
    space: SpaceOption = Path("search/demo.yaml"),
    budget: Annotated[int, typer.Option(help="Trials added to the study tonight.")] = 10,
    study: StudyOption = None,
    storage: StorageOption = None,
    device: DeviceOption = None,
    report_out: Annotated[Path, typer.Option(help="Where the HTML report goes.")] = DEFAULT_REPORT,
    summary: Annotated[Path, typer.Option(help="Markdown summary file (also printed).")] = Path(
        "results/nightly.md"
    ),
    timeout: TimeoutOption = None,
    db: DbOption = DEFAULT_DB,
) -> None:
    """One scheduled sweep: add trials, re-score the best recipe, flag a regression, report.

    Exit 0 when all is well, 1 when the best recipe's re-score is significantly worse than its
    previous measurement (paired test on the same held-out questions), 2 on bad input.
    """
    from harness.paths import check_output_file
    from harness.placement import check_device
    from harness.report import generate_report
    from harness.search import SearchOptions, SearchRunner, load_space
    from harness.search.nightly import run_nightly, summary_markdown

    if budget < 0:
        raise HarnessError(f"--budget must be >= 0, got {budget}", "pass the number of trials to add")
    check_device(device)
    check_output_file(report_out, "--report-out")
    check_output_file(summary, "--summary")
    loaded = load_space(space)
    stop_on_sigterm()
    runner = SearchRunner(
        loaded,
        SearchOptions(
            budget=max(budget, 1), db=db, study_name=study, storage=storage, device=device, timeout=timeout
        ),
        console=console,
    )
    outcome = run_nightly(runner, budget)
    report_path = None
    try:  # a report problem must never hide the night's verdict
        report_path = generate_report(runner.board, report_out).html
    except (HarnessError, StoreUnavailable) as err:
        outcome.problems.append(f"report not written: {err}")
    text = summary_markdown(outcome, report_path)
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(text, encoding="utf-8")
    typer.echo(text)
    if outcome.regression:
        raise typer.Exit(code=1)


def _print_search_summary(runner: Any, outcome: Any, db: Path) -> None:
    out = Console()
    out.print(
        f"study [bold]{format_value(outcome.study_name)}[/]: {outcome.finished} finished trials "
        f"({outcome.ran} scored, {outcome.pruned} pruned, {outcome.reused} reused, {outcome.failed} failed "
        f"this run; {outcome.confirmed} confirmed on held-out questions) in {outcome.seconds / 60:.1f} min, "
        f"{outcome.questions} question-evaluations" + (" (stopped by --timeout)" if outcome.timed_out else "")
    )
    for ref in outcome.references:
        out.print(
            f"reference {format_value(ref.name)}: objective {format_value(ref.objective)} on search questions, "
            f"{format_value(ref.heldout_objective)} held out (scored this run)"
        )
    best = next((r for r in outcome.best if r["trial_number"] is not None and r["status"] == "ok"), None)
    if best:
        out.print(
            f"best trial: {format_value(best['name'])} objective {format_value(best['heldout_objective'])} on held-out "
            f"questions ({format_value(best['objective'])} on the search questions it was selected on)"
            if best["heldout_objective"] is not None
            else f"best trial: {format_value(best['name'])} objective {format_value(best['objective'])}"
        )
        recipe = runner.board.recipe_yaml(best["id"])
        if recipe:
            out.print(recipe, markup=False, highlight=False)
    if outcome.best:
        print_ranking(outcome.best, db)  # the study's top 5, reference models included
    out.print(format_value(f"leaderboard: {db}  (harness leaderboard --db {db} --top 10)"))
