"""Reports: tables and figures from a run's evaluation results."""

from posthoc_vq.report.codebook_table import write_codebook_table

__all__ = ["write_codebook_table"]
