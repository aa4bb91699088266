"""Record stage: scores into the DuckDB leaderboard (materialised from a shared PostgreSQL log
when workers run on several machines). Entry point: :class:`Leaderboard`."""

from harness.record.db import (
    AVERAGED,
    BOARD_PARTITIONS,
    SUITE_COLUMNS,
    Leaderboard,
    TrialRecord,
    scoring_paths,
)
from harness.record.log import RecordLog, is_log_url
from harness.record.versions import harness_commit, library_versions

__all__ = [
    "AVERAGED",
    "BOARD_PARTITIONS",
    "SUITE_COLUMNS",
    "Leaderboard",
    "RecordLog",
    "TrialRecord",
    "harness_commit",
    "is_log_url",
    "library_versions",
    "scoring_paths",
]
