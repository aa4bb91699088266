"""Plotly figures for the report, as JSON specs rendered in the page by the inlined plotly.js.

Every user-supplied string placed in a figure (trial, study and parameter names) is
HTML-escaped first: plotly renders its text as a small HTML subset, so a name such as
``<b>x</b>`` would otherwise be interpreted, not shown.
"""

from __future__ import annotations

import html
import itertools
import json
from typing import Any

from harness.evaluate.suites import BOARD_COLUMNS
from harness.report.data import finite
from harness.report.importance import is_number

# Pairs tried in order for the Pareto plot: English vs Korean first, the trade-off that
# bilingual merges are about; then any two headline keys with data.
PARETO_PREFERENCE = (
    ("h4", "kmmlu"),
    ("mmlu", "kmmlu"),
    ("h4_partial", "kmmlu"),
    ("mmlu_macro", "kmmlu"),
    ("h4", "mmlu"),
    ("arc_challenge", "hellaswag"),
)
# Axis titles: the leaderboard's own column labels, plus the summary keys without a column.
LABELS = {
    **{c.key: c.label for c in BOARD_COLUMNS},
    "h4_partial": "H4 (partial)",
    "kmmlu_micro": "KMMLU micro",
}
MAX_PARAM_CHARTS = 6
PARAMS_PER_STUDY = 3
COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def esc(text: Any) -> str:
    return html.escape(str(text), quote=False)


def _layout(x: str, y: str, **extra: Any) -> dict[str, Any]:
    # No plotly title: the page's <figcaption> names the chart (and the modebar sits there).
    layout = {
        "xaxis": {"title": {"text": esc(x)}, "zeroline": False},
        "yaxis": {"title": {"text": esc(y)}, "zeroline": False},
        "height": 360,
        "margin": {"l": 60, "r": 20, "t": 30, "b": 50},
        "hovermode": "closest",
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#f7f8fa",
        "legend": {"orientation": "h", "y": -0.25},
    }
    layout.update(extra)
    return layout


def _chart(chart_id: str, title: str, figure: dict | None, note: str | None = None) -> dict:
    return {"id": chart_id, "title": title, "figure": figure, "note": note}


def _hover(trial: dict[str, Any], *lines: str) -> str:
    head = esc(trial["name"])
    return "<br>".join([f"<b>{head}</b>", *lines])


def history_chart(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Objective per trial number and the best-so-far line, one colour per study."""
    traces = []
    studies = sorted({t["study"] for t in trials if t.get("study")})
    for study, color in zip(studies, itertools.cycle(COLORS), strict=False):
        done = sorted(
            (
                t
                for t in trials
                if t.get("study") == study
                and t["status"] == "ok"
                and t["objective"] is not None
                and t["trial_number"] is not None
            ),
            key=lambda t: t["trial_number"],
        )
        if not done:
            continue
        best, best_line = float("-inf"), []
        for t in done:
            best = max(best, t["objective"])
            best_line.append(best)
        numbers = [t["trial_number"] for t in done]
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": esc(f"{study}: trials"),
                "legendgroup": esc(study),
                "x": numbers,
                "y": [t["objective"] for t in done],
                "text": [_hover(t, f"objective {t['objective']:.4f}") for t in done],
                "hoverinfo": "text",
                "marker": {"color": color, "size": 8, "opacity": 0.7},
            }
        )
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": esc(f"{study}: best so far"),
                "legendgroup": esc(study),
                "x": numbers,
                "y": best_line,
                "line": {"color": color, "shape": "hv", "width": 2},
                "hoverinfo": "skip",
            }
        )
    title = "Optimisation history"
    if not traces:
        return _chart("chart-history", title, None, "no completed search trials yet")
    return _chart(
        "chart-history",
        title,
        {"data": traces, "layout": _layout("trial number", "objective")},
    )


def heldout_chart(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Search objective vs held-out objective per confirmed trial and reference: points below
    the diagonal scored better on the questions they were selected on (the winner's curse)."""
    title = "Search vs held-out objective"
    done = [
        t
        for t in trials
        if t["status"] == "ok" and t.get("objective") is not None and t.get("heldout_objective") is not None
    ]
    if not done:
        return _chart("chart-heldout", title, None, "no trial has both a search and a held-out objective yet")
    traces = []
    for label, group, color in (
        ("trials", [t for t in done if t["trial_number"] is not None], COLORS[0]),
        ("reference models", [t for t in done if t["trial_number"] is None], "#d62728"),
    ):
        if not group:
            continue
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": label,
                "x": [t["objective"] for t in group],
                "y": [t["heldout_objective"] for t in group],
                "text": [
                    _hover(t, f"search {t['objective']:.4f}", f"held out {t['heldout_objective']:.4f}")
                    for t in group
                ],
                "hoverinfo": "text",
                "marker": {"color": color, "size": 9, "opacity": 0.8},
            }
        )
    values = [v for t in done for v in (t["objective"], t["heldout_objective"])]
    low, high = min(values), max(values)
    traces.append(
        {
            "type": "scatter",
            "mode": "lines",
            "name": "held out = search",
            "x": [low, high],
            "y": [low, high],
            "line": {"color": "#9aa5b1", "dash": "dot"},
            "hoverinfo": "skip",
        }
    )
    return _chart(
        "chart-heldout",
        title,
        {
            "data": traces,
            "layout": _layout("objective on search questions", "objective on held-out questions"),
        },
    )


