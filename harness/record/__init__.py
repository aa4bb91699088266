"""Record stage: scores into the DuckDB leaderboard. Entry point: :class:`Leaderboard`."""

from harness.record.db import AVERAGED, BOARD_PARTITIONS, SUITE_COLUMNS, Leaderboard, TrialRecord
from harness.record.versions import harness_commit, library_versions

__all__ = [
    "AVERAGED",
    "BOARD_PARTITIONS",
    "SUITE_COLUMNS",
    "Leaderboard",
    "TrialRecord",
    "harness_commit",
    "library_versions",
]
