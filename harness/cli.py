"""The `harness` command line: a thin layer over the library stages.

Bad input raises :class:`~harness.errors.HarnessError`, printed here as one line on
stderr with exit code 2; nothing has been written at that point.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.errors import HarnessError, StoreUnavailable

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Evaluation-driven leaderboard harness for model merging and DPO.",
)
console = Console(stderr=True)
DEFAULT_DB = Path("results/leaderboard.duckdb")
DEFAULT_REPORT = Path("leaderboard/index.html")

F = TypeVar("F", bound=Callable[..., Any])

DbOption = Annotated[Path, typer.Option("--db", help="DuckDB leaderboard file.")]
SpaceOption = Annotated[Path, typer.Option(help="Search-space YAML.")]
StudyOption = Annotated[str | None, typer.Option(help="Study name (default: the space's name).")]
StorageOption = Annotated[
    str | None,
    typer.Option(
        help="Optuna storage: a *.journal file (workers on one machine; default: under "
        "results/) or postgresql://user@host/db (workers on several machines)."
    ),
]
StockScoringOption = Annotated[
    bool,
    typer.Option(
        "--stock-scoring",
        help="Score log-likelihoods with lm-eval's stock HFLM instead of the shared-prefix path "
        "(same numbers, slower; for checking).",
    ),
]
LogOption = Annotated[
    str | None,
    typer.Option(
        "--storage",
        help="postgresql://user@host/db of a study whose workers run on several machines: the "
        "shared leaderboard log this --db is synced from (and written to).",
    ),
]


def user_errors(func: F) -> F:
    """Turn HarnessError (bad input) into one stderr line and exit code 2, and a store fault
    (StoreUnavailable) into one line and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except HarnessError as err:
            print(f"harness: error: {err}", file=sys.stderr)
            raise typer.Exit(code=HarnessError.exit_code) from None
        except StoreUnavailable as err:
            print(f"harness: store unavailable: {err}", file=sys.stderr)
            raise typer.Exit(code=StoreUnavailable.exit_code) from None

    return wrapper  # type: ignore[return-value]


DeviceOption = Annotated[
    str | None,
    typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if available); every stage runs there."),
]
DtypeOption = Annotated[
    str,
    typer.Option(
        help="auto (bfloat16 on a GPU that supports it, else float32) | float32 | bfloat16 | float16."
    ),
]


