"""Machine output of the commands that print tables: CSV, JSON and Markdown, written raw.

``--format csv|json|markdown`` never goes through rich, whose Console wraps and folds lines at
80 columns when stdout is not a terminal: :func:`emit` writes the text with ``sys.stdout.write``,
or atomically into a file (``--output FILE``). The rows come from the flatteners beside this
module (:mod:`~posthoc_vq.report.result_rows`, ``tidy_rows`` of the codebook and compression
tables, :func:`posthoc_vq.experiments.results_table`): flat dicts of numbers, strings, booleans
and None.

* **CSV** is tidy: one header, every row as long as it; a numeric column holds numbers only
  (shortest round-trip repr), a missing value is an empty cell (never ``-``), a confidence
  interval is two columns (``ci_low``/``ci_high``, or ``<metric>_ci_low``/``_ci_high``), a label
  such as ``fp32`` has its own column; booleans are ``true``/``false``; a list is joined with ``;``.
* **JSON** is the command's result as one indented value (strict JSON: NaN and infinities become
  ``null``): the stored result for a command that stores one, else the rows.
* **Markdown** is a GitHub table of the same rows as the CSV (numbers to 6 significant digits).
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from posthoc_vq.io import json_safe, write_text

#: the formats every table-printing command accepts besides its human default (``table``, or ``text`` for ``presets``)
MACHINE_FORMATS = ("csv", "json", "markdown")


def columns_of(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The keys of ``rows`` in first-seen order: every column any row has."""
    seen: dict[str, None] = {}
    for r in rows:
        seen.update(dict.fromkeys(r))
    return list(seen)


def _number(value: float) -> str:
    return "" if math.isnan(value) or math.isinf(value) else repr(float(value))


def csv_cell(value: Any) -> str:
    """One CSV cell: '' for None/NaN, true/false, the shortest repr of a float, items joined with ';'."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _number(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        return csv_cell(value.item())
    if isinstance(value, (list, tuple)):
        return ";".join(csv_cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(json_safe(value, nan_to_none=True), sort_keys=True)
    return str(value)


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Tidy CSV of ``rows`` (columns: ``columns``, default every key in first-seen order)."""
    columns = list(columns) if columns is not None else columns_of(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow([csv_cell(r.get(c)) for c in columns])
    return buf.getvalue()


def _markdown_cell(value: Any) -> str:
    if isinstance(value, float) and not isinstance(value, bool):
        return "" if math.isnan(value) else f"{value:.6g}"
    return csv_cell(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table of ``rows``; a missing value is an empty cell."""
    columns = list(columns) if columns is not None else columns_of(rows)
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(_markdown_cell(r.get(c)) for c in columns) + " |\n" for r in rows)


def to_json(value: Any) -> str:
    """Strict, indented JSON of ``value`` and a newline."""
    return json.dumps(json_safe(value, nan_to_none=True), indent=2, allow_nan=False) + "\n"


def render(fmt: str, rows: Sequence[dict[str, Any]], *, columns: Sequence[str] | None = None, json_value: Any = None) -> str:
    """``rows`` as ``fmt`` (csv, json or markdown); ``json_value`` (default: the rows) is what JSON shows."""
    if fmt == "csv":
        return to_csv(rows, columns)
    if fmt == "markdown":
        return to_markdown(rows, columns)
    if fmt == "json":
        return to_json(list(rows) if json_value is None else json_value)
    raise ValueError(f"unknown machine format {fmt!r}; choose one of {', '.join(MACHINE_FORMATS)}")


def emit(text: str, output: str | Path | None = None) -> Path | None:
    """Write ``text`` raw to stdout, never wrapped, or atomically to the file ``output`` (returned)."""
    if output is not None:
        return write_text(output, text)
    sys.stdout.write(text)
    sys.stdout.flush()
    return None
