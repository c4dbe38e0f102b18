"""One progress bar for long commands (``ca enroll | renew``, ``archive ...``), on stderr.

Shown on a terminal or when asked (``--progress``); otherwise nothing is built at all, so a
piped or scripted run prints only its summary line, whatever the installed rich release does
with a disabled bar (some print a stray newline), and rich is not even imported.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol


class Bar(Protocol):
    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None: ...

    def advance(self) -> None: ...

    def error(self, text: str) -> None: ...


class _Hidden:
    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        pass

    def advance(self) -> None:
        pass

    def error(self, text: str) -> None:
        pass


class _Shown:
    def __init__(self, progress: Any, task: Any) -> None:
        self._progress = progress
        self._task = task

    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        self._progress.update(self._task, completed=completed, total=total,
                              description=description)

    def advance(self) -> None:
        self._progress.advance(self._task)

    def error(self, text: str) -> None:
        from rich.text import Text

        self._progress.console.print(Text(text, style="red"))


@contextmanager
def progress_bar(show: bool | None, label: str, *, total: float | None = None,
                 in_bytes: bool = False) -> Iterator[Bar]:
    """A bar counting rows (``total`` of them) or bytes (``in_bytes``); ``show`` None means
    'when stderr is a terminal'."""
    if not (sys.stderr.isatty() if show is None else show):
        yield _Hidden()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    counts = (DownloadColumn(), TransferSpeedColumn()) if in_bytes else (MofNCompleteColumn(),)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), *counts,
                        TimeRemainingColumn(), console=Console(stderr=True, force_terminal=True))
    with progress:
        yield _Shown(progress, progress.add_task(label, total=total))
