"""``report.html``: one self-contained page from a Jinja2 template, every figure embedded.

Figures are inlined as ``data:image/png;base64`` URIs and the styles are in the page, so
the file opens from disk with no scripts, fonts or network requests. All text from the
results (names, warnings, claim reasons) is escaped by Jinja2's autoescaping.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from posthoc_vq.extras import require
from posthoc_vq.report.document import Report, check_figures

TEMPLATE = "report.html.j2"
WHAT = "The report (report.html, from a Jinja2 template)"


def require_jinja2() -> Any:
    """The ``jinja2`` module, or a MissingExtraError naming the 'report' extra."""
    return require("jinja2", "report", WHAT)


def data_uri(png: Path) -> str:
    """``data:image/png;base64,...`` of a PNG file."""
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def environment() -> Any:
    """The Jinja2 template environment: the package's ``templates/`` folder, autoescape on, undefined names are errors."""
    jinja2 = require_jinja2()
    return jinja2.Environment(loader=jinja2.PackageLoader("posthoc_vq.report", "templates"), autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)


def to_html(report: Report, folder: Path) -> str:
    """The page for ``report``, whose figures are PNG files in ``folder``."""
    folder = Path(folder)
    check_figures(report, folder)
    images = {f.file: data_uri(folder / f.file) for f in report.figures}
    return environment().get_template(TEMPLATE).render(report=report, images=images)
