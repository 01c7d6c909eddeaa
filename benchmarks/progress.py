"""Progress bars (rich) shown between compiled chunks; silent when stderr is not a terminal."""

from __future__ import annotations

import sys

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class ChunkBar:
    """One bar over a cell's chunks, showing the latest greedy evaluation return."""

    def __init__(self, label: str, total: int):
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            transient=False,
            disable=not sys.stderr.isatty(),
        )
        self._task = self._progress.add_task(label, total=total, status="compiling")
        self._progress.start()

    def update(self, done: int, total: int, info: dict) -> None:
        status = " ".join(f"{k}={v:.1f}" for k, v in info.items())
        self._progress.update(self._task, completed=done, status=status)
        if not sys.stderr.isatty():
            print(
                f"  {self._progress.tasks[0].description}: chunk {done}/{total} {status}",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        self._progress.stop()
