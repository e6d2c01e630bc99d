"""Progress without a UI: library code says how far a long step has got; a face (the CLI) draws it.

Long loops (encoding and decoding batches, k-means iterations, kNN blocks, geodesic medoid
updates and assignment, the cells of a compression table, the steps of an export) call
:func:`report` with a task label, the work done and the total. Nothing is drawn unless a caller
installed a callback: the top-level functions take ``progress=`` (a :data:`ProgressCallback`,
default None) and run their body inside :func:`reporting`, so estimators deep inside (scikit-learn
style, whose signatures stay as they are) reach it without a parameter on every call.

The callback lives in a :class:`contextvars.ContextVar`: a thread (a sweep's worker) starts without
one, so concurrent jobs never draw into each other's bars. :func:`progress_bars` is the CLI's
callback: rich bars with ETA on stderr, one per task label.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    from rich.console import Console

#: ``callback(task, done, total)``: ``task`` a short label ("k-means iterations"), ``done`` the units finished, ``total`` the units in all (None: unknown)
ProgressCallback = Callable[[str, int, "int | None"], None]

_CURRENT: ContextVar[ProgressCallback | None] = ContextVar("posthoc_vq_progress", default=None)
_SILENT: ContextVar[bool] = ContextVar("posthoc_vq_silent", default=False)


def report(task: str, done: int, total: int | None = None) -> None:
    """Tell the installed callback (if any) that ``done`` of ``total`` units of ``task`` are finished."""
    callback = _CURRENT.get()
    if callback is not None:
        callback(task, int(done), None if total is None else int(total))


def active() -> bool:
    """Whether a callback listens (to skip work done only to report, such as counting blocks)."""
    return _CURRENT.get() is not None


@contextmanager
def reporting(callback: ProgressCallback | None) -> Iterator[None]:
    """Send the :func:`report` calls made inside the block to ``callback``; None (or False) keeps whatever is installed."""
    if not callable(callback):
        yield
        return
    token = _CURRENT.set(callback)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def silenced() -> bool:
    """Whether bars drawn by library code itself (downloads, image decoding: :func:`posthoc_vq.data.progress.make_progress`) are off."""
    return _SILENT.get()


@contextmanager
def silence(on: bool = True) -> Iterator[None]:
    """Inside the block, no bar at all: ``--quiet`` and ``--no-progress`` also turn off the bars library code draws itself."""
    token = _SILENT.set(bool(on) or _SILENT.get())
    try:
        yield
    finally:
        _SILENT.reset(token)


@contextmanager
def progress_bars(enabled: bool = True, console: "Console | None" = None) -> Iterator[ProgressCallback | None]:
    """Rich progress bars with ETA on stderr, one per task label reported inside the block.

    Yields the callback to pass as ``progress=``, or None (no bars) when not ``enabled`` (``--quiet``,
    ``--no-progress``) or when the console is not a terminal: a log file or a pipe gets no bar frames
    (rich cannot redraw there) and not a stray newline.
    """
    from rich.console import Console

    console = console or Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                   TimeRemainingColumn(), console=console)
    tasks: dict[str, Any] = {}
    last: dict[str, int] = {}

    def callback(task: str, done: int, total: int | None) -> None:
        if task not in tasks:
            tasks[task] = bar.add_task(task, total=total, completed=done)
        elif done < last[task]:  # the same step again (another split, another run): start its bar over
            bar.reset(tasks[task], total=total, completed=done)
        else:
            bar.update(tasks[task], total=total, completed=done)
        last[task] = done

    with bar:
        yield callback
