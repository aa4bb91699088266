"""The `harness` command line: a thin layer over the library stages, one module per group of
commands (:mod:`.models`, :mod:`.searching`, :mod:`.doctor`, :mod:`.board`) on the shared app
and options of :mod:`.common`.

Bad input raises :class:`~harness.errors.HarnessError`, printed as one line on stderr with exit
code 2; nothing has been written at that point.
"""

from __future__ import annotations

from harness.cli.common import app

# Importing a group registers its commands; `harness --help` lists them in this order.
from harness.cli import models, searching, doctor, board  # noqa: E402, F401, I001  isort: skip

__all__ = ["app"]
