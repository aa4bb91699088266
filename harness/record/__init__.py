"""Record stage: scores into the DuckDB leaderboard (materialised from a shared PostgreSQL log
when workers run on several machines). Entry point: :class:`Leaderboard`."""

from harness.evaluate.suites import AVERAGED
from harness.record.db import Leaderboard
from harness.record.log import RecordLog, is_log_url
from harness.record.schema import BOARD_PARTITIONS, SUITE_COLUMNS
from harness.record.trial import TrialRecord, scoring_paths
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
