"""The download bar `mathsolve pull` and a first solve show while a model file downloads.

A `DownloadProgress` (see mathsolve.hub) drawn with rich: the file name, a bar, bytes done of
the total, speed and time left, on stderr by default (stdout carries only results). The live
display starts with the first report, when bytes are about to flow, so a download that fails
on its metadata request prints nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID


class RichDownloadProgress:
    """One download's bar on `console` (stderr when None); reusable for the next download."""

    def __init__(self, console: Console | None = None) -> None:
        self._console = console
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def start(self, label: str, total: float | None, completed: int) -> None:
        self._task = self._live().add_task(label, total=total, completed=completed)

    def advance(self, amount: float) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=amount)

    def set_total(self, total: float | None) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=total)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        self._progress = None
        self._task = None

    def _live(self) -> Progress:
        # rich is imported here, not at the top: a cached model never draws a bar.
        if self._progress is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=self._console or Console(stderr=True),
            )
            self._progress.start()
        return self._progress
