"""Reports: tables, figures and whole reports of runs and sweeps (``report.build``), made only from stored files.

Nothing here trains, encodes, fits, packs or evaluates: the commands that produce results store
them (``evaluate`` its results and the decoded sample sets, ``compress-table`` its JSON, ``ablate``
claims.json), and this package turns those files into Markdown, CSV, PNG and HTML.
"""

from typing import Any

__all__ = ["write_codebook_table"]


def __getattr__(name: str) -> Any:
    """``write_codebook_table`` loads on first use: the machine formats (``report.formats``) need no numpy or matplotlib."""
    if name == "write_codebook_table":
        from posthoc_vq.report.codebook_table import write_codebook_table

        return write_codebook_table
    raise AttributeError(f"module 'posthoc_vq.report' has no attribute '{name}'")
