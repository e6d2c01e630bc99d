"""Run a sweep: expand the grid, skip what is done, run the rest on an executor, then judge the claims.

The sweep folder's layout is :class:`posthoc_vq.run.Sweep`'s (spec, provenance, results database,
one run directory per training config, claims).

Re-running the same command resumes: done cells are skipped, interrupted and failed ones
are retried, finished trainings are reused and interrupted ones resumed from checkpoints.
``only`` runs a slice of the grid now (``data.name=mnist``, ``arm=joint-vq,posthoc-b0.1``) and leaves
the rest pending for a later invocation; the claims are judged on every cell done so far.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from posthoc_vq.errors import ConfigError
from posthoc_vq.experiments.claims import make_claims
from posthoc_vq.experiments.executors import make_budgeted_executor, require_ray
from posthoc_vq.experiments.job import run_job
from posthoc_vq.experiments.spec import PERCEPTUAL, SweepSpec, expand, load_sweep_spec
from posthoc_vq.experiments.store import ResultStore
from posthoc_vq.extras import require
from posthoc_vq.io import read_json, write_json
from posthoc_vq.run import Sweep
from posthoc_vq.provenance import provenance


def slice_conditions(spec: SweepSpec, only: list[str]) -> dict[str, list[Any]]:
    """``KEY=V1,V2`` conditions (repeatable; all must hold) as axis -> allowed values, checked against the grid's axes
    and their values before any work, so a typo fails at once instead of running nothing."""
    conditions: dict[str, list[Any]] = {}
    for item in only:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not raw:
            raise ConfigError(f"--only '{item}' must look like axis=value or axis=value1,value2, e.g. data.name=mnist or arm=joint-vq,posthoc-b0.1")
        if key not in spec.axes:
            raise ConfigError(f"--only: '{key}' is not an axis of sweep '{spec.name}'; its axes are {', '.join(spec.axes)}")
        known = {str(v): v for v in spec.axes[key]}
        unknown = [v for v in raw.split(",") if v.strip() not in known]
        if unknown:
            raise ConfigError(f"--only: {key} has no value {', '.join(unknown)}; its values are {', '.join(known)}")
        values = [known[v.strip()] for v in raw.split(",")]
        conditions[key] = [v for v in conditions[key] if v in values] if key in conditions else values
    return conditions


def in_slice(axes: dict[str, Any], conditions: dict[str, list[Any]]) -> bool:
    return all(axes.get(k) in values for k, values in conditions.items())


def plan_tasks(spec: SweepSpec, sweep_dir: Path, todo: set[str], data_dir: str | None, only: dict[str, list[Any]] | None = None,
               device: str | None = None) -> list[dict[str, Any]]:
    """One task per training config that still has cells to do (in the slice ``only``), carrying only those cells."""
    groups: dict[str, dict[str, Any]] = {}
    for cell in expand(spec):
        if cell.cell_id not in todo or not in_slice(cell.axes, only or {}):
            continue
        task = groups.setdefault(cell.train_key, {
            "sweep_dir": str(sweep_dir), "train_key": cell.train_key, "split": spec.split, "threads": spec.threads,
            "data_dir": data_dir, "cells": [], "features": spec.features, "device": device,
            "perceptual": [m for m in spec.compare.metrics if m in PERCEPTUAL],
            "run": cell.run.model_copy(update={"data": cell.run.data.model_copy(update={"data_dir": data_dir})}).model_dump(mode="json")
            if data_dir else cell.run.model_dump(mode="json"),
        })
        task["cells"].append({
            "cell_id": cell.cell_id, "axes": cell.axes,
            "quantize": cell.quantize.model_dump(mode="json") if cell.quantize else None, "weights": cell.weights.model_dump(mode="json"),
            "finetune": cell.finetune.model_dump(mode="json") if cell.finetune else None,
        })
    return list(groups.values())


def _check_same_spec(sweep_dir: Path, spec: SweepSpec) -> None:
    """A sweep folder continues only its own grid, or a grid that contains it (new arms, axis values or
    seeds): every cell it already holds must still be a cell, with the same name, split and threads."""
    saved = Sweep(sweep_dir).spec_file
    if not saved.exists():
        return
    old = SweepSpec.model_validate(read_json(saved, what="sweep spec"))  # fields added since get their defaults
    if old.model_dump(mode="json") == spec.model_dump(mode="json"):
        return
    same = (old.name, old.split, old.threads, old.features) == (spec.name, spec.split, spec.threads, spec.features)
    dropped = {c.cell_id for c in expand(old)} - {c.cell_id for c in expand(spec)} if same else {"*"}
    if dropped:
        why = "its name, split, threads or features differ" if not same else f"{len(dropped)} of its cells are not in the new grid"
        raise ConfigError(
            f"{sweep_dir} holds a sweep with a different spec ({saved}): {why}; a sweep folder can only grow (new arms, "
            "axis values or seeds); use another --out, or delete the folder to start over")


def check_extras(spec: SweepSpec, executor: str) -> None:
    """Before any work: the extras this sweep needs are installed (Ray for ``--executor ray``, torchmetrics for fd/kid),
    so a missing one fails once, naming the extra, not in every cell."""
    if executor == "ray":
        require_ray()
    if {"fd", "kid"} & set(spec.compare.metrics):
        require("torchmetrics", "metrics", f"A sweep comparing {', '.join(sorted({'fd', 'kid'} & set(spec.compare.metrics)))} (compare.metrics)")


def run_sweep(
    spec_path: str | Path, out_dir: str | Path, *, executor: str = "local", workers: int = 2, address: str | None = None,
    data_dir: str | None = None, progress: bool = True, console: Console | None = None, only: list[str] | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) a sweep; writes the database and ``claims.json`` and returns the claims dict plus counts.

    ``claims.md`` is rendered from them by :func:`posthoc_vq.report.claims.write_claims`; :func:`posthoc_vq.api.ablate`
    (``posthoc-vq ablate``) does both.

    ``only``: ``KEY=V1,V2`` conditions on the axes (:func:`slice_conditions`): run that slice now, leave the rest pending.
    ``device``: where the jobs train, encode and decode (:func:`~posthoc_vq.devices.resolve_device`; default CPU);
    each cell records the device its model trained on (``device``), so CPU and GPU cells can be told apart.
    """
    spec = load_sweep_spec(spec_path)
    check_extras(spec, executor)
    conditions = slice_conditions(spec, only or [])
    if device not in (None, "cpu"):
        from posthoc_vq.devices import resolve_device

        device = str(resolve_device(device))  # an unavailable device fails here, before any work
    sweep_dir = Path(out_dir)
    with Sweep(sweep_dir).lock("ablate"):  # one driver per sweep folder; a second fails at once naming the first
        return _run_locked(spec, sweep_dir, executor, workers, address, data_dir, progress, console, conditions, device)


