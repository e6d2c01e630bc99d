"""How idle OpenMP threads wait: a default that survives a shared CPU and costs nothing on a quiet one.

torch's CPU kernels run on an OpenMP thread pool. Between parallel regions its idle threads
spin, waiting for the next region, before they sleep: libgomp (the runtime of the Linux torch
wheels) spins 300,000 iterations (about 3 ms) when ``OMP_WAIT_POLICY`` is unset, about 5
minutes with ``ACTIVE``, and not at all with ``PASSIVE``. A training step runs hundreds of
short regions, so on a machine whose cores another process also wants, spinning threads burn
the time slices the other process's (and their own process's) working threads need: an epoch
beside a second 2-thread training on 2 cores was measured 10-25x slower. ``PASSIVE`` cures that
but costs about 20% on a quiet machine (every region wakes sleeping threads through the kernel).

Measured on the 2-core target (``bench/contention.py``, ``bench/results/contention.json``): no
fixed policy serves both cases. libgomp's own spin is the fastest on a quiet machine and
collapses beside other work (an epoch 4-30x slower beside a second training); ``PASSIVE`` and
short spins (300-10,000 iterations) hold up beside other work (1.8-2.4x beside a second
training, 0.5-0.6x throughput beside a busy process) but cost 15-25% on a quiet machine.

So the default looks at the CPU when posthoc_vq is imported: if other tasks are running
(the runnable count of ``/proc/loadavg`` less this process, median of :data:`LOAD_SAMPLES` reads,
at least :data:`BUSY_OTHERS`), it sets ``OMP_WAIT_POLICY=PASSIVE`` (libgomp;
``KMP_BLOCKTIME=0`` for Intel's/LLVM's runtime); on a quiet CPU it sets nothing, leaving the
runtime's own spin. The wait policy changes how threads wait, never what they compute: numbers
are the same either way. Child processes (the workers of a sweep, whose thread budget keeps them
from oversubscribing the cores) inherit the parent's decision rather than mistaking their
siblings for outside load.

Rules:

* It is set only when the user set none of ``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT`` and
  ``KMP_BLOCKTIME``: a user's setting is never overridden. ``POSTHOC_VQ_WAIT_POLICY=off`` turns the
  default off (the runtime's own behaviour, whatever the load); ``POSTHOC_VQ_WAIT_POLICY=passive``
  asks for the passive policy whatever the load.
* OpenMP reads the environment once, when torch is loaded. ``import posthoc_vq`` (and the
  ``posthoc-vq`` command) applies the default before anything imports torch; a program that
  imported torch *before* posthoc_vq keeps the runtime's own behaviour: the default is then not
  applied at all (the variables are left unset, so child processes behave like the parent), and
  :func:`wait_policy_record` says ``effective: false``.
* Every run's provenance records what was used and why (:func:`wait_policy_record`).
* A process started on a quiet CPU keeps spinning if other work starts later: start long
  trainings beside each other with the passive policy (``POSTHOC_VQ_WAIT_POLICY=passive``).

This module imports nothing heavy: it must run before torch is imported.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

BUSY_OTHERS = 1
"""Other runnable tasks (median over the samples) from which the CPU counts as busy."""
LOAD_SAMPLES = 5
"""Reads of ``/proc/loadavg`` (1 ms apart) whose median decides."""
USER_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
"""Any of these set by the user means: the user chose, nothing is changed."""
OFF_ENV = "POSTHOC_VQ_WAIT_POLICY"
"""``off`` (or ``0``/``false``/``no``/``user``) disables the default; ``passive`` sets the passive policy whatever the load."""

MARKER_ENV = "POSTHOC_VQ_WAIT_DEFAULT"
"""The default's decision (``NAME=VALUE`` of the variables set, or ``runtime`` when none were), so that a child
process inherits it: it neither mistakes inherited variables for the user's nor decides again."""

_record: dict[str, Any] | None = None


def _marker(variables: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(variables.items()))


