"""A rich progress bar for the slow one-off steps before training: download, encoding, corpus generation.

Shown when stderr is a terminal (or NSLM_PROGRESS=1, e.g. to see it in a batch log); silent otherwise, so
CI logs and SLURM output files are not filled with redraws. Lightning's own RichProgressBar takes over once
training starts.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


def progress_enabled() -> bool:
    setting = os.environ.get("NSLM_PROGRESS", "auto")
    return setting == "1" or (setting == "auto" and sys.stderr.isatty())


@contextlib.contextmanager
def progress_bar(description: str, total: float | None, unit: str = "items") -> Iterator[Callable[[float], None]]:
    """Yield `advance(n)`; `unit="bytes"` shows a transfer speed, anything else a count `done/total`."""
    if not progress_enabled():
        yield lambda _n: None
        return
    console = Console(file=sys.stderr, force_terminal=os.environ.get("NSLM_PROGRESS") == "1" or None)
    rate = TransferSpeedColumn() if unit == "bytes" else MofNCompleteColumn()
    columns = (TextColumn("{task.description}"), BarColumn(), rate, TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(f"{description} ({unit})" if unit != "bytes" else description, total=total)
        yield lambda n: bar.advance(task, n)