def _positive(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise HarnessError(f"{name} must be a positive integer, got {value}", f"pass {name} >= 1")


@app.command()
@user_errors
def assets(
    donors: Annotated[
        bool, typer.Option(help="Also train the demo's DPO donors (cached; about 9 minutes on 2 CPU cores).")
    ] = False,
) -> None:
    """Fetch and prepare the offline demo assets (model + benchmark data, optionally DPO donors)."""
    from harness.assets import prepare_assets

    info = prepare_assets(console=console)
    print(info.describe())
    if donors:
        from harness.align.donors import prepare_demo_donors

        print(prepare_demo_donors(console=console).describe())


@app.command()
@user_errors
def build(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the model to.")],
    recipe: Annotated[
        Path | None, typer.Argument(help="Recipe YAML (a mergekit config, + optional align); or --trial.")
    ] = None,
    trial: Annotated[
        str | None,
        typer.Option(
            help="Rebuild this leaderboard row (an id from `harness leaderboard`) from --db, exactly as recorded."
        ),
    ] = None,
    route: Annotated[str, typer.Option(help="auto | memory | disk (mergekit run_merge).")] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Allow a non-empty --out.")] = False,
    suite: Annotated[str | None, typer.Option(help="Also score the model on these suites.")] = None,
    limit: Annotated[int | None, typer.Option(help="Questions per task when scoring.")] = None,
    db: DbOption = DEFAULT_DB,
    storage: LogOption = None,
    stock_scoring: StockScoringOption = False,
    device: DeviceOption = None,
    dtype: DtypeOption = "auto",
) -> None:
    """Build one model from a recipe, or rebuild a leaderboard row (--trial), into a folder
    ready for the hub (optionally score and record it).

    The folder holds the weights, config.json, the tokenizer, mergekit_config.yml (the merge,
    for `mergekit-yaml`), recipe.yaml and a README.md model card (with the leaderboard's scores
    for --trial or --suite). Upload it with `hf upload YOUR_NAME/MODEL_NAME FOLDER`.
    """
    from harness.align.trainer import describe_step
    from harness.merge import build_model, choose_route, prepare_out_dir, write_card
    from harness.placement import Placement
    from harness.recipe import load_recipe, resolve_recipe

    if (recipe is None) == (trial is None):
        raise HarnessError(
            "give either a recipe file or --trial ID", "e.g. `harness build --trial ID --out models/best`"
        )
    if trial is not None and suite:
        raise HarnessError(
            f"--suite with --trial: trial {trial!r} is scored on the leaderboard already",
            "leave --suite out (the card carries its scores), or build its recipe file with --suite",
        )
    if route not in ("auto", "memory", "disk"):
        raise HarnessError(f"unknown route {route!r}", "use auto, memory or disk")
    _positive("--limit", limit)
    placement = Placement.decide(device, dtype)
    board = None
    if trial is not None:
        board = _leaderboard(db, storage)
        resolved = resolve_recipe(_recorded_recipe(board, trial), where=f"trial {trial}")
    else:
        assert recipe is not None
        resolved = resolve_recipe(load_recipe(recipe), where=str(recipe))
    choose_route(resolved, route)  # type: ignore[arg-type]
    prepare_out_dir(out, overwrite)
    scorer = (
        _scorer(_parse_suites(suite), limit, db, storage=storage, fast=not stock_scoring, placement=placement)
        if suite
        else None
    )
    with console.status(f"building {_fmt(resolved.recipe.display_name())} on {_fmt(placement.describe())}"):
        built = build_model(resolved, out_dir=out, route=route, placement=placement)  # type: ignore[arg-type]
    console.print(
        f"built [bold]{_fmt(built.recipe.display_name())}[/] ({built.num_parameters / 1e6:.1f}M params, "
        f"{built.model.config.num_hidden_layers} layers, {built.route}, {built.dtype} on "
        f"{_fmt(placement.device)}) in {built.seconds:.1f}s -> {_fmt(out)}"
    )
    for step in built.align_steps:
        console.print(_fmt(describe_step(step)), soft_wrap=True)
    if scorer is not None:
        from harness.record import TrialRecord

        record = TrialRecord(
            name=built.recipe.display_name(),
            source="build",
            recipe_yaml=built.recipe.to_yaml(),
            recipe_hash=built.recipe.content_hash(),
            merge_method=resolved.merge_config.merge_method,
            build_seconds=built.seconds,
            num_parameters=built.num_parameters,
            dtype=built.dtype,
            model_ref=str(out),
            align_method=built.recipe.align.method if built.recipe.align else None,
            align_steps=built.align_steps,
        )
        _score_and_record(scorer, built.model, built.tokenizer, record)
        board, trial = scorer.board, record.id
    if board is not None:  # the card with the row's scores (and its study's references)
        write_card(out, resolved.recipe, resolved.merge_config, board=board, trial_id=trial)
    console.print(_fmt(f"model card: {out / 'README.md'}; upload with `hf upload YOUR_NAME/MODEL {out}`"))


def _recorded_recipe(board: Any, trial_id: str) -> Any:
    """The recipe a leaderboard row was built from, exactly as recorded (alignment and seed
    included); an unknown, pruned, failed or recipe-less row is one line, before any work."""
    from harness.recipe import recipe_from_dict
    from harness.recipe.validate import parse_yaml

    if board.log is not None:
        board.refresh()
    if not board.path.exists():
        raise HarnessError(
            f"no leaderboard database at {board.path}", "pass the --db the trial was recorded in"
        )
    row = board.trial(trial_id)
    if row is None:
        raise HarnessError(f"no trial {trial_id!r} in {board.path}", "take an id from `harness leaderboard`")
    if row["status"] != "ok":
        raise HarnessError(
            f"trial {trial_id!r} is {row['status']}: its model was never scored in full",
            "pick an ok row from `harness leaderboard`",
        )
    if not row.get("recipe_yaml"):
        raise HarnessError(
            f"trial {trial_id!r} has no recipe (it scored an existing model: {row.get('model_ref')})",
            "pick a search or build trial",
        )
    where = f"trial {trial_id}"
    return recipe_from_dict(parse_yaml(row["recipe_yaml"], where), where)


@app.command("eval")
@user_errors
def eval_(
    model: Annotated[str, typer.Argument(help="demo:<name>, a local path or a hub id.")],
    suite: Annotated[
        str, typer.Option(help="Comma-separated suites (h4, mmlu, kmmlu) or lm-eval tasks.")
    ] = "h4",
    limit: Annotated[int | None, typer.Option(help="Questions per task (quick runs).")] = None,
    profile: Annotated[
        str | None, typer.Option(help="cpu-quick: a small per-task limit for 2-core CPUs.")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Your benchmark data (else $HARNESS_DATA_DIR, demo assets, hub)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="lm-eval batch size.")] = 8,
    device: DeviceOption = None,
    dtype: DtypeOption = "auto",
    name: Annotated[str | None, typer.Option(help="Leaderboard name (default: the model reference).")] = None,
    db: DbOption = DEFAULT_DB,
    storage: LogOption = None,
    stock_scoring: StockScoringOption = False,
) -> None:
    """Score one model with lm-eval and record it on the leaderboard."""
    from harness.merge.loading import load_pretrained, model_facts
    from harness.placement import Placement
    from harness.record import TrialRecord

    _positive("--limit", limit)
    _positive("--batch-size", batch_size)
    if profile is not None:
        limit, batch_size = _apply_profile(profile, limit, batch_size)
    if data_dir is not None and not data_dir.is_dir():
        raise HarnessError(f"--data-dir {data_dir} is not a folder", "pass the folder holding your datasets")
    suites = _parse_suites(suite)
    placement = Placement.decide(device, dtype)
    scorer = _scorer(
        suites,
        limit,
        db,
        data_dir=data_dir,
        batch_size=batch_size,
        storage=storage,
        fast=not stock_scoring,
        placement=placement,
    )
    with console.status(f"loading {escape(model)} on {_fmt(placement.describe())}"):
        loaded, tokenizer, _ = load_pretrained(model, device=placement.device, dtype=placement.dtype)
    num_parameters, dtype_name = model_facts(loaded)
    trial = TrialRecord(
        name=name or model, source="eval", model_ref=model, num_parameters=num_parameters, dtype=dtype_name
    )
    _score_and_record(scorer, loaded, tokenizer, trial)


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
    _stop_on_sigterm()
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
            f"[yellow]interrupted[/]: {done} finished trials are kept in {_fmt(db)}; "
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
    _stop_on_sigterm()
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


