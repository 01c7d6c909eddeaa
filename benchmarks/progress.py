"""Progress between compiled chunks: a bar (rich) on a terminal, else one line per event
(compiled, each chunk), so logs of batch jobs say what ran and how long it took."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

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
        self._label = label
        self._task = self._progress.add_task(label, total=total, status="compiling")
        self._progress.start()

    def update(self, done: int, total: int, info: dict) -> None:
        if "compile_s" in info:
            status = f"compiled in {info['compile_s']:.1f} s"
            self._line(status)
        else:
            status = " ".join(f"{k}={v:.1f}" for k, v in info.items())
            self._line(f"chunk {done}/{total} {status}")
        self._progress.update(self._task, completed=done, status=status)

    def _line(self, text: str) -> None:
        if not sys.stderr.isatty():
            print(f"  {self._label}: {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self._progress.stop()


@contextlib.contextmanager
def chunk_bar(title: str | None, num_chunks: int) -> Iterator[Callable | None]:
    """A ChunkBar's `update` as a run's progress callback, the bar closed on leaving; None
    (no bar) where `title` is None."""
    if title is None:
        yield None
        return
    bar = ChunkBar(title, num_chunks)
    try:
        yield bar.update
    finally:
        bar.close()
