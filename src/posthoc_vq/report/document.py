"""The report as data: sections of text, figures, tables and "missing" notes, and its Markdown form.

A :class:`Report` is built once (by :mod:`posthoc_vq.report.run_report` or
:mod:`posthoc_vq.report.sweep_report`) and rendered twice: as ``report.md`` with the
PNG figures beside it (this module) and as one self-contained ``report.html``
(:mod:`posthoc_vq.report.html`). Every piece of a section is optional; a piece whose
data does not exist becomes a *missing* note that says what is absent and how to
produce it, so a partial run or sweep still gives a readable report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from posthoc_vq.report.tables import markdown_table


@dataclass
class Figure:
    """A PNG written into the report folder; ``file`` is its name there."""

    file: str
    title: str
    caption: str = ""


@dataclass
class Table:
    """Rows of strings under named columns; ``row_class`` names a column whose value tags each HTML row."""

    columns: Sequence[str]
    rows: list[dict[str, str]]
    title: str = ""
    notes: list[str] = field(default_factory=list)
    key: str = ""  # HTML id (e.g. "claims"), so tests and readers can find the table
    row_class: str | None = None


@dataclass
class Section:
    """One heading: paragraphs, bullet items, figures, tables, and notes on what is missing."""

    key: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


@dataclass
class Report:
    """A whole report: a title, a header of (field, value) pairs, and sections in reading order."""

    title: str
    kind: str  # "run" or "sweep"
    source: str  # the run or sweep directory
    header: list[tuple[str, str]]
    sections: list[Section]
    generated: str  # ISO time the report was written

    @property
    def figures(self) -> list[Figure]:
        return [f for s in self.sections for f in s.figures]

    @property
    def missing(self) -> list[str]:
        return [m for s in self.sections for m in s.missing]


_CELL_ESCAPES = str.maketrans({"|": "\\|", "\n": " ", "&": "&amp;", "<": "&lt;", ">": "&gt;", "[": "\\[", "]": "\\]"})


def _cell(text: str) -> str:
    """A table cell or header value: pipes, HTML and link brackets escaped (run names, tag values and labels are the user's)."""
    return str(text).translate(_CELL_ESCAPES)


def md_text(text: str) -> str:
    """Free text that may hold the user's strings (paths, names, tags): no raw HTML (``<``, ``>`` escaped) and no links
    (``](`` broken), while the text's own code spans and brackets stay as they are."""
    return str(text).replace("<", "&lt;").replace(">", "&gt;").replace("](", "]\\(")


def table_markdown(table: Table) -> str:
    """The table in GitHub Markdown (pipes in cells escaped), its notes as a list below."""
    rows = [{_cell(c): _cell(r.get(c, "-")) for c in table.columns} for r in table.rows]
    text = (f"**{md_text(table.title)}**\n\n" if table.title else "") + markdown_table([_cell(c) for c in table.columns], rows)
    if table.notes:
        text += "\n" + "".join(f"- {md_text(n)}\n" for n in table.notes)
    return text


def to_markdown(report: Report) -> str:
    """``report.md``: header table, then each section; figures link the PNGs beside the file."""
    out = [f"# {md_text(report.title)}", "", f"Source: {_cell(report.source)}. Report written {report.generated}.", ""]
    out += ["| field | value |", "|---|---|"] + [f"| {_cell(k)} | {_cell(v)} |" for k, v in report.header] + [""]
    out += ["Contents: " + " · ".join(f"[{_cell(s.title)}](#{s.key})" for s in report.sections), ""]
    for s in report.sections:
        out += [f'<a id="{s.key}"></a>', "", f"## {md_text(s.title)}", ""]
        for m in s.missing:
            out += [f"> **Missing:** {md_text(m)}", ""]
        out += [md_text(p) + "\n" for p in s.paragraphs]
        if s.items:
            out += [f"- {md_text(i)}" for i in s.items] + [""]
        for f in s.figures:
            out += [f"![{_cell(f.title)}]({f.file})", "", f"*{md_text(f.title)}.* {md_text(f.caption)}".rstrip(), ""]
        for t in s.tables:
            out += [table_markdown(t)]
    return "\n".join(out).rstrip() + "\n"


def check_figures(report: Report, folder: Path) -> None:
    """Raise FileNotFoundError naming any figure the report lists that is not in ``folder`` (a bug, not user input)."""
    absent = [f.file for f in report.figures if not (folder / f.file).is_file()]
    if absent:
        raise FileNotFoundError(f"report figures not written to {folder}: {', '.join(absent)}")
