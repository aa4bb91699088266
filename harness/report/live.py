"""The report while a search runs: rewritten after the references and after every trial.

``make search`` takes about an hour on 2 cores; a newcomer should be able to open the report
five minutes in and watch it fill. Each write is the whole report written atomically
(:func:`harness.report.render.generate_report`: temporaries renamed over the old files, so a
browser reloading never sees half a page), about half a second for a dozen trials, next to
tens of seconds per trial. Nothing is written when the board has not changed since the last
write. A failure to write warns once and never stops the search: the final write at the end
of the run reports its own problem.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness.errors import HarnessError, StoreUnavailable
from harness.record import Leaderboard


class LiveReport:
    """Call it after each record: it rewrites the report when the board has new rows."""

    def __init__(self, board: Leaderboard, out: Path, say: Callable[[str], None]) -> None:
        self.board = board
        self.out = out
        self.say = say
        self.writes = 0
        self._seen: object = None
        self._failed = False

    def __call__(self) -> None:
        from harness.report.render import generate_report

        if self.board.log is None and not self.board.path.exists():
            return  # nothing recorded yet (a study without references, before its first trial)
        try:
            state = self.board.fingerprint()
            if state == self._seen:
                return
            files = generate_report(self.board, self.out)
        except (HarnessError, StoreUnavailable, OSError) as err:
            if not self._failed:
                self.say(f"the live report is not written ({err}); the search goes on")
                self._failed = True
            return
        self._seen = state
        self.writes += 1
        if self.writes == 1:
            self.say(f"report: {files.html} (open it now: it is rewritten after every trial)")
