"""Sweeps: spec, jobs, executors (local, process, ray), the results database, statistics and claims."""

from posthoc_vq.experiments.runner import results_table, run_sweep
from posthoc_vq.experiments.spec import SweepSpec, load_sweep_spec

__all__ = ["SweepSpec", "load_sweep_spec", "results_table", "run_sweep"]
