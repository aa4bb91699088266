"""``harness doctor``: what runs where on this machine, and how fast."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from harness.cli.common import (
    DeviceOption,
    DtypeOption,
    app,
    check_positive,
    console,
    user_errors,
)


@app.command()
@user_errors
def doctor(
    device: DeviceOption = None,
    shape: Annotated[
        str,
        typer.Option(
            help="tiny (7.3M parameters, what CI runs) | 1b7 (SmolLM2-1.7B's shape) | 7b (Llama-2-7B's) "
            "| a model folder (its config and tokenizer): random weights, nothing downloaded."
        ),
    ] = "tiny",
    dtype: DtypeOption = "auto",
    trials: Annotated[int, typer.Option(help="Trials of the doctor's search.")] = 2,
    questions: Annotated[int, typer.Option(help="Questions per task, searched and held out.")] = 4,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="A folder with tokenizer files (default: the demo's if prepared, else a generated one)."
        ),
    ] = None,
    keep: Annotated[
        Path | None,
        typer.Option(help="Keep models, data and board in this folder (the next run reuses the models)."),
    ] = None,
) -> None:
    """Check this machine: a small search end to end (merge, LoRA DPO, H4 settings, references,
    confirmation) on random-weight models, every stage's device, dtype, time and GPU memory.

    Exit 0 when every stage ran on the chosen device and every score took the shared-prefix
    path, 1 otherwise, 2 on bad input.
    """
    from harness.doctor import render, run_doctor

    check_positive("--trials", trials)
    check_positive("--questions", questions)
    report = run_doctor(
        device=device,
        shape=shape,
        dtype=dtype,
        trials=trials,
        questions=questions,
        tokenizer=tokenizer,
        keep=keep,
        console=console,
    )
    render(report, Console(width=200))
    raise typer.Exit(code=0 if report.ok else 1)
