"""Plain table writers shared by the reports: Markdown and CSV from rows of strings."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from posthoc_vq.io import atomic_write


def markdown_table(columns: Sequence[str], rows: list[dict[str, Any]]) -> str:
    """A GitHub-flavoured Markdown table; a missing cell is '-'."""
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(str(r.get(c, "-")) for c in columns) + " |\n" for r in rows)


def write_csv(path: Path, columns: Sequence[str], rows: list[dict[str, Any]]) -> Path:
    """Write rows as CSV atomically; a missing cell is '-'."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), restval="-", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(path) as tmp:
        tmp.write_text(buf.getvalue())
    return path
