"""Settings per axis value, a sweep folder that grows (new arms reuse its trained models), and the
amenability analysis (geometry measures against the quantization penalty) over a finished sweep."""

import textwrap
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from posthoc_vq.cli import main
from posthoc_vq.errors import ConfigError
from posthoc_vq.experiments import run_sweep
from posthoc_vq.experiments.amenability import MEASURES, amenability, penalty_rows
from posthoc_vq.experiments.spec import expand, load_sweep_spec
from posthoc_vq.io import read_json
from posthoc_vq.run import Run

GRID = textwrap.dedent("""\
    name: growth
    base: digits
    set:
      model.channels: [8, 16]
      train.epochs: 40
      train.patience: 2
      train.min_delta: 0.5
      quantize.K: 16
    axes:
      model.latent_dim: [8, 4]
      seed: [0, 1]
      arm: ARMS
    per:
      model.latent_dim:
        "4": {quantize.K: 8, train.lr: 0.003}
    arms:
      continuous: {set: {quantize.method: none}}
      kmeans: {set: {quantize.method: kmeans}}
      geodesic: {set: {quantize.method: geodesic, quantize.n_neighbors: 10}}
      residual: {set: {quantize.method: residual, quantize.n_stages: 2, quantize.K: 4}}
    compare: {axis: arm, reference: kmeans, metrics: [psnr_db], pair_by: seed}
    threads: 1
""")


def _spec(tmp_path: Path, arms: str, text: str = GRID) -> Path:
    path = tmp_path / f"growth-{len(arms)}.yaml"
    path.write_text(text.replace("ARMS", arms))
    return path


def test_per_axis_value_settings_apply_to_every_cell_at_that_value_and_arms_win(tmp_path):
    cells = expand(load_sweep_spec(_spec(tmp_path, "[continuous, kmeans, residual]")))
    by = {(c.axes["model.latent_dim"], c.axes["arm"], c.axes["seed"]): c for c in cells}
    assert by[8, "kmeans", 0].quantize.K == 16 and by[4, "kmeans", 1].quantize.K == 8
    assert {c.weights.bits for c in cells} == {32}  # weights stay fp32 in a sweep unless weights.bits is set
    assert by[4, "continuous", 0].run.train.lr == 0.003 and by[8, "continuous", 0].run.train.lr != 0.003
    assert by[4, "residual", 0].quantize.K == 4  # the arm's own setting wins over the per-value one
    assert by[4, "kmeans", 0].train_key == by[4, "residual", 0].train_key != by[8, "kmeans", 0].train_key


@pytest.mark.parametrize("old, new, message", [
    ('"4": {quantize.K', '"5": {quantize.K', r"per.model.latent_dim.5: '5' is not a value of axis 'model.latent_dim'"),
    ("per:\n  model.latent_dim:", "per:\n  model.latnt_dim:", "'model.latnt_dim' is not an axis"),
    ("{quantize.K: 8, train.lr", "{quantize.KK: 8, train.lr", "quantize.KK"),
])
def test_bad_per_settings_are_clear_errors(tmp_path, old, new, message):
    assert old in GRID
    with pytest.raises(ConfigError, match=message):
        load_sweep_spec(_spec(tmp_path, "[kmeans]", GRID.replace(old, new)))


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """A sweep run with two arms, then grown by two more arms into the same folder."""
    tmp = tmp_path_factory.mktemp("growth")
    sweep = tmp / "sweep"
    first = run_sweep(_spec(tmp, "[continuous, kmeans]"), sweep, progress=False)
    models = {p: p.stat().st_mtime_ns for p in sweep.glob("runs/*/model.safetensors")}
    second = run_sweep(_spec(tmp, "[continuous, kmeans, geodesic, residual]"), sweep, progress=False)
    return tmp, sweep, first, second, models


