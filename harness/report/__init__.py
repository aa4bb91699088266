"""Report stage: a static HTML leaderboard (plus JSON and CSV) from the DuckDB file alone.

Public API: :func:`generate_report` (``harness report``; ``harness search`` calls it at the
end of a run) and :class:`ReportFiles`. No model, no Optuna storage and no network are
needed: parameter importances are recomputed from the stored parameters, and plotly.js is
inlined so the page works from ``file://``.
"""

from harness.report.render import DEFAULT_OUT, ReportFiles, generate_report

__all__ = ["DEFAULT_OUT", "ReportFiles", "generate_report"]
