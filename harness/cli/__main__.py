"""``python -m harness.cli``: what the ``harness`` script runs."""

from harness.cli import app

app()