def importance_chart(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """Horizontal bars, one trace per (study, method subset) that has importances."""
    title = "Parameter importances (fANOVA, computed at report time)"
    traces = []
    names: set[str] = set()
    for group, color in zip((g for g in groups if g["importances"]), itertools.cycle(COLORS), strict=False):
        items = sorted(group["importances"].items(), key=lambda kv: kv[1])
        # One row per bar: a parameter shared by several groups (method, align) is labelled
        # with its group, so bars never share a row (plotly's grouped bars would leave every
        # row a slot per group, mostly empty).
        labels = [k if k.startswith(f"{group['group']}.") else f"{k} [{group['group']}]" for k, _ in items]
        names.update(labels)
        traces.append(
            {
                "type": "bar",
                "orientation": "h",
                "name": esc(f"{group['study']} · {group['group']} ({group['n_trials']} trials)"),
                "x": [v for _, v in items],
                "y": [esc(k) for k in labels],
                "marker": {"color": color},
                "hovertemplate": "%{y}: %{x:.3f}<extra>%{fullData.name}</extra>",
            }
        )
    if not traces:
        notes = sorted({g["note"] for g in groups if g["note"]})
        return _chart(
            "chart-importance",
            title,
            None,
            "; ".join(notes) if notes else "not enough trials: no search trials yet",
        )
    layout = _layout("importance", "", barmode="overlay")
    layout["height"] = max(320, 160 + 22 * len(names))  # ~22 px a row: every label readable
    layout["yaxis"].update({"automargin": True, "dtick": 1})
    layout["legend"] = {"orientation": "h", "y": 1.0, "yanchor": "bottom"}  # above: no overlap
    layout["margin"].update({"l": 220, "t": 90})
    return _chart("chart-importance", title, {"data": traces, "layout": layout})


def main_parameters(trials: list[dict[str, Any]], groups: list[dict[str, Any]]) -> list[tuple]:
    """(study, parameter) pairs to plot: the most important numeric ones of each study."""
    chosen: list[tuple[str, str]] = []
    studies = sorted({t["study"] for t in trials if t.get("study")})
    for study in studies:
        done = [t for t in trials if t.get("study") == study and t["objective"] is not None]
        numeric: dict[str, int] = {}
        for t in done:
            for name, value in t["params"].items():
                if is_number(value):
                    numeric[name] = numeric.get(name, 0) + 1
        varying = {
            n
            for n in numeric
            if len({t["params"][n] for t in done if n in t["params"]}) > 1 and numeric[n] >= 2
        }
        weight: dict[str, float] = {}
        for g in groups:
            if g["study"] == study:
                for name, value in g["importances"].items():
                    weight[name] = max(weight.get(name, 0.0), value)
        # Most important first; parameters without an importance by how often they were sampled.
        ranked = sorted(varying, key=lambda n: (-weight.get(n, -1.0), -numeric[n], n))
        chosen += [(study, n) for n in ranked[:PARAMS_PER_STUDY]]
    return chosen[:MAX_PARAM_CHARTS]


def parameter_charts(trials: list[dict[str, Any]], groups: list[dict[str, Any]]) -> list[dict]:
    charts = []
    for i, (study, name) in enumerate(main_parameters(trials, groups)):
        done = [
            t
            for t in trials
            if t.get("study") == study
            and t["objective"] is not None
            and t["status"] == "ok"
            and is_number(t["params"].get(name))
        ]
        title = f"objective vs {name} ({study})"
        trace = {
            "type": "scatter",
            "mode": "markers",
            "name": esc(name),
            "x": [t["params"][name] for t in done],
            "y": [t["objective"] for t in done],
            "text": [
                _hover(t, f"{esc(name)} = {t['params'][name]:.4g}", f"objective {t['objective']:.4f}")
                for t in done
            ],
            "hoverinfo": "text",
            "marker": {"color": COLORS[i % len(COLORS)], "size": 9, "opacity": 0.75},
        }
        layout = _layout(name, "objective", showlegend=False)
        charts.append(_chart(f"chart-param-{i}", title, {"data": [trace], "layout": layout}))
    if not charts:
        charts.append(
            _chart(
                "chart-param-0",
                "Score vs merge parameters",
                None,
                "not enough trials: no numeric search parameter was sampled in 2 or more trials",
            )
        )
    return charts


def pick_pareto_pair(
    trials: list[dict[str, Any]], wanted: tuple[str, str] | None = None
) -> tuple[str, str] | None:
    def joint(a: str, b: str) -> int:
        return sum(
            1
            for t in trials
            if t["status"] == "ok" and t["summary"].get(a) is not None and t["summary"].get(b) is not None
        )

    if wanted is not None:
        return wanted
    keys = sorted({k for t in trials for k, v in t["summary"].items() if v is not None})
    fallback = [p for p in itertools.combinations(keys, 2) if "h4_partial" not in p]
    for a, b in [*PARETO_PREFERENCE, *fallback]:
        if joint(a, b) >= 2:
            return a, b
    return None


def pareto_front(points: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """Non-dominated points when both axes are maximised, ordered by x."""
    front: list[tuple[float, float, int]] = []
    best_y = float("-inf")
    for x, y, i in sorted(points, key=lambda p: (-p[0], -p[1])):
        if y > best_y:
            front.append((x, y, i))
            best_y = y
    return sorted(front)


def pareto_chart(trials: list[dict[str, Any]], wanted: tuple[str, str] | None) -> dict:
    pair = pick_pareto_pair(trials, wanted)
    if pair is None:
        return _chart(
            "chart-pareto",
            "Pareto front",
            None,
            "not enough data: no two suites were both scored on 2 or more trials",
        )
    a, b = pair
    la, lb = LABELS.get(a, a), LABELS.get(b, b)
    title = f"Pareto front: {la} vs {lb}"
    done = [
        t
        for t in trials
        if t["status"] == "ok" and t["summary"].get(a) is not None and t["summary"].get(b) is not None
    ]
    if not done:
        return _chart("chart-pareto", title, None, f"no trial has both {la} and {lb}")
    front = pareto_front([(t["summary"][a], t["summary"][b], i) for i, t in enumerate(done)])
    on_front = {i for _, _, i in front}

    def text(t: dict[str, Any]) -> str:
        return _hover(t, f"{esc(la)} {t['summary'][a]:.4f}", f"{esc(lb)} {t['summary'][b]:.4f}")

    others = [t for i, t in enumerate(done) if i not in on_front]
    traces = [
        {
            "type": "scatter",
            "mode": "markers",
            "name": "dominated",
            "x": [t["summary"][a] for t in others],
            "y": [t["summary"][b] for t in others],
            "text": [text(t) for t in others],
            "hoverinfo": "text",
            "marker": {"color": "#9aa5b1", "size": 8},
        },
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": "Pareto front",
            "x": [x for x, _, _ in front],
            "y": [y for _, y, _ in front],
            "text": [text(done[i]) for _, _, i in front],
            "hoverinfo": "text",
            "line": {"color": "#d62728", "shape": "vh"},
            "marker": {"color": "#d62728", "size": 10},
        },
    ]
    return _chart("chart-pareto", title, {"data": traces, "layout": _layout(la, lb)})


def build_charts(
    trials: list[dict[str, Any]],
    groups: list[dict[str, Any]],
    pareto: tuple[str, str] | None = None,
) -> list[dict[str, Any]]:
    return [
        history_chart(trials),
        heldout_chart(trials),
        importance_chart(groups),
        *parameter_charts(trials, groups),
        pareto_chart(trials, pareto),
    ]


def script_json(value: Any) -> str:
    """JSON safe inside a <script> element: no '</script>', '<!--' or '&' can appear."""
    text = json.dumps(finite(value), separators=(",", ":"), allow_nan=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
