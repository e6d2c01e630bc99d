"""How long idle OpenMP threads spin before they sleep: a default that survives a shared CPU.

torch's CPU kernels run on an OpenMP thread pool. Between parallel regions its idle threads
spin, waiting for the next region, before they sleep: libgomp (the runtime of the Linux torch
wheels) spins 300,000 iterations (about 3 ms) when ``OMP_WAIT_POLICY`` is unset, about 5
minutes with ``ACTIVE``, and not at all with ``PASSIVE``. A training step runs hundreds of
short regions, so on a machine whose cores another process also wants, spinning threads burn
the time slices the other process's (and their own process's) working threads need: an epoch
beside a second 2-thread training on 2 cores was measured 10-25x slower. ``PASSIVE`` cures that
but costs about 20% on a quiet machine (every region wakes sleeping threads through the kernel).

The default here is the middle road: a short spin, ``GOMP_SPINCOUNT`` = :data:`DEFAULT_SPINCOUNT`
(libgomp; ``KMP_BLOCKTIME`` = :data:`DEFAULT_BLOCKTIME_MS` ms for Intel's/LLVM's runtime). Short
gaps between regions are still bridged by spinning (quiet speed), a thread whose peers were
descheduled gives its core up after microseconds (contention). ``bench/contention.py`` measures it.

Rules:

* It is set only when the user set none of ``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT`` and
  ``KMP_BLOCKTIME``: a user's setting is never overridden. ``POSTHOC_VQ_WAIT_POLICY=off`` turns the
  default off (the runtime's own behaviour).
* OpenMP reads the environment once, when torch is loaded. ``import posthoc_vq`` (and the
  ``posthoc-vq`` command) applies the default before anything imports torch; a program that
  imported torch *before* posthoc_vq keeps the runtime's own behaviour: the default is then not
  applied at all (the variables are left unset, so child processes behave like the parent), and
  :func:`wait_policy_record` says ``effective: false``. Such a program can set the variables
  itself before importing torch, e.g. ``GOMP_SPINCOUNT=10000 python ...``.
* Every run's provenance records what was used (:func:`wait_policy_record`).

This module imports nothing heavy: it must run before torch is imported.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_SPINCOUNT = 10_000
"""libgomp spin iterations before an idle thread sleeps (about 0.1 ms; libgomp's own default is 300,000)."""
DEFAULT_BLOCKTIME_MS = 0
"""Intel / LLVM OpenMP: milliseconds an idle thread spins (its finest step; 0 = sleep at once; default 200)."""
USER_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
"""Any of these set by the user means: the user chose, nothing is changed."""
OFF_ENV = "POSTHOC_VQ_WAIT_POLICY"
"""``off`` (or ``0``/``false``/``no``/``user``) disables the default."""

MARKER_ENV = "POSTHOC_VQ_WAIT_DEFAULT"
"""Set beside the default's variables (``NAME=VALUE``), so that a child process that inherits them knows they are
posthoc-vq's default, not the user's."""

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
    """The variables of the default for ``runtime`` (libgomp when it is unknown: the Linux wheels' runtime)."""
    if runtime in ("libiomp", "libomp"):
        return {"KMP_BLOCKTIME": str(DEFAULT_BLOCKTIME_MS)}
    return {"GOMP_SPINCOUNT": str(DEFAULT_SPINCOUNT)}


def apply_default(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Set the default wait policy in ``environ`` (``os.environ``) unless the user set one, or it is too late.

    Idempotent: the first call decides, later calls return its record. Returns :func:`wait_policy_record`.
    """
    global _record
    if _record is not None and environ is None:
        return dict(_record)
    env = os.environ if environ is None else environ
    user = {k: env[k] for k in USER_VARIABLES if k in env}
    torch_loaded = "torch" in sys.modules
    runtime = openmp_runtime()
    if user and env.get(MARKER_ENV) == _marker(user):  # inherited from a parent that applied the default
        rec = {"source": "default", "variables": user, "effective": not torch_loaded or None, "inherited": True}
    elif user:
        rec = {"source": "user", "variables": user, "effective": not torch_loaded or None}
    elif env.get(OFF_ENV, "").strip().lower() in ("off", "0", "false", "no", "user"):
        rec = {"source": "off", "variables": {}, "effective": True}
    elif torch_loaded:
        # torch's OpenMP already read the environment: setting the variables now would only mislead (and change children)
        rec = {"source": "runtime", "variables": {}, "effective": False,
               "note": "torch was imported before posthoc_vq: the OpenMP runtime's own wait policy applies"}
    else:
        variables = default_variables(runtime)
        env.update(variables)
        env[MARKER_ENV] = _marker(variables)
        rec = {"source": "default", "variables": variables, "effective": True}
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
