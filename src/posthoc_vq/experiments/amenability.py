"""Does latent geometry predict the quantization penalty? ``posthoc-vq amenability SWEEP...``

The Fashion-MNIST study's hypothesis: a dataset's latent space is more or less "amenable to
quantization", and its geometry says which. This tests it across the runs of finished sweeps:

* the **penalty** of each trained run is its continuous test PSNR minus the test PSNR through its
  post-hoc codebook of one method (``kmeans`` by default; the sweep cell with that method, fp32
  weights and no fine-tune; a run with several such codebooks gives one row per codebook);
* its **geometry** is :func:`posthoc_vq.evaluation.geometry.geometry_of_run` on the train split's
  ``mu`` (computed and stored in the run when missing): TwoNN and MLE intrinsic dimension, the
  Zador slope of the k-means distortion curve and its effective dimension, class separation,
  Fisher ratio and pooled spread, the smallest connected k of the kNN graph;
* each measure's **Spearman rank correlation** with the penalty, with a paired bootstrap CI and
  Holm-corrected p-values over the measures.

The unit of analysis is a **configuration** (sweep, dataset, latent size, K): seeds of one
configuration are replicates that share most of their geometry, so the primary correlation is over
configurations (each the mean over its converged seeds), pooled over the sweeps and per sweep. The
correlation over single runs is reported too, labelled as such: it counts seeds as if they were
independent configurations, so its p-values and CIs are too optimistic. Only runs that converged
(early stopping) enter; the others are listed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from posthoc_vq.errors import ConfigError
from posthoc_vq.experiments.spec import SweepSpec, expand
from posthoc_vq.experiments.statistics import holm, rank_correlation
from posthoc_vq.experiments.store import ResultStore
from posthoc_vq.io import read_json
from posthoc_vq.run import Run, Sweep

#: measure -> (path in the geometry JSON, what it is)
MEASURES: dict[str, tuple[tuple[str, str], str]] = {
    "twonn": (("intrinsic_dimension", "twonn"), "intrinsic dimension, TwoNN"),
    "mle": (("intrinsic_dimension", "mle"), "intrinsic dimension, Levina-Bickel MLE (k=20)"),
    "d_eff": (("distortion", "d_eff"), "effective dimension of the k-means distortion curve (Zador, -2 / slope)"),
    "separation": (("classes", "separation"), "between-class centroid distance / pooled within-class spread"),
    "fisher_ratio": (("classes", "fisher_ratio"), "Fisher ratio: between-class / within-class variance"),
    "spread": (("classes", "spread_overall"), "pooled within-class RMS spread"),
    "connected_k": (("connectivity", "connected_k"), "smallest k whose kNN graph is connected"),
}


def penalty_rows(sweep_dir: str | Path, method: str = "kmeans") -> list[dict[str, Any]]:
    """One row per finished cell of the sweep with a ``method`` codebook, fp32 weights and no fine-tune:
    its run, dataset, latent size, seed, codebook, bits, continuous and quantized test PSNR and the penalty (dB)."""
    sweep = Sweep(sweep_dir)
    if not sweep.spec_file.exists():
        raise ConfigError(f"{sweep_dir} is not a sweep folder (no {sweep.spec_file.name}); give a folder `posthoc-vq ablate` wrote")
    spec = SweepSpec.model_validate(read_json(sweep.spec_file, what="sweep spec"))
    cells = {c.cell_id: c for c in expand(spec, str(sweep.spec_file))}
    store = ResultStore.open_existing(sweep_dir)
    try:
        done = store.rows("done")
    finally:
        store.close()
    rows = []
    for r in done:
        cell = cells.get(r["cell_id"])
        if cell is None or cell.quantize is None or cell.quantize.method != method or cell.weights.bits != 32 or cell.finetune is not None:
            continue
        m = r["metrics"]
        rows.append({
            "sweep": spec.name, "sweep_dir": str(sweep_dir), "run_dir": r["artifacts"]["run_dir"], "codebook": r["artifacts"]["codebook"],
            "dataset": cell.run.data.name, "latent_dim": cell.run.model.latent_dim, "seed": cell.run.seed, "K": cell.quantize.K,
            "bits_per_image": m.get("bits_per_image"), "converged": m.get("converged") is True,
            "continuous_psnr_db": m["continuous_psnr_db"], "quantized_psnr_db": m["psnr_db"], "penalty_db": m["continuous_psnr_db"] - m["psnr_db"],
        })
    if not rows:
        raise ConfigError(f"{sweep_dir}: no finished cell with a '{method}' codebook, fp32 weights and no fine-tune; "
                          f"run the sweep first (`posthoc-vq ablate`) or pick --method among its codebooks")
    return rows


def run_geometry(run_dir: str | Path, split: str = "train", data_dir: str | None = None, compute: bool = True) -> dict[str, Any]:
    """The stored geometry of a run's ``split`` latents, computed (and stored) first when missing and ``compute``."""
    path = Run(run_dir).geometry_file(split)
    if path.exists():
        return read_json(path, what="latent geometry")
    if not compute:
        raise ConfigError(f"{path} is missing; run `posthoc-vq geometry {run_dir} --split {split}` first")
    from posthoc_vq.evaluation.geometry import geometry_of_run

    return geometry_of_run(run_dir, split=split, data_dir=data_dir)


def measure_value(geometry: dict[str, Any], name: str) -> float | None:
    (block, key), _ = MEASURES[name]
    v = geometry.get(block, {}).get(key)
    return None if v is None else float(v)


CONFIGURATION = ("sweep", "dataset", "latent_dim", "K")


