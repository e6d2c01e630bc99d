"""Rich progress bars for slow data work (downloads, image decoding), on stderr."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from posthoc_vq.progress import silenced


def make_progress(*, enabled: bool = True, transfer: bool = False) -> Progress:
    """Return a progress bar on stderr, transient when stderr is not a terminal.

    Parameters
    ----------
    enabled : bool
        When False the bar draws nothing; nor does it inside :func:`posthoc_vq.progress.silence` (``--quiet``, ``--no-progress``).
    transfer : bool
        Show bytes and speed (downloads) instead of an item count (decoding).

    Returns
    -------
    Progress
        Use as a context manager, then ``add_task`` and ``advance``.
    """
    console = Console(stderr=True)
    counter: tuple[ProgressColumn, ...] = (
        (DownloadColumn(), TransferSpeedColumn()) if transfer else (MofNCompleteColumn(),)
    )
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        *counter,
        TimeRemainingColumn(),
        console=console,
        transient=not console.is_terminal,
        disable=not enabled or silenced(),
    )
