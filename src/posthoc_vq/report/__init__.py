"""Reports: tables and figures from a run's evaluation results; whole reports of runs and sweeps (``report.build``)."""

from posthoc_vq.report.codebook_table import write_codebook_table

__all__ = ["write_codebook_table"]