def configurations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped by :data:`CONFIGURATION`: the mean penalty and mean of each measure over the group's runs."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in CONFIGURATION), []).append(r)
    out = []
    for key, members in groups.items():
        measures = {}
        for name in MEASURES:
            vals = [m["measures"][name] for m in members if m["measures"][name] is not None]
            measures[name] = float(np.mean(vals)) if vals else None
        out.append({**dict(zip(CONFIGURATION, key)), "n_runs": len(members), "penalty_db": float(np.mean([m["penalty_db"] for m in members])),
                    "measures": measures})
    return out


def _correlations(rows: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in MEASURES:
        pairs = [(r["measures"][name], r["penalty_db"]) for r in rows if r["measures"][name] is not None]
        try:
            out[name] = rank_correlation([p[0] for p in pairs], [p[1] for p in pairs], seed=seed).to_dict()
        except ValueError as err:  # too few runs, or a constant measure (e.g. every graph connected at the same k)
            out[name] = {"n": len(pairs), "rho": None, "error": str(err)}
    tested = [n for n in out if out[n].get("rho") is not None]
    for name, p in zip(tested, holm([out[n]["p"] for n in tested])):
        out[name]["p_holm"] = p
    return out


def amenability(sweep_dirs: list[str | Path], *, method: str = "kmeans", split: str = "train", data_dir: str | None = None,
                compute: bool = True, seed: int = 0, progress=None) -> dict[str, Any]:
    """Penalty rows of every sweep, each run's geometry, and each measure's rank correlation with the penalty.

    ``progress``: an optional callable ``(done, total, run_dir)`` called after each run's geometry.
    """
    rows = [row for d in sweep_dirs for row in penalty_rows(d, method)]
    geometries: dict[str, dict[str, Any]] = {}
    runs = sorted({r["run_dir"] for r in rows})
    for i, run_dir in enumerate(runs):
        geometries[run_dir] = run_geometry(run_dir, split, data_dir, compute)
        if progress is not None:
            progress(i + 1, len(runs), run_dir)
    for r in rows:
        r["measures"] = {name: measure_value(geometries[r["run_dir"]], name) for name in MEASURES}
    used = [r for r in rows if r["converged"]]
    configs = configurations(used)
    sweeps = sorted({r["sweep"] for r in used})
    return {
        "question": f"does a latent-geometry measure predict the quantization penalty (continuous minus {method} test PSNR)?",
        "method": method, "geometry_split": split, "penalty": "continuous_psnr_db - quantized_psnr_db (test, dB; positive: quantization loses)",
        "measures": {name: desc for name, (_, desc) in MEASURES.items()},
        "unit": "configuration (sweep, dataset, latent size, K): the mean over its converged seeds",
        "n_configurations": len(configs), "n_runs": len(used), "n_datasets": len({r["dataset"] for r in used}), "sweeps": [str(d) for d in sweep_dirs],
        "left_out_unconverged": [r["run_dir"] for r in rows if not r["converged"]],
        "pooled": _correlations(configs, seed),
        "per_sweep": {s: _correlations([c for c in configs if c["sweep"] == s], seed) for s in sweeps},
        "runs_as_units": _correlations(used, seed),
        "configurations": configs, "rows": rows,
    }


def verdict(correlations: dict[str, Any], alpha: float = 0.05) -> list[str]:
    """One line per measure of one analysis (``result["pooled"]``, ``result["per_sweep"][name]`` or
    ``result["runs_as_units"]``): rho [CI], Holm p, and whether it predicts the penalty.

    A measure predicts the penalty when its Holm p is below ``alpha`` and its bootstrap CI excludes 0.
    """
    lines = []
    for name, c in correlations.items():
        if c.get("rho") is None:
            lines.append(f"{name}: not measurable ({c['error']})")
            continue
        if c["ci_low"] != c["ci_low"]:  # nan: the measure is nearly constant over these units
            lines.append(f"{name}: rho {c['rho']:+.2f}, Holm p {c['p_holm']:.3g}, n={c['n']}: no CI ({c['n_degenerate']} of the bootstrap "
                         "resamples had a constant measure or penalty): no evidence either way")
            continue
        sig = c["p_holm"] < alpha and (c["ci_low"] > 0 or c["ci_high"] < 0)
        direction = "higher penalty" if c["rho"] > 0 else "lower penalty"
        said = f"predicts the penalty (higher {name} -> {direction})" if sig else "no evidence it predicts the penalty"
        lines.append(f"{name}: rho {c['rho']:+.2f} [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}], Holm p {c['p_holm']:.3g}, n={c['n']}: {said}")
    return lines


def markdown(result: dict[str, Any]) -> str:
    """The result as Markdown: the question, its units, and the verdict lines of each analysis."""
    parts = [f"# {result['question']}\n",
             f"{result['n_configurations']} configurations ({result['unit']}), {result['n_runs']} converged runs, "
             f"{result['n_datasets']} datasets; sweeps: {', '.join(result['sweeps'])}.\n",
             f"Not converged (left out): {len(result['left_out_unconverged'])}.\n",
             "## Pooled over the configurations of every sweep\n", *[f"- {x}" for x in verdict(result["pooled"])], ""]
    for sweep in result["per_sweep"]:
        parts += [f"## Configurations of sweep {sweep}\n", *[f"- {x}" for x in verdict(result["per_sweep"][sweep])], ""]
    parts += ["## Runs as units (seeds counted as independent: p-values and CIs too optimistic)\n",
              *[f"- {x}" for x in verdict(result["runs_as_units"])], ""]
    return "\n".join(parts) + "\n"
