"""User-facing errors.

A :class:`HarnessError` is bad input the user can fix: the CLI prints its message
as one line on stderr and exits with code 2, before any heavy work or any write.

A :class:`StoreUnavailable` is a run-time fault of the leaderboard store (a lock held by
another process for longer than the retries wait, an I/O error): not the user's input.
Writes never raise it for a scored trial (the record is spooled and written later); where
it does reach the CLI it is one line and exit code 1.

Anything else that escapes is a bug or a run-time failure (recorded as a failed
trial by the search loop).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


def first_error(err: ValidationError) -> str:
    """The first error of a pydantic ``ValidationError`` as ``loc: message`` (one line for a
    HarnessError, or for a validator that re-raises a nested model's error)."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    return f"{loc}: {first.get('msg')}" if loc else str(first.get("msg"))


def _one_line(problem: str, fix: str | None) -> str:
    message = problem if fix is None else f"{problem}; {fix}"
    return " ".join(message.split())


class HarnessError(Exception):
    """Bad input: the message names the problem and the fix, on one line."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        super().__init__(_one_line(problem, fix))


class StoreUnavailable(Exception):
    """The leaderboard store cannot be used right now (a fault, not bad input)."""

    exit_code = 1

    def __init__(self, problem: str, fix: str | None = None):
        super().__init__(_one_line(problem, fix))


class AlignmentError(RuntimeError):
    """A run-time failure of the alignment stage (NaN loss, out of memory, bad weights): the
    trial fails and is recorded; not bad input."""
