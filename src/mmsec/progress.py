"""Progress bars for long work: rich on a terminal, silent when not a TTY or when asked to be quiet."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

# Set by the CLI's --quiet; library callers pass quiet= explicitly.
QUIET_ENV = "MMSEC_QUIET"


class _Bar:
    def __init__(self, progress: Progress | None, task: int | None):
        self._progress, self._task = progress, task

    def advance(self, n: int = 1, **fields: str) -> None:
        if self._progress is not None:
            desc = self._progress.tasks[0].fields.get("base", "")
            extra = " ".join(f"{k}={v}" for k, v in fields.items())
            self._progress.update(self._task, advance=n, description=f"{desc} {extra}".strip())


def _enabled(quiet: bool) -> bool:
    return not quiet and os.environ.get(QUIET_ENV, "") != "1" and sys.stderr.isatty()


@contextmanager
def progress_bar(total: int, desc: str, quiet: bool = False):
    """A progress bar on stderr (never stdout, which may carry JSON)."""
    if not _enabled(quiet):
        yield _Bar(None, None)
        return
    from rich.console import Console

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=Console(stderr=True), transient=True)
    with progress:
        task = progress.add_task(desc, total=total, base=desc)
        yield _Bar(progress, task)
