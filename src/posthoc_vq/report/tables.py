"""The Markdown table writer shared by the reports (rows of display strings).

Machine-readable output (tidy CSV, JSON, Markdown of numbers) is :mod:`posthoc_vq.report.formats`.
"""

from __future__ import annotations

from typing import Any, Sequence


def markdown_table(columns: Sequence[str], rows: list[dict[str, Any]]) -> str:
    """A GitHub-flavoured Markdown table; a missing cell is '-'."""
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(str(r.get(c, "-")) for c in columns) + " |\n" for r in rows)
