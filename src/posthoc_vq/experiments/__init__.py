"""Sweeps: spec, jobs, executors (local, process, ray), the results database, statistics and claims.

The names below load on first use, so reading a sweep's spec or results (``experiments.spec``,
``experiments.store``, as the report does) never imports the modules that train and evaluate.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "current_claims": "posthoc_vq.experiments.runner",
    "results_table": "posthoc_vq.experiments.runner",
    "run_sweep": "posthoc_vq.experiments.runner",
    "SweepSpec": "posthoc_vq.experiments.spec",
    "load_sweep_spec": "posthoc_vq.experiments.spec",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'posthoc_vq.experiments' has no attribute '{name}'")