@app.command()
@user_errors
def doctor(
    device: DeviceOption = None,
    shape: Annotated[
        str,
        typer.Option(
            help="tiny (7.3M parameters, what CI runs) | 1b7 (SmolLM2-1.7B's shape) | 7b (Llama-2-7B's) "
            "| a model folder (its config and tokenizer): random weights, nothing downloaded."
        ),
    ] = "tiny",
    dtype: DtypeOption = "auto",
    trials: Annotated[int, typer.Option(help="Trials of the doctor's search.")] = 2,
    questions: Annotated[int, typer.Option(help="Questions per task, searched and held out.")] = 4,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="A folder with tokenizer files (default: the demo's if prepared, else a generated one)."
        ),
    ] = None,
    keep: Annotated[
        Path | None,
        typer.Option(help="Keep models, data and board in this folder (the next run reuses the models)."),
    ] = None,
) -> None:
    """Check this machine: a small search end to end (merge, LoRA DPO, H4 settings, references,
    confirmation) on random-weight models, every stage's device, dtype, time and GPU memory.

    Exit 0 when every stage ran on the chosen device and every score took the shared-prefix
    path, 1 otherwise, 2 on bad input.
    """
    from harness.doctor import render, run_doctor

    _positive("--trials", trials)
    _positive("--questions", questions)
    report = run_doctor(
        device=device,
        shape=shape,
        dtype=dtype,
        trials=trials,
        questions=questions,
        tokenizer=tokenizer,
        keep=keep,
        console=console,
    )
    render(report, Console(width=200))
    raise typer.Exit(code=0 if report.ok else 1)


