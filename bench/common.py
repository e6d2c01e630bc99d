"""Helpers shared by the benchmarks: the sgemm compute bound and interleaved timing.

Benchmarks run as scripts (``python bench/<name>.py``), so this folder is on ``sys.path``.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    tic = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - tic


def sgemm_gflops(n: int = 2048, repeats: int = 10, threads: int | None = None) -> float:
    """Best of ``repeats`` n x n float32 matmuls, GFLOP/s (with ``threads`` torch threads when given)."""
    if threads is not None:
        torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    return 2 * n**3 / min(timed(lambda: a @ b)[1] for _ in range(repeats)) / 1e9


def interleaved(methods: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Run every method once per round, ``repeats`` rounds, so that load from other users of
    the shared CPU hits all of them alike; returns the last results and all wall times."""
    results, times = {}, {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            results[name], t = timed(fn)
            times[name].append(t)
    return results, times


def blocked_call_seconds(variants: dict[str, Callable[[], Any]], calls: int, rounds: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Median seconds per call of each variant, and every round's per-call time: each variant runs ``calls`` times back
    to back per round (so one runtime's idle spinning threads do not land inside another's timing), after one warm-up
    block; the rounds interleave the variants (:func:`interleaved`)."""
    blocks = {k: (lambda f=fn: [f() for _ in range(calls)]) for k, fn in variants.items()}
    for block in blocks.values():  # warm-up
        block()
    _, times = interleaved(blocks, rounds)
    times = {k: [t / calls for t in v] for k, v in times.items()}
    return {k: statistics.median(v) for k, v in times.items()}, times


def in_process(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args, queue)`` in a fresh spawned process (its own memory, threads and peak RSS) and return what it put on the queue."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=fn, args=(*args, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def machine() -> dict[str, Any]:
    """What the benchmark ran on, for its JSON: CPU model, CPUs (all, and this process's affinity), memory, native bf16."""
    import os
    import platform

    from posthoc_vq.devices import native_bf16

    info: dict[str, Any] = {"cpu_model": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                            "python": platform.python_version(), "platform": platform.platform()}
    try:
        info["affinity_cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    info["native_bf16"] = native_bf16(torch.device("cpu"))  # what train.precision: auto decides on
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
        info["cpu_model"] = next((l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("model name")), info["cpu_model"])
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (OSError, ValueError):
        pass
    return info
