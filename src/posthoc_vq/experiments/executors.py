"""Where a sweep's jobs run: in this process, in a local process pool, or on a Ray cluster.

The interface is one method, ``run(fn, tasks)``, yielding ``(task, result, error)`` as jobs
finish (in any order); the sweep logic never knows which executor it has. Every executor
runs a job with the same number of torch threads ``T`` (set by the job itself), so the
same sweep gives the same numbers under each of them.
"""

from __future__ import annotations

import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any, Callable, Iterator, Protocol

from posthoc_vq.errors import ConfigError

Outcome = tuple[dict[str, Any], Any, str | None]
EXECUTORS = ("local", "process", "ray")


class Executor(Protocol):
    def run(self, fn: Callable[[dict[str, Any]], Any], tasks: list[dict[str, Any]]) -> Iterator[Outcome]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Jobs one after another in this process (the default)."""

    def run(self, fn, tasks):
        for task in tasks:
            try:
                yield task, fn(task), None
            except Exception:
                yield task, None, traceback.format_exc()

    def close(self) -> None:
        pass


def _worker_init() -> None:
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads must not spin on a shared CPU


class ProcessExecutor:
    """A local pool of ``workers`` processes (spawned, so each has its own torch runtime)."""

    def __init__(self, workers: int):
        if workers < 1:
            raise ConfigError(f"--workers must be >= 1 (got {workers})")
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_worker_init)

    def run(self, fn, tasks):
        futures = {self.pool.submit(fn, task): task for task in tasks}
        for future in as_completed(futures):
            try:
                yield futures[future], future.result(), None
            except Exception:
                yield futures[future], None, traceback.format_exc()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Ray tasks with ``num_cpus=threads`` each, on an existing cluster (``address``) or a local one (``num_cpus``).

    On a cluster the sweep directory must be on a path every node sees: jobs write their
    artifacts there, and results come back to this process, which alone writes the database.
    """

    def __init__(self, threads: int, address: str | None = None, num_cpus: int | None = None):
        import ray

        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=num_cpus, **kwargs)
        self.threads = threads

    def run(self, fn, tasks):
        remote = self.ray.remote(num_cpus=self.threads, max_retries=0)(fn)
        pending = {remote.remote(task): task for task in tasks}
        while pending:
            done, _ = self.ray.wait(list(pending), num_returns=1)
            for ref in done:
                task = pending.pop(ref)
                try:
                    yield task, self.ray.get(ref), None
                except Exception:
                    yield task, None, traceback.format_exc()

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def make_executor(name: str, *, workers: int = 2, threads: int = 1, address: str | None = None) -> Executor:
    """``local``, ``process`` (``workers`` processes) or ``ray`` (``address``, else a local cluster of ``workers * threads`` CPUs)."""
    if name == "local":
        return LocalExecutor()
    if name == "process":
        return ProcessExecutor(workers)
    if name == "ray":
        return RayExecutor(threads, address=address, num_cpus=None if address else workers * threads)
    raise ConfigError(f"unknown executor '{name}'; choose one of {', '.join(EXECUTORS)}")
