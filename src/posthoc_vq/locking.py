"""Exclusive writer locks on folders (a run directory, a sweep folder).

One writer at a time: ``train``, ``quantize``, ``compress-weights``, ``evaluate`` (its writes),
``export``, ``finetune`` and the sweep driver take the lock of the folder they write into; a
second writer fails at once with a :class:`~posthoc_vq.errors.LockedError` naming the holder's
pid and command. Readers (report, results, table) never take it: every file they read is
replaced atomically, so they never see a half-written one.

The lock is ``fcntl.flock`` on ``<folder>/.lock``: the kernel releases it when the holder's
process dies, so a killed writer never leaves a stale lock behind. The file's content (pid,
command, time) only names the holder in the error. Locks are re-entrant within a process
(``compress-weights`` packs, then evaluates, both under the run's lock).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from posthoc_vq.errors import LockedError

LOCK_FILE = ".lock"

_held: dict[str, list] = {}  # resolved lock path -> [fd, depth]; re-entrancy within this process
_guard = threading.Lock()


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
        if not isinstance(info, dict) or info.get("pid") is None:  # the holder is between taking the lock and naming itself
            return "another process (it has just taken the lock)"
        return f"pid {info.get('pid')} ({' '.join(info.get('command', [])) or 'unknown command'}, since {info.get('since')})"
    except (OSError, ValueError, AttributeError):
        return "another process"


@contextmanager
def folder_lock(folder: str | os.PathLike, command: str, what: str = "folder") -> Iterator[None]:
    """Hold the exclusive writer lock of ``folder`` (created if needed) for the block.

    Raises
    ------
    LockedError
        Another process holds it; the message names that process's pid and command.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    key = str(path.resolve())
    with _guard:
        if key in _held:
            _held[key][1] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _guard:
                _held[key][1] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LockedError(
            f"{folder} is being written by {_holder(path)}; wait for it to finish (or stop it) before running `{command}` on this {what}"
        ) from None
    try:
        info = {"pid": os.getpid(), "command": [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else [command], "operation": command,
                "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        with _guard:
            _held[key] = [fd, 1]
        yield
    finally:
        with _guard:
            _held.pop(key, None)
        try:
            os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def holds_lock(folder: str | os.PathLike) -> bool:
    """Whether this process holds ``folder``'s writer lock."""
    return str((Path(folder) / LOCK_FILE).resolve()) in _held
