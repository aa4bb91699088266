"""What every command shares: the Typer app, the console, option types, and the turn of
bad input into one stderr line with exit code 2 (:func:`user_errors`)."""

from __future__ import annotations

import functools
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


def check_positive(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise HarnessError(f"{name} must be a positive integer, got {value}", f"pass {name} >= 1")


def stop_on_sigterm() -> None:
    """A scheduler's SIGTERM (CI timeout, `kill`) stops a search like Ctrl-C: the running
    trial is recorded as interrupted, finished ones stay, a rerun resumes."""
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def open_leaderboard(db: Path, storage: str | None = None) -> Any:
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


def parse_suite_option(text: str) -> list[str]:
    from harness.evaluate import parse_suites

    return parse_suites(text)


def apply_profile(profile: str, limit: int | None, batch_size: int) -> tuple[int | None, int]:
    from harness.evaluate import PROFILES

    if profile not in PROFILES:
        raise HarnessError(f"unknown profile {profile!r}", f"use one of: {', '.join(PROFILES)}")
    chosen = PROFILES[profile]
    return (limit or chosen.get("limit")), chosen.get("batch_size", batch_size)


def make_scorer(
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

    board = open_leaderboard(db, storage)
    board.check_writable()
    scoring = Scoring(suites=suites, limit=limit, data_dir=data_dir, batch_size=batch_size, fast=fast)
    return Scorer(scoring, board, progress=True, placement=placement)


def where_recorded(row: dict[str, Any]) -> str:
    """Where a row came from: its study and trial number, "<study> reference" for a model the
    study scored beside its trials (base, donors), else its source (eval, build)."""
    if row["study"] is None:
        return str(row["source"])
    if row["trial_number"] is None:
        return f"{row['study']} reference"
    return f"{row['study']}#{row['trial_number']}"


def score_and_record(scorer: Any, model: Any, tokenizer: Any, trial: Any) -> None:
    try:
        result = scorer.score_and_record(model, tokenizer, trial)
    except HarnessError:
        raise
    except Exception:  # recorded as failed by the scorer: say where, exit 1
        console.print(
            f"[red]evaluation failed[/]: {escape(f'{trial.error} (recorded as {trial.id} in {scorer.board.path})')}"
        )
        raise typer.Exit(code=1) from None
    print_summary(result.summary)
    console.print(
        f"recorded [bold]{trial.id}[/] in {escape(str(scorer.board.path))} ({result.seconds:.0f}s of evaluation)"
    )


def format_value(value: Any, digits: int = 4) -> str:
    """A value as plain text for a rich table or line: user strings (names, errors) are
    escaped, so ``[/]`` in a trial name is printed, never read as markup."""
    if value is None:
        return "no data"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def print_summary(summary: dict[str, float | None]) -> None:
    table = Table(title="scores")
    table.add_column("suite")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(format_value(key), format_value(value))
    Console().print(table)


def print_rows(console: Console, title: str, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    table = Table(title=escape(title))
    for col in columns:
        table.add_column(col)
    for r in rows:
        table.add_row(*(format_value(r.get(c)) for c in columns))
    console.print(table)


def print_ranking(rows: list[dict[str, Any]], db: Path, ties: dict[str, str] | None = None) -> None:

    if not rows:
        Console().print(f"no trials in {format_value(db)} yet")
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
    table = Table(title=f"leaderboard ({format_value(db)})")
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
        origin = where_recorded(row)
        if row.get("reused_from"):
            origin += f" (scores of {row['reused_from']})"
        status = (
            row["status"] if row["status"] == "ok" else f"{row['status']}: {(row.get('error') or '')[:40]}"
        )
        if row["status"] == "pruned":
            status = f"pruned at {row.get('fidelity')}/{row.get('eval_limit')} questions per task"
        table.add_row(
            str(rank),
            format_value(row["id"]),
            format_value(row["name"]),
            format_value(status),
            *(format_value(row[c]) for c in present),
            *([ties.get(row["id"], "") if ties else ""] if marks else []),
            format_value(origin),
        )
    Console(width=200).print(table)
    if ties:
        Console(stderr=True).print(
            "vs leader: 'tied' = not significantly different from the leader in a paired test on the same "
            "questions, Holm-adjusted (see `harness report`'s legend; `harness compare A B` for details)",
            soft_wrap=True,
        )