def openmp_runtime() -> str | None:
    """``libgomp``, ``libiomp`` or ``libomp``: the OpenMP runtime bundled in the installed torch (found on disk,
    torch is not imported), or None when it cannot be told (no torch, or a torch linked to the system's runtime)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        lib = Path(root) / "lib"
        try:
            names = [p.name for p in lib.iterdir()]
        except OSError:
            continue
        for runtime in ("libgomp", "libiomp", "libomp"):
            if any(n.startswith(runtime) for n in names):
                return runtime
    return None


def default_variables(runtime: str | None) -> dict[str, str]:
    """The passive policy's variables for ``runtime`` (libgomp when it is unknown: the Linux wheels' runtime)."""
    if runtime in ("libiomp", "libomp"):
        return {"KMP_BLOCKTIME": "0"}
    return {"OMP_WAIT_POLICY": "PASSIVE"}


def other_running_tasks(samples: int = LOAD_SAMPLES) -> int | None:
    """Runnable tasks other than this one (median of ``samples`` reads of ``/proc/loadavg``'s
    running count, less 1); None where there is no ``/proc/loadavg``."""
    import time

    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg", encoding="ascii") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return None
        if i + 1 < samples:
            time.sleep(0.001)
    return sorted(counts)[len(counts) // 2]


def apply_default(environ: dict[str, str] | None = None, others: int | None = -1) -> dict[str, Any]:
    """Set the default wait policy in ``environ`` (``os.environ``) unless the user set one, or it is too late.

    ``environ``: another process's environment to prepare (its torch is not loaded yet); None: this process's.

    ``others``: other runnable tasks (default: :func:`other_running_tasks`; None: unknown, taken as quiet).
    Idempotent: the first call decides, later calls return its record. Returns :func:`wait_policy_record`.
    """
    global _record
    if _record is not None and environ is None:
        return dict(_record)
    env = os.environ if environ is None else environ
    user = {k: env[k] for k in USER_VARIABLES if k in env}
    torch_loaded = environ is None and "torch" in sys.modules  # a given mapping is another process's environment
    runtime = openmp_runtime()
    switch = env.get(OFF_ENV, "").strip().lower()
    marker = env.get(MARKER_ENV)
    if marker is not None and marker == (_marker(user) if user else "runtime"):  # inherited from a parent that applied the default
        rec = {"source": "default", "variables": user, "effective": not torch_loaded or None, "inherited": True}
    elif user:
        rec = {"source": "user", "variables": user, "effective": not torch_loaded or None}
    elif switch in ("off", "0", "false", "no", "user"):
        rec = {"source": "off", "variables": {}, "effective": True}
    elif torch_loaded:
        # torch's OpenMP already read the environment: setting the variables now would only mislead (and change children)
        rec = {"source": "runtime", "variables": {}, "effective": False,
               "note": "torch was imported before posthoc_vq: the OpenMP runtime's own wait policy applies"}
    else:
        n = other_running_tasks() if others == -1 else others
        busy = switch == "passive" or (n is not None and n >= BUSY_OTHERS)
        variables = default_variables(runtime) if busy else {}
        env.update(variables)
        env[MARKER_ENV] = _marker(variables) if variables else "runtime"
        why = ("asked for (POSTHOC_VQ_WAIT_POLICY=passive)" if switch == "passive" else
               f"{n} other runnable task(s) at start: passive" if busy else
               "quiet CPU at start: the OpenMP runtime's own spin" if n is not None else "no /proc/loadavg: the OpenMP runtime's own spin")
        rec = {"source": "default", "variables": variables, "effective": True, "other_running_tasks": n, "reason": why}
    rec["openmp_runtime"] = runtime
    if environ is None:
        _record = rec
    return dict(rec)


def wait_policy_record() -> dict[str, Any]:
    """What this process's OpenMP threads do when idle, for provenance: ``source`` (``user``: the user's
    variables; ``default``: posthoc-vq's, set here or inherited from the parent process; ``off``: disabled by
    ``POSTHOC_VQ_WAIT_POLICY``; ``runtime``: torch came first), ``variables`` (the ones in force),
    ``effective`` (True: the OpenMP runtime read them; False: torch was loaded before the default could
    apply, so nothing was set; None: the variables are set but torch was loaded before posthoc_vq, so
    whether they were set before torch loaded cannot be told) and ``openmp_runtime``."""
    return apply_default() if _record is None else dict(_record)
