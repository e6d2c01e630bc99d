"""``posthoc-vq report PATH --out DIR``: detect a run or a sweep, build its report, write Markdown and HTML.

Writes into ``DIR``: ``report.md`` with the PNG figures beside it, and ``report.html``,
one self-contained page with the same figures embedded (the CLI's default ``DIR`` is ``PATH/report``, the
run's own report folder). Nothing else is written into the run or sweep directory, and nothing is computed from models: every number, image and verdict is
read from files the commands that produce results stored (``evaluate``, ``compress-weights``,
``compress-table``, ``ablate``); what is absent becomes a *missing* note naming that command.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from posthoc_vq.errors import PosthocVQError
from posthoc_vq.run import Run, Sweep
from posthoc_vq.io import atomic_write
from posthoc_vq.report.document import Report, to_markdown
from posthoc_vq.report.html import require_jinja2, to_html
from posthoc_vq.report.run_report import read_run, run_header, run_sections
from posthoc_vq.report.sweep_report import read_sweep, sweep_sections


def detect(path: str | Path) -> str:
    """``'sweep'`` (a folder with spec.json and results.sqlite), ``'run'`` (a folder with config.json), else PosthocVQError."""
    p = Path(path)
    if not p.exists():
        raise PosthocVQError(f"{p} does not exist; give a run directory (`posthoc-vq train --out DIR`) or a sweep directory (`posthoc-vq ablate SPEC --out DIR`)")
    if not p.is_dir():
        raise PosthocVQError(f"{p} is a file; give a run directory or a sweep directory")
    if Sweep(p).exists():
        return "sweep"
    if Run(p).exists():
        return "run"
    raise PosthocVQError(f"{p} is neither a run directory (no config.json) nor a sweep directory (no spec.json and results.sqlite)")


def build_report(path: str | Path, out: str | Path, *, split: str = "test", step=lambda _: None) -> Report:
    """Build the report of a run or a sweep, writing its figures into ``out``; returns the :class:`Report`.

    ``split`` applies to runs; a sweep is reported on the split its spec evaluated.
    """
    path, out = Path(path), Path(out)
    kind = detect(path)
    out.mkdir(parents=True, exist_ok=True)
    if kind == "run":
        rf = read_run(path, split)
        sections, header = run_sections(rf, out, step=step), run_header(rf)
        title = f"Run report: {path.name} ({rf.config.data.name}, latent {rf.config.model.latent_dim})"
    else:
        sf = read_sweep(path)
        sections, header = sweep_sections(sf, out, step=step)
        title = f"Sweep report: {sf.spec.name} ({sf.compare.axis})"
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return Report(title, kind, str(path), header + [("report written", now)], sections, now)


def write_report(path: str | Path, out: str | Path, *, split: str = "test", progress: bool = False,
                 console: Console | None = None) -> dict[str, Any]:
    """Build and write ``report.md`` and ``report.html`` into ``out``.

    Returns
    -------
    dict with ``markdown`` and ``html`` (paths), ``report`` (the :class:`Report`), ``figures`` (paths of the PNGs).
    """
    require_jinja2()  # before any work: without the 'report' extra nothing is written
    out = Path(out)
    columns = (SpinnerColumn(), TextColumn("report: {task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not progress, transient=True) as bar:
        task = bar.add_task("reading", total=None)
        report = build_report(path, out, split=split, step=lambda msg: bar.update(task, description=msg))
        bar.update(task, description="writing report.md and report.html")
        paths = {"markdown": out / "report.md", "html": out / "report.html"}
        with atomic_write(paths["markdown"]) as tmp:
            tmp.write_text(to_markdown(report))
        with atomic_write(paths["html"]) as tmp:
            tmp.write_text(to_html(report, out))
    return {**paths, "report": report, "figures": [out / f.file for f in report.figures]}
