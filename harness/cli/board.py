"""Reading the leaderboard: ``harness report``, ``harness leaderboard`` and ``harness compare``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.cli.common import (
    DEFAULT_DB,
    DEFAULT_REPORT,
    DbOption,
    LogOption,
    app,
    check_positive,
    console,
    format_value,
    open_leaderboard,
    print_ranking,
    print_rows,
    user_errors,
    where_recorded,
)
from harness.errors import HarnessError


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

    files = generate_report(open_leaderboard(db, storage), out)
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
    check_positive("--top", top)
    if fmt not in ("table", "json", "csv", "yaml") or (fmt == "yaml" and not trial):
        raise HarnessError(f"unknown format {fmt!r}", "use table, json or csv (yaml: with --trial)")
    board = open_leaderboard(db, storage)
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
        print_ranking(rows, db, ties=_ties(board) if rows else None)


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
    board = open_leaderboard(db, storage)
    if board.log is not None:
        board.refresh()
    if not board.path.exists():
        raise HarnessError(f"no leaderboard database at {db}", "run `harness eval` or `harness search` first")
    keys = [k.strip() for k in key.split(",") if k.strip()] if key else None
    rows = compare_trials(board, a, b, keys)
    table = Table(
        title=f"A = {format_value(a)}, B = {format_value(b)}: paired on the questions both were scored on"
    )
    for col in ("number", "questions", "A", "B", "A - B", "95% CI", "p", "test", "verdict"):
        table.add_column(col, justify="left" if col in ("number", "test", "verdict") else "right")
    for row in rows:
        t = row.test
        if t is None:
            table.add_row(format_value(row.key), "", "", "", "", "", "", "", format_value(row.note))
            continue
        if t.p_value < alpha:
            verdict = "A better" if t.difference > 0 else "B better"
        else:
            verdict = "no significant difference"
        table.add_row(
            format_value(row.key),
            f"{t.questions} ({t.discordant} differ)",
            format_value(row.a),
            format_value(row.b),
            f"{t.difference:+.4f}",
            f"[{t.ci_low:+.4f}, {t.ci_high:+.4f}]",
            f"{t.p_value:.3g}",
            t.test,
            verdict,
        )
    Console(width=200).print(table)


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
    where = where_recorded(trial)
    objective = trial.get("objective")
    if objective is not None:
        se = trial.get("objective_stderr")
        where += f" · objective {objective:.4f}" + (f" ± {se:.4f}" if se is not None else "")
    console.print(
        f"[bold]{format_value(trial['name'])}[/] ({format_value(trial['id'])}, {format_value(trial['status'])}, {format_value(where)})"
    )
    if trial.get("error"):
        console.print(f"[red]{format_value(trial['error'])}[/]")
    paths = scoring_paths(scores)
    if paths:
        console.print(f"scored by: {format_value('; '.join(paths))}")
    print_rows(
        console,
        "scores",
        ("task", "metric", "value", "stderr", "n_samples", "num_fewshot", "data_source", "scoring_path"),
        scores,
    )
    if params:
        print_rows(
            console,
            "sampled parameters",
            ("name", "value"),
            [{"name": k, "value": v} for k, v in params.items()],
        )
    if steps:
        print_rows(console, "alignment steps", ALIGN_STEP_COLUMNS, steps)
