"""Record stage: scores into the DuckDB leaderboard. Entry point: :class:`Leaderboard`."""

from harness.record.db import AVERAGED, SUITE_COLUMNS, Leaderboard, TrialRecord
from harness.record.versions import harness_commit, library_versions

__all__ = [
    "AVERAGED",
    "SUITE_COLUMNS",
    "Leaderboard",
    "TrialRecord",
    "harness_commit",
    "library_versions",
]
