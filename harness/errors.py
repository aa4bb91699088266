"""User-facing errors.

A :class:`HarnessError` is bad input the user can fix: the CLI prints its message
as one line on stderr and exits with code 2, before any heavy work or any write.
Anything else that escapes is a bug or a run-time failure (recorded as a failed
trial by the search loop).
"""


class HarnessError(Exception):
    """Bad input: the message names the problem and the fix, on one line."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        message = problem if fix is None else f"{problem}; {fix}"
        super().__init__(" ".join(message.split()))