@app.command("report")
@user_errors
def report_(
    db: DbOption = DEFAULT_DB,
    out: Annotated[
        Path, typer.Option("--out", help="HTML file; .json and .csv are written beside it.")
    ] = DEFAULT_REPORT,
    storage: LogOption = None,
) -> None:
    """Write the static HTML leaderboard (plus JSON and CSV) from the DuckDB file alone."""
    from harness.report import generate_report

    files = generate_report(_leaderboard(db, storage), out)
    console.print(
        escape(f"wrote {files.html} ({files.trials} trials), {files.json.name}, {files.csv.name}"),
        soft_wrap=True,
    )


@app.command()
@user_errors
def leaderboard(
    db: DbOption = DEFAULT_DB,
    top: Annotated[int | None, typer.Option(help="Show the best K rows.")] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="table | json | csv; with --trial also yaml (its recipe).")
    ] = "table",
    sort: Annotated[str, typer.Option(help="Column to rank by (auto: average, else objective).")] = "auto",
    trial: Annotated[
        str | None,
        typer.Option(help="One trial id: its scores, sampled parameters and alignment steps (csv: scores)."),
    ] = None,
    storage: LogOption = None,
) -> None:
    """Print the ranking from the DuckDB leaderboard."""
    _positive("--top", top)
    if fmt not in ("table", "json", "csv", "yaml") or (fmt == "yaml" and not trial):
        raise HarnessError(f"unknown format {fmt!r}", "use table, json or csv (yaml: with --trial)")
    board = _leaderboard(db, storage)
    if (board.path.exists() or board.log is not None) and board.refresh():
        console.print(
            f"[yellow]warning[/]: {board.pending()} records wait to be written to {escape(str(db))}"
        )
    if trial:
        _show_trial(board, trial, fmt)
        return
    rows = board.ranking(top=top, sort=sort)
    if fmt == "json":
        print(json.dumps(rows, indent=2, default=str))
    elif fmt == "csv":
        import pandas as pd

        print(pd.DataFrame(rows).to_csv(index=False), end="")
    else:
        _print_ranking(rows, db, ties=_ties(board) if rows else None)


@app.command()
@user_errors
def compare(
    a: Annotated[str, typer.Argument(help="Trial id A (from `harness leaderboard`).")],
    b: Annotated[str, typer.Argument(help="Trial id B.")],
    key: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated numbers to compare (summary keys, objective, average); default all shared."
        ),
    ] = None,
    alpha: Annotated[float, typer.Option(help="Significance level for the verdict.")] = 0.05,
    db: DbOption = DEFAULT_DB,
    storage: LogOption = None,
) -> None:
    """Paired comparison of two leaderboard rows on the questions both were scored on."""
    from harness.compare import compare_trials

    if not 0 < alpha < 1:
        raise HarnessError(f"--alpha must be in (0, 1), got {alpha}", "pass e.g. --alpha 0.05")
    board = _leaderboard(db, storage)
    if board.log is not None:
        board.refresh()
    if not board.path.exists():
        raise HarnessError(f"no leaderboard database at {db}", "run `harness eval` or `harness search` first")
    keys = [k.strip() for k in key.split(",") if k.strip()] if key else None
    rows = compare_trials(board, a, b, keys)
    table = Table(title=f"A = {_fmt(a)}, B = {_fmt(b)}: paired on the questions both were scored on")
    for col in ("number", "questions", "A", "B", "A - B", "95% CI", "p", "test", "verdict"):
        table.add_column(col, justify="left" if col in ("number", "test", "verdict") else "right")
    for row in rows:
        t = row.test
        if t is None:
            table.add_row(_fmt(row.key), "", "", "", "", "", "", "", _fmt(row.note))
            continue
        if t.p_value < alpha:
            verdict = "A better" if t.difference > 0 else "B better"
        else:
            verdict = "no significant difference"
        table.add_row(
            _fmt(row.key),
            f"{t.questions} ({t.discordant} differ)",
            _fmt(row.a),
            _fmt(row.b),
            f"{t.difference:+.4f}",
            f"[{t.ci_low:+.4f}, {t.ci_high:+.4f}]",
            f"{t.p_value:.3g}",
            t.test,
            verdict,
        )
    Console(width=200).print(table)


