"""A sweep run a slice at a time (``--only``), the device each cell trained on, and the warm-up's place in a cell's identity."""

import textwrap
from pathlib import Path

import pytest

from posthoc_vq.cli import main
from posthoc_vq.errors import ConfigError
import posthoc_vq
from posthoc_vq.experiments import current_claims, results_table, run_sweep
from posthoc_vq.experiments.spec import expand, load_sweep_spec
from posthoc_vq.io import read_json

GRID = textwrap.dedent("""\
    name: slices
    base: digits
    set:
      model.channels: [8, 16]
      model.latent_dim: 4
      train.epochs: 40
      train.patience: 2
      train.min_delta: 0.5
      quantize.K: 8
    axes:
      seed: [0, 1]
      arm: [continuous, kmeans, residual]
    arms:
      continuous: {set: {quantize.method: none}}
      kmeans: {set: {quantize.method: kmeans}}
      residual: {set: {quantize.method: residual, quantize.n_stages: 2, quantize.K: 4}}
    compare: {axis: arm, reference: kmeans, metrics: [psnr_db], pair_by: seed, min_n: 2}
    threads: 1
""")


def _spec(tmp_path: Path, text: str = GRID) -> Path:
    path = tmp_path / "slices.yaml"
    path.write_text(text)
    return path


def test_a_slice_runs_now_and_the_rest_later_without_retraining(tmp_path):
    spec, sweep = _spec(tmp_path), tmp_path / "sweep"
    first = posthoc_vq.ablate(spec, sweep, progress=False, only=["seed=0", "arm=continuous,kmeans"])
    assert (first["n_done"], first["ran_now"], first["n_pending"], first["n_cells"]) == (2, 2, 4, 6)
    rows = results_table(sweep)
    assert {(r["seed"], r["arm"]) for r in rows if r["status"] == "done"} == {(0, "continuous"), (0, "kmeans")}
    assert all(r["device"] == "cpu" for r in rows if r["status"] == "done")  # where each cell's model trained
    assert "4 not run yet" in (sweep / "claims.md").read_text()
    models = {p: p.stat().st_mtime_ns for p in sweep.glob("runs/*/model.safetensors")}
    assert len(models) == 1
    rest = posthoc_vq.ablate(spec, sweep, progress=False)  # no slice: everything not done yet
    assert (rest["n_done"], rest["ran_now"], rest["n_pending"]) == (6, 4, 0)
    assert {p: p.stat().st_mtime_ns for p in sweep.glob("runs/*/model.safetensors") if p in models} == models  # seed 0 reused
    assert "not run yet" not in (sweep / "claims.md").read_text()


@pytest.mark.parametrize("only, message", [
    (["sed=0"], r"--only: 'sed' is not an axis of sweep 'slices'; its axes are seed, arm"),
    (["arm=kmeans,geodesic"], r"--only: arm has no value geodesic; its values are continuous, kmeans, residual"),
    (["seed"], r"--only 'seed' must look like axis=value"),
])
def test_a_bad_slice_fails_before_any_work(tmp_path, only, message):
    with pytest.raises(ConfigError, match=message):
        run_sweep(_spec(tmp_path), tmp_path / "sweep", progress=False, only=only)
    assert not (tmp_path / "sweep").exists()


def test_the_cli_slice_and_an_unavailable_device_are_clear(tmp_path, capsys):
    assert main(["ablate", str(_spec(tmp_path)), "--out", str(tmp_path / "s"), "--only", "seed=1", "--only", "arm=continuous", "--no-progress"]) == 0
    assert "1/6 cells done (1 run now, 0 failed, 5 not run yet" in " ".join(capsys.readouterr().out.split())  # rich wraps lines
    assert main(["ablate", str(_spec(tmp_path)), "--out", str(tmp_path / "s2"), "--device", "cuda:7", "--no-progress"]) != 0
    assert "cuda" in capsys.readouterr().err and not (tmp_path / "s2").exists()


def test_the_warm_up_is_part_of_a_cells_identity_only_when_set(tmp_path):
    before = {c.cell_id for c in expand(load_sweep_spec(_spec(tmp_path)))}
    same = {c.cell_id for c in expand(load_sweep_spec(_spec(tmp_path, GRID.replace("train.min_delta: 0.5", "train.min_delta: 0.5\n  train.min_epochs: 0"))))}
    warm = expand(load_sweep_spec(_spec(tmp_path, GRID.replace("train.min_delta: 0.5", "train.min_delta: 0.5\n  train.min_epochs: 5"))))
    assert same == before  # sweeps from before the warm-up keep their cell ids
    assert not ({c.cell_id for c in warm} & before) and all(c.run.train.min_epochs == 5 for c in warm)


def test_the_full_spec_holds_the_issues_grid():
    spec = load_sweep_spec("posthoc-vs-joint-full")
    cells = expand(spec)
    assert len(cells) == 3 * 4 * 3 * 6 and len({c.train_key for c in cells}) == 3 * 3 * 12  # 12 trainings per dataset and seed
    by = {(c.axes["data.name"], c.axes["rate"], c.axes["arm"], c.axes["seed"]): c for c in cells}
    assert all(c.run.train.min_epochs == 10 and c.run.data.max_train_images is None for c in cells)  # full train splits, warm-up
    assert by["cifar-10-jpeg", "10", "posthoc-b0.1", 0].run.model.channels == [32, 64, 128]
    assert by["cifar-10-jpeg", "grid", "joint-vq", 0].run.model.channels == [32, 64]  # the spatial preset's family
    assert {c.run.train.patience for c in cells if c.axes["data.name"] == "cifar-10-jpeg"} == {5}
    assert by["mnist", "40", "joint-vq", 2].run.model.stages == 4 and by["mnist", "40", "posthoc-b1", 2].quantize.n_stages == 4
    # the post-hoc arms of a dataset and seed share one continuous VAE per beta and family
    assert by["mnist", "10", "posthoc-b1", 1].train_key == by["mnist", "40", "finetune-b1", 1].train_key


@pytest.mark.parametrize("old, new", [
    ("residual: {set: {quantize.method: residual, quantize.n_stages: 2, quantize.K: 4}}", "residual: {set: {quantize.method: kmeans}}"),  # two arms, one config
    ("  arm: [continuous, kmeans, residual]", "  arm: [continuous, kmeans, residual]\n  quantize.K: [8, 16]"),  # K under method none
])
def test_grid_points_that_resolve_to_one_config_are_refused_before_any_work(tmp_path, old, new):
    assert old in GRID
    with pytest.raises(ConfigError, match=r"grid points \{.*\} and \{.*\} resolve to the same configuration"):
        load_sweep_spec(_spec(tmp_path, GRID.replace(old, new)))
    assert main(["ablate", str(_spec(tmp_path, GRID.replace(old, new))), "--out", str(tmp_path / "s"), "--no-progress"]) == 2
    assert not (tmp_path / "s").exists()


def test_current_claims_judge_the_database_as_ablate_does(tmp_path):
    sweep = tmp_path / "sweep"
    written = run_sweep(_spec(tmp_path), sweep, progress=False, only=["arm=continuous,kmeans"])
    now = current_claims(sweep)
    assert now["claims"] == read_json(sweep / "claims.json")["claims"] == written["claims"]
    assert (now["n_done"], now["n_pending"], now["n_failed"], now["n_cells"]) == (4, 2, 0, 6)
