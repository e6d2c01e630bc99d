"""Row-parallel work on Python threads that each run torch single-threaded.

torch parallelises every op over its OpenMP threads, which meet at a barrier after the op.
On a shared CPU (other processes busy) a barrier waits for a descheduled thread, which
multiplies the cost of loops of small ops: a tiled k-means assignment (one matmul and a
few reductions per 2048-row tile) measured 9x the sgemm bound with 2 OpenMP threads on 2
contended cores, 1.2x with one thread. Here each thread takes whole pieces of rows with one
torch thread (the ops release the GIL), so threads meet once per :meth:`RowPool.map`, and a
descheduled thread delays only its own pieces.

Pieces have a fixed size, so results do not depend on the thread count or on which thread
ran a piece.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import torch


class RowPool:
    """Context manager: within it torch runs single-threaded and :meth:`map` spreads pieces
    of rows over ``threads`` Python threads (default: torch's thread count on entry, which
    is restored on exit).

    Parameters
    ----------
    threads : worker threads; 1 runs pieces in the calling thread.
    """

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def __enter__(self) -> "RowPool":
        self._torch_threads = torch.get_num_threads()
        threads = self.threads or self._torch_threads
        torch.set_num_threads(1)
        self._pool = ThreadPoolExecutor(threads, initializer=torch.set_num_threads, initargs=(1,)) if threads > 1 else None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        torch.set_num_threads(self._torch_threads)

    def map(self, fn: Callable[[int, int], Any], n: int, piece: int) -> list[Any]:
        """``[fn(s, min(s + piece, n)) for s in range(0, n, piece)]``, pieces run in parallel."""
        starts = range(0, n, piece)
        if self._pool is None:
            return [fn(s, min(s + piece, n)) for s in starts]
        return list(self._pool.map(lambda s: fn(s, min(s + piece, n)), starts))