# --- shared helpers ----------------------------------------------------------------


def _stop_on_sigterm() -> None:
    """A scheduler's SIGTERM (CI timeout, `kill`) stops a search like Ctrl-C: the running
    trial is recorded as interrupted, finished ones stay, a rerun resumes."""
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _leaderboard(db: Path, storage: str | None = None) -> Any:
    """The leaderboard at --db; with --storage postgresql://…, synced from (and writing to) the
    shared log of a study whose workers run on several machines."""
    from harness.record import Leaderboard, RecordLog, is_log_url

    if storage is None:
        return Leaderboard(db)
    if not is_log_url(storage):
        raise HarnessError(
            f"--storage {storage!r} is not a PostgreSQL URL: only a study on PostgreSQL shares a leaderboard log",
            "pass postgresql://user@host/db, or leave --storage out to use --db alone",
        )
    return Leaderboard(db, log=RecordLog(storage))


def _parse_suites(text: str) -> list[str]:
    from harness.evaluate import parse_suites

    return parse_suites(text)


def _apply_profile(profile: str, limit: int | None, batch_size: int) -> tuple[int | None, int]:
    from harness.evaluate import PROFILES

    if profile not in PROFILES:
        raise HarnessError(f"unknown profile {profile!r}", f"use one of: {', '.join(PROFILES)}")
    chosen = PROFILES[profile]
    return (limit or chosen.get("limit")), chosen.get("batch_size", batch_size)


def _scorer(
    suites: list[str],
    limit: int | None,
    db: Path,
    *,
    data_dir: Path | None = None,
    batch_size: int = 8,
    storage: str | None = None,
    fast: bool = True,
    placement: Any = None,
) -> Any:
    """The scoring pipeline, checked before any model is loaded or built: suites planned,
    local data resolved, the leaderboard writable (and its shared log reachable)."""
    from harness.pipeline import Scorer, Scoring

    board = _leaderboard(db, storage)
    board.check_writable()
    scoring = Scoring(suites=suites, limit=limit, data_dir=data_dir, batch_size=batch_size, fast=fast)
    return Scorer(scoring, board, progress=True, placement=placement)


def _where(row: dict[str, Any]) -> str:
    """Where a row came from: its study and trial number, "<study> reference" for a model the
    study scored beside its trials (base, donors), else its source (eval, build)."""
    if row["study"] is None:
        return str(row["source"])
    if row["trial_number"] is None:
        return f"{row['study']} reference"
    return f"{row['study']}#{row['trial_number']}"


def _score_and_record(scorer: Any, model: Any, tokenizer: Any, trial: Any) -> None:
    try:
        result = scorer.score_and_record(model, tokenizer, trial)
    except HarnessError:
        raise
    except Exception:  # recorded as failed by the scorer: say where, exit 1
        console.print(
            f"[red]evaluation failed[/]: {escape(f'{trial.error} (recorded as {trial.id} in {scorer.board.path})')}"
        )
        raise typer.Exit(code=1) from None
    _print_summary(result.summary)
    console.print(
        f"recorded [bold]{trial.id}[/] in {escape(str(scorer.board.path))} ({result.seconds:.0f}s of evaluation)"
    )