def test_a_grown_sweep_runs_only_its_new_cells_on_the_models_it_has(grown):
    tmp, sweep, first, second, models = grown
    assert first["n_done"] == 8 and first["ran_now"] == 8
    assert second["n_done"] == 16 and second["ran_now"] == 8 and second["n_failed"] == 0
    assert len(models) == 4 and {p: p.stat().st_mtime_ns for p in sweep.glob("runs/*/model.safetensors")} == models  # not retrained


def test_a_sweep_folder_cannot_shrink_or_change(grown):
    tmp, sweep = grown[0], grown[1]
    with pytest.raises(ConfigError, match="4 of its cells are not in the new grid.*can only grow"):
        run_sweep(_spec(tmp, "[continuous, kmeans, geodesic]"), sweep, progress=False)
    with pytest.raises(ConfigError, match="can only grow"):
        run_sweep(_spec(tmp, "[continuous, kmeans, geodesic, residual]", GRID.replace("train.patience: 2", "train.patience: 3")), sweep, progress=False)


def test_penalty_rows_are_continuous_minus_codebook_psnr_of_each_run(grown):
    sweep = grown[1]
    rows = penalty_rows(sweep, "kmeans")
    assert len(rows) == 4 and len({r["run_dir"] for r in rows}) == 4
    for r in rows:
        ev = read_json(Run(r["run_dir"]).eval_file("test", codebook=r["codebook"]), what="evaluation")
        assert r["penalty_db"] == pytest.approx(ev["continuous"]["psnr_db"]["mean"] - ev["quantized"]["psnr_db"]["mean"], abs=1e-9)
        assert r["K"] == (16 if r["latent_dim"] == 8 else 8)
    assert {r["codebook"].split("-")[0] for r in penalty_rows(sweep, "residual")} == {"residual"}
    with pytest.raises(ConfigError, match="no finished cell with a 'hybrid' codebook"):
        penalty_rows(sweep, "hybrid")


def test_amenability_correlates_each_stored_measure_with_the_penalty(grown, tmp_path):
    sweep = grown[1]
    with pytest.raises(ConfigError, match=r"geometry-train.json is missing; run `posthoc-vq geometry"):
        amenability([sweep], compute=False)
    out = tmp_path / "amen"
    assert main(["amenability", str(sweep), "--out", str(out), "--no-progress"]) == 0
    result = read_json(out / "amenability.json")
    assert {p.name for p in out.iterdir()} >= {"amenability.json", "amenability.md", "amenability.png"}
    assert result["n_runs"] == 4 and result["n_configurations"] == 2 and set(result["pooled"]) == set(MEASURES)
    for r in result["rows"]:  # each run's geometry was measured and stored in the run
        geometry = read_json(Run(r["run_dir"]).geometry_file("train"))
        assert r["measures"]["twonn"] == geometry["intrinsic_dimension"]["twonn"]
    for c in result["configurations"]:  # a configuration is the mean of its seeds
        runs = [r for r in result["rows"] if r["latent_dim"] == c["latent_dim"]]
        assert c["n_runs"] == len(runs) == 2
        assert c["penalty_db"] == pytest.approx(np.mean([r["penalty_db"] for r in runs]))
        assert c["measures"]["mle"] == pytest.approx(np.mean([r["measures"]["mle"] for r in runs]))
    # two configurations are too few for a rank correlation: said, not computed
    assert result["pooled"]["twonn"]["rho"] is None and "at least 3 pairs" in result["pooled"]["twonn"]["error"]
    x = [r["measures"]["twonn"] for r in result["rows"]]
    y = [r["penalty_db"] for r in result["rows"]]
    runs = result["runs_as_units"]
    assert runs["twonn"]["rho"] == pytest.approx(stats.spearmanr(x, y).statistic)
    tested = [m for m in MEASURES if runs[m].get("rho") is not None]
    assert tested and all(runs[m]["p_holm"] >= runs[m]["p"] for m in tested)
    assert "## Runs as units" in (out / "amenability.md").read_text()
    # stored geometry is read, not recomputed, on a second pass
    again = amenability([sweep], compute=False)
    assert np.allclose([r["penalty_db"] for r in again["rows"]], y)