def _run_locked(spec: SweepSpec, sweep_dir: Path, executor: str, workers: int, address: str | None, data_dir: str | None,
                progress: bool, console: Console | None, only: dict[str, list[Any]], device: str | None) -> dict[str, Any]:
    _check_same_spec(sweep_dir, spec)
    cells = expand(spec)
    sweep = Sweep(sweep_dir)
    write_json(sweep.spec_file, spec.model_dump(mode="json"))
    write_json(sweep.provenance_file, provenance(seed=None))
    store = ResultStore(sweep.db_file)
    try:
        store.register((c.cell_id, c.train_key, c.axes) for c in cells)
        tasks = plan_tasks(spec, sweep_dir, store.todo(), data_dir, only, device)
        n_todo = sum(len(t["cells"]) for t in tasks)
        failed = 0
        if tasks:
            runner, budget = make_budgeted_executor(executor, workers=workers, threads=spec.threads, address=address)
            for task in tasks:  # every executor runs a job with the budget's threads: they still give identical numbers
                task["threads"] = budget.threads
            write_json(sweep.provenance_file, provenance(seed=None, executor=executor, thread_budget=budget.as_dict()))
            for note in budget.notes:
                (console or Console(stderr=True)).print(f"[yellow]note:[/] {note}", highlight=False)
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
            try:
                with Progress(*columns, console=console, disable=not progress) as bar:
                    job = bar.add_task(f"{spec.name}: {len(tasks)} trainings, {n_todo} cells", total=n_todo)
                    store.mark_running(c["cell_id"] for t in tasks for c in t["cells"])
                    for task, results, error in runner.run(run_job, tasks):
                        if error is not None:
                            store.fail([c["cell_id"] for c in task["cells"]], error)
                            failed += len(task["cells"])
                        else:
                            for r in results:
                                if "error" in r:
                                    store.fail([r["cell_id"]], r["error"])
                                    failed += 1
                                else:
                                    store.finish(r["cell_id"], r["metrics"], r["artifacts"], r["seconds"] + r["train_seconds"] / len(task["cells"]))
                        bar.advance(job, len(task["cells"]))
            finally:
                runner.close()
        rows = store.rows()
    finally:
        store.close()
    claims = make_claims(rows, spec.compare)
    claims |= {"sweep": spec.name, **cell_counts(rows), "ran_now": n_todo}
    write_json(Sweep(sweep_dir).claims_json, claims)  # claims.md is rendered by the report layer (posthoc_vq.report.claims.write_claims)
    return claims