def _fmt(value: Any, digits: int = 4) -> str:
    """A value as plain text for a rich table or line: user strings (names, errors) are
    escaped, so ``[/]`` in a trial name is printed, never read as markup."""
    if value is None:
        return "no data"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def _print_summary(summary: dict[str, float | None]) -> None:
    table = Table(title="scores")
    table.add_column("suite")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(_fmt(key), _fmt(value))
    Console().print(table)


def _ties(board: Any) -> dict[str, str]:
    """Trial id -> "leader" / "tied (p …)": the report's paired rule, computed in one place."""
    from harness.report.data import load_report_data

    marks = {}
    for t in load_report_data(board).trials:
        if t["tie"] == "leader":
            marks[t["id"]] = "leader"
        elif t["tie"] == "tied":
            marks[t["id"]] = "tied"
    return marks


def _print_ranking(rows: list[dict[str, Any]], db: Path, ties: dict[str, str] | None = None) -> None:

    if not rows:
        Console().print(f"no trials in {_fmt(db)} yet")
        return
    fixed = {
        "id",
        "name",
        "status",
        "error",
        "source",
        "study",
        "trial_number",
        "merge_method",
        "align_method",
        "objective",
        "heldout_objective",
        "fidelity",
        "reused_from",
        "num_parameters",
        "eval_limit",
        "created_at",
        "average",
    }
    scored = [c for c in rows[0] if c not in fixed]
    present = [c for c in scored if any(r.get(c) is not None for r in rows)]
    # The search objective (what Optuna saw) beside the held-out one (what ranks), when a study has both.
    if any(r.get("objective") is not None for r in rows):
        present.insert(0, "objective")
    if any(r.get("heldout_objective") is not None for r in rows):
        present.insert(0, "heldout_objective")
    if any(r.get("average") is not None for r in rows):  # benchmark average, when any row has one
        present.insert(0, "average")
    table = Table(title=f"leaderboard ({_fmt(db)})")
    marks = ["vs leader"] if ties else []
    # A narrow terminal folds long headers and names over two lines rather than cut them (the
    # references' names differ at the end); a trial's name ("demo#49-dare_ties+sdpo") stays whole.
    name_width = min(max(len(str(r["name"])) for r in rows), 24)
    for col in ["#", "id", "name", "status", *present, *marks, "source"]:
        table.add_column(
            col,
            justify="right" if col in ("#", *present) else "left",
            min_width=name_width if col == "name" else None,
            max_width=9 if col in present else None,  # "no data" and 0.1234 fit; headers fold
            overflow="fold",
        )
    for rank, row in enumerate(rows, 1):
        origin = _where(row)
        if row.get("reused_from"):
            origin += f" (scores of {row['reused_from']})"
        status = (
            row["status"] if row["status"] == "ok" else f"{row['status']}: {(row.get('error') or '')[:40]}"
        )
        if row["status"] == "pruned":
            status = f"pruned at {row.get('fidelity')}/{row.get('eval_limit')} questions per task"
        table.add_row(
            str(rank),
            _fmt(row["id"]),
            _fmt(row["name"]),
            _fmt(status),
            *(_fmt(row[c]) for c in present),
            *([ties.get(row["id"], "") if ties else ""] if marks else []),
            _fmt(origin),
        )
    Console(width=200).print(table)
    if ties:
        Console(stderr=True).print(
            "vs leader: 'tied' = not significantly different from the leader in a paired test on the same "
            "questions, Holm-adjusted (see `harness report`'s legend; `harness compare A B` for details)",
            soft_wrap=True,
        )


