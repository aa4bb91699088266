"""Render the report: one self-contained HTML page, plus JSON and CSV exports beside it."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from harness.errors import HarnessError
from harness.paths import check_output_file
from harness.record import Leaderboard
from harness.report.charts import build_charts, script_json
from harness.report.data import (
    ReportData,
    finite,
    load_report_data,
    require_db,
)
from harness.report.importance import param_importances

DEFAULT_OUT = Path("leaderboard/index.html")


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`generate_report` wrote."""

    html: Path
    json: Path
    csv: Path
    trials: int


# --------------------------------------------------------------------------- formatting


def pct(value: float | None) -> str:
    """Scores are fractions in the database and percentages on the page, like the Open LLM
    Leaderboard."""
    return "" if value is None else f"{value * 100:.2f}"


def num(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value else f"{value:.{digits}f}"


def human_count(value: int | None) -> str:
    if value is None:
        return ""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return str(value)


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(int(round(value)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def anchor(trial_id: str) -> str:
    """A URL-fragment-safe element id for a trial (ids are user-settable, so sanitise)."""
    return "trial-" + re.sub(r"[^A-Za-z0-9_-]", "-", str(trial_id))


def badge_class(name: str | None) -> str:
    """A stable colour slot per method name (6 slots), so 'slerp' is the same colour everywhere."""
    if not name:
        return "b0"
    return f"b{sum(name.encode()) % 6 + 1}"


def param_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str | int):
        return str(value)
    return json.dumps(value)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        # Every {{ }} is HTML-escaped: names, errors and recipe text are user-supplied.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        pct=pct,
        num=num,
        human_count=human_count,
        seconds=seconds,
        anchor=anchor,
        badge_class=badge_class,
        param_text=param_text,
        tojson_pretty=lambda v: json.dumps(v, indent=2, sort_keys=True, default=str),
    )
    return env


def _asset(name: str) -> str:
    return resources.files("harness.report").joinpath(name).read_text(encoding="utf-8")


# --------------------------------------------------------------------------- outputs


def render_html(
    data: ReportData,
    charts: list[dict[str, Any]],
    importances: list[dict[str, Any]],
    title: str = "Merge leaderboard",
    out: Path = DEFAULT_OUT,
) -> str:
    has_charts = any(c["figure"] for c in charts)
    plotly_js = ""
    if data.trials and has_charts:
        from plotly.offline import get_plotlyjs

        plotly_js = get_plotlyjs()  # inlined once: the page must work offline from file://
    template = _environment().from_string(_asset("report.html.jinja"))
    return template.render(
        title=title,
        data=data,
        trials=data.trials,
        columns=[c for c in data.columns if c[0] not in data.empty_columns],
        rank_key=data.rank_key,
        charts=charts if data.trials else [],
        importances=importances,
        chart_json=Markup(script_json(charts if data.trials else [])),
        plotly_js=Markup(plotly_js),
        css=Markup(_asset("report.css")),
        js=Markup(_asset("report.js")),
        studies=data.studies,
        has_no_study=any(not t["study"] for t in data.trials),
        has_no_align=any(not t["align_method"] for t in data.trials),
        json_name=out.with_suffix(".json").name,
        csv_name=out.with_suffix(".csv").name,
    )


def render_csv(data: ReportData) -> str:
    """One row per trial; empty cells with a '<key>_state' of 'no data' are no data, not 0."""
    head = [
        "rank",
        "id",
        "name",
        "status",
        "error",
        "study",
        "trial_number",
        "merge_method",
        "align_method",
        "objective",
        "objective_stderr",
        "heldout_objective",
        "heldout_objective_stderr",
        "fidelity",
        "tie_with_leader",
    ]
    per_trial = len(head)
    keys = [k for k, _, _ in data.columns if k not in ("objective", "heldout_objective")] + ["h4_partial"]
    for key in keys:
        head += [key, f"{key}_stderr", f"{key}_state", f"{key}_source"]
    tail = [
        "num_parameters",
        "dtype",
        "eval_limit",
        "split_rule",
        "reused_from",
        "created_at",
        "build_seconds",
        "eval_seconds",
        "align_seconds",
        "harness_commit",
    ]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(head + tail)
    for t in data.trials:
        row = [t[k] if k != "tie_with_leader" else t["tie"] for k in head[:per_trial]]
        for key in keys:
            cell = t["cells"][key]
            row += [cell["value"], cell["stderr"], cell["state"], cell["source"]]
        row += [t[k] for k in tail]
        writer.writerow(["" if v is None else v for v in row])
    return buf.getvalue()


def render_json(data: ReportData, importances: list[dict[str, Any]]) -> str:
    payload = asdict(data)
    payload["columns"] = [{"key": k, "label": label, "help": h} for k, label, h in data.columns]
    payload["importances"] = importances
    payload["note"] = "scores are fractions (0..1); null means no data, never 0"
    return json.dumps(finite(payload), indent=1, default=str, allow_nan=False)


def _write_all(texts: dict[Path, str]) -> None:
    """Write every file to a temporary beside it, then rename them all: a failure leaves none
    of them half-written, and a browser reloading the page never sees half a page."""
    temps: list[tuple[str, Path]] = []
    try:
        for path, text in texts.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temps.append((tmp, path))
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; the page is meant to be shared/served
        for tmp, path in temps:
            os.replace(tmp, path)
    except OSError as err:
        raise HarnessError(
            f"cannot write the report to {next(iter(texts))}: {err.strerror or err}",
            "pass a writable --out",
        ) from None
    finally:
        for tmp, _ in temps:
            Path(tmp).unlink(missing_ok=True)


def generate_report(
    db: Path | Leaderboard,
    out: Path = DEFAULT_OUT,
    *,
    pareto: tuple[str, str] | None = None,
    title: str = "Merge leaderboard",
) -> ReportFiles:
    """Read the DuckDB leaderboard and write ``out`` (HTML), ``.json`` and ``.csv`` beside it.

    Needs only the database file: importances are recomputed from ``trial_params``. A
    :class:`Leaderboard` with a shared log is synced from it first. ``pareto`` picks the two
    summary keys of the Pareto plot (default: H4 vs KMMLU, or the first pair with data).
    Raises HarnessError when the database does not exist.
    """
    board = db if isinstance(db, Leaderboard) else Leaderboard(db)
    out = Path(out)
    if board.log is None:
        require_db(board.path)
    check_output_file(out, "--out")
    board.refresh()  # records spooled while the file was locked, or new in the shared log
    require_db(board.path)
    data = load_report_data(board)
    importances = param_importances(data.trials)
    charts = build_charts(data.trials, importances, pareto)
    files = ReportFiles(
        html=out,
        json=out.with_suffix(".json"),
        csv=out.with_suffix(".csv"),
        trials=len(data.trials),
    )
    texts = {
        files.json: render_json(data, importances),
        files.csv: render_csv(data),
        files.html: render_html(data, charts, importances, title=title, out=out),
    }
    _write_all(texts)
    return files