def current_claims(sweep_dir: str | Path) -> dict[str, Any]:
    """The claims of the cells done so far, judged from the sweep's database as ``ablate`` judges them, with the same
    counts (``n_cells``, ``n_done``, ``n_failed``, ``n_pending``): also while a slice is still running, and nothing is written."""
    sweep = Sweep(sweep_dir)
    spec = SweepSpec.model_validate(read_json(sweep.spec_file, what="sweep spec"))
    store = ResultStore.open_existing(sweep_dir)
    try:
        rows = store.rows()
    finally:
        store.close()
    return make_claims(rows, spec.compare) | {"sweep": spec.name, **cell_counts(rows)}


def cell_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """``n_cells``, ``n_failed`` and ``n_pending`` (pending or interrupted) of a sweep's database rows."""
    return {"n_cells": len(rows), "n_failed": sum(r["status"] == "failed" for r in rows),
            "n_pending": sum(r["status"] in ("pending", "running") for r in rows)}


def flat_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A cell's stored metrics as flat columns: a ``[low, high]`` CI (``psnr_db_ci``) becomes ``<name>_low`` and ``<name>_high``,
    a nested dict dotted keys; numbers, strings, booleans and other lists (``warnings``) are kept as they are."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        name = prefix + key
        if isinstance(value, dict):
            out |= flat_metrics(value, name + ".")
        elif key.endswith("_ci") and isinstance(value, (list, tuple)) and len(value) == 2:
            out[f"{name}_low"], out[f"{name}_high"] = value
        else:
            out[name] = value
    return out


def results_table(sweep_dir: str | Path, where: list[str] | None = None) -> list[dict[str, Any]]:
    """Flat rows of a sweep's database, filtered by ``key=value`` conditions.

    Every row has the same keys: the cell's axes, ``status``, ``attempts``, ``seconds``, then every metric
    stored for any cell (:func:`flat_metrics`: ``psnr_db``, ``psnr_db_ci_low``/``_high``, ``ssim``, ``mse``,
    ``continuous_psnr_db``, ``bits_per_image``, ``compute_seconds``, ``fd``/``kid`` when measured...; None
    where a cell has no value, e.g. a failed one), then ``cell_id`` and ``error`` (the last line of a failed
    cell's traceback, else None).
    """
    from posthoc_vq.experiments.store import filter_rows

    store = ResultStore.open_existing(sweep_dir)
    try:
        rows = filter_rows(store.rows(), where or [])
    finally:
        store.close()
    metrics = [flat_metrics(r["metrics"] or {}) for r in rows]
    names = list(dict.fromkeys(k for m in metrics for k in m))
    flat = []
    for r, m in zip(rows, metrics):
        error = (r["error"] or "").strip().splitlines()
        flat.append({**r["axes"], "status": r["status"], "attempts": r["attempts"], "seconds": r["seconds"], **{k: m.get(k) for k in names},
                     "cell_id": r["cell_id"], "error": error[-1] if error else None})
    return flat