def _print_search_summary(runner: Any, outcome: Any, db: Path) -> None:
    out = Console()
    out.print(
        f"study [bold]{_fmt(outcome.study_name)}[/]: {outcome.finished} finished trials "
        f"({outcome.ran} scored, {outcome.pruned} pruned, {outcome.reused} reused, {outcome.failed} failed "
        f"this run; {outcome.confirmed} confirmed on held-out questions) in {outcome.seconds / 60:.1f} min, "
        f"{outcome.questions} question-evaluations" + (" (stopped by --timeout)" if outcome.timed_out else "")
    )
    for ref in outcome.references:
        out.print(
            f"reference {_fmt(ref.name)}: objective {_fmt(ref.objective)} on search questions, "
            f"{_fmt(ref.heldout_objective)} held out (scored this run)"
        )
    best = next((r for r in outcome.best if r["trial_number"] is not None and r["status"] == "ok"), None)
    if best:
        out.print(
            f"best trial: {_fmt(best['name'])} objective {_fmt(best['heldout_objective'])} on held-out "
            f"questions ({_fmt(best['objective'])} on the search questions it was selected on)"
            if best["heldout_objective"] is not None
            else f"best trial: {_fmt(best['name'])} objective {_fmt(best['objective'])}"
        )
        recipe = runner.board.recipe_yaml(best["id"])
        if recipe:
            out.print(recipe, markup=False, highlight=False)
    if outcome.best:
        _print_ranking(outcome.best, db)  # the study's top 5, reference models included
    out.print(_fmt(f"leaderboard: {db}  (harness leaderboard --db {db} --top 10)"))


ALIGN_STEP_COLUMNS = (
    "step",
    "method",
    "chunk",
    "examples",
    "train_steps",
    "lora",
    "seconds",
    "loss",
    "rewards_chosen",
    "rewards_rejected",
    "rewards_margins",
    "rewards_accuracies",
)


def _show_trial(board: Any, trial_id: str, fmt: str) -> None:
    """Everything recorded about one trial: scores, sampled parameters, alignment steps."""
    from harness.record import scoring_paths

    trial = board.trial(trial_id)
    if trial is None:
        raise HarnessError(f"no trial {trial_id!r} in {board.path}", "take an id from `harness leaderboard`")
    if fmt == "yaml":  # the recipe `harness build` reproduces the trial from
        if not trial.get("recipe_yaml"):
            raise HarnessError(
                f"trial {trial_id!r} has no recipe (it scored an existing model: {trial.get('model_ref')})",
                "pick a search or build trial",
            )
        print(trial["recipe_yaml"], end="")
        return
    scores, params, steps = board.scores(trial_id), board.params(trial_id), board.align_steps(trial_id)
    if fmt == "json":
        doc = {"trial": trial, "scores": scores, "params": params, "align_steps": steps}
        print(json.dumps(doc, indent=2, default=str))
        return
    if fmt == "csv":
        import pandas as pd

        print(pd.DataFrame(scores).to_csv(index=False), end="")
        return
    console = Console(width=200)
    where = _where(trial)
    objective = trial.get("objective")
    if objective is not None:
        se = trial.get("objective_stderr")
        where += f" · objective {objective:.4f}" + (f" ± {se:.4f}" if se is not None else "")
    console.print(
        f"[bold]{_fmt(trial['name'])}[/] ({_fmt(trial['id'])}, {_fmt(trial['status'])}, {_fmt(where)})"
    )
    if trial.get("error"):
        console.print(f"[red]{_fmt(trial['error'])}[/]")
    paths = scoring_paths(scores)
    if paths:
        console.print(f"scored by: {_fmt('; '.join(paths))}")
    _print_rows(
        console,
        "scores",
        ("task", "metric", "value", "stderr", "n_samples", "num_fewshot", "data_source", "scoring_path"),
        scores,
    )
    if params:
        _print_rows(
            console,
            "sampled parameters",
            ("name", "value"),
            [{"name": k, "value": v} for k, v in params.items()],
        )
    if steps:
        _print_rows(console, "alignment steps", ALIGN_STEP_COLUMNS, steps)


def _print_rows(console: Console, title: str, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    table = Table(title=escape(title))
    for col in columns:
        table.add_column(col)
    for r in rows:
        table.add_row(*(_fmt(r.get(c)) for c in columns))
    console.print(table)


if __name__ == "__main__":
    app()
