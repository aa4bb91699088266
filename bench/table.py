"""What every bench prints: the machine first, then its rows as a Markdown table."""

from __future__ import annotations

import platform
from typing import Any

import torch


def print_machine() -> None:
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}")


def print_markdown(rows: list[dict[str, Any]]) -> None:
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(str(v) for v in row.values()) + " |", flush=True)
