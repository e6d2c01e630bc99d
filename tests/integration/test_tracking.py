"""``--track mlflow``: train, quantize/evaluate and finetune log to a real local MLflow store, read back with MLflow's client.

mlflow is imported at the top on purpose: without the ``[tracking]`` extra this module fails to
collect (CI installs ``[all]``), it never skips.
"""

import json
import time

import mlflow  # noqa: F401 - the [tracking] extra must be installed: fail, never skip
import pytest
from mlflow.tracking import MlflowClient

from posthoc_vq.cli import main
from posthoc_vq.run import Run
from posthoc_vq.tracking import NullTracker, SafeTracker, Tracker, flatten, numeric

TINY = ["--set", "train.epochs=2", "--set", "model.channels=[8,16]", "--set", "model.latent_dim=6", "--set", "train.early_stopping=false"]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A digits run trained, quantized and evaluated with --track mlflow into a file store; the store's client."""
    root = tmp_path_factory.mktemp("tracking")
    uri = (root / "mlruns").as_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        run = root / "run"
        assert main(["train", "--preset", "digits", "--out", str(run), *TINY, "--track", "mlflow", "--no-progress"]) == 0
        assert main(["quantize", str(run), "--method", "kmeans", "--K", "16", "--name", "km16", "--no-progress"]) == 0
        assert main(["evaluate", str(run), "--codebook", "km16", "--track", "mlflow", "--no-progress"]) == 0
    return run, MlflowClient(tracking_uri=uri)


def _runs(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}


def test_train_logs_config_history_summary_and_files(tracked):
    run_dir, client = tracked
    runs = _runs(client, "digits")
    r = runs["run"]
    assert r.info.status == "FINISHED"
    assert r.data.params["model.latent_dim"] == "6"
    assert r.data.params["train.epochs"] == "2" and r.data.params["data.name"] == "digits"
    history = json.loads((run_dir / "history.json").read_text())
    val = sorted(client.get_metric_history(r.info.run_id, "val_loss"), key=lambda m: m.step)
    assert [m.step for m in val] == [row["epoch"] for row in history] == [1, 2]
    assert [m.value for m in val] == pytest.approx([row["val_loss"] for row in history], rel=1e-12)
    for key in ("train_loss", "train_recon", "train_kl", "val_recon", "val_kl", "lr", "seconds"):
        assert len(client.get_metric_history(r.info.run_id, key)) == 2, key
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert r.data.metrics["summary.best_val_loss"] == pytest.approx(summary["best_val_loss"])
    assert r.data.tags["stop_reason"] == "max_epochs"
    files = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"config.json", "model.json", "history.csv", "history.json", "train_summary.json", "provenance.json"} <= files
    assert "model.safetensors" not in files  # the weights stay in the run directory


def test_evaluate_logs_headline_metrics_and_the_eval_json(tracked):
    run_dir, client = tracked
    r = _runs(client, "digits")["run/km16"]
    result = json.loads(Run(run_dir).eval_file("test", codebook="km16").read_text())
    m = r.data.metrics
    for section in ("continuous", "quantized", "penalty"):
        for name in ("psnr_db", "ssim", "mse"):
            assert m[f"{section}.{name}"] == pytest.approx(result[section][name]["mean"], rel=1e-12), (section, name)
    assert m["bits_per_image"] == pytest.approx(result["bits_per_image"])
    assert r.data.params["codebook"] == "km16" and r.data.params["split"] == "test"
    assert "not_converged" in r.data.tags["warnings"]
    assert [a.path for a in client.list_artifacts(r.info.run_id)] == [Run(run_dir).eval_file("test", codebook="km16").name]


def test_finetune_logs_its_run(tracked, monkeypatch):
    run_dir, client = tracked
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)
    out = run_dir.parent / "ft"
    assert main(["finetune", str(run_dir), "--codebook", "km16", "--out", str(out), "--epochs", "1", "--track", "mlflow", "--no-progress"]) == 0
    r = _runs(client, "digits")["ft"]
    assert r.data.params["finetune.codebook"] == "km16" and r.data.params["finetune.epochs"] == "1"
    assert r.data.tags["command"] == "finetune" and r.info.status == "FINISHED"
    history = json.loads((out / "history.json").read_text())
    losses = client.get_metric_history(r.info.run_id, "val_loss")
    assert [x.value for x in losses] == pytest.approx([row["val_loss"] for row in history])
    assert "config.json" in {a.path for a in client.list_artifacts(r.info.run_id)}


def test_default_store_is_mlruns_in_the_working_folder(tracked, tmp_path, monkeypatch):
    run_dir, _ = tracked
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["evaluate", str(run_dir), "--track", "mlflow", "--no-progress"]) == 0
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    assert "run/continuous" in _runs(client, "digits")


def test_an_unreachable_tracking_server_is_a_warning_not_a_failure(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    tic = time.perf_counter()
    out = tmp_path / "r"
    assert main(["train", "--preset", "digits", "--out", str(out), "--set", "train.epochs=1", "--set", "model.channels=[8,16]", "--track", "mlflow", "--no-progress"]) == 0
    assert time.perf_counter() - tic < 60
    assert (out / "train_summary.json").exists()
    err = capsys.readouterr().err
    assert "warning (tracking)" in err and "continuing without tracking" in err.replace("\n", " ")


def test_a_tracker_that_fails_midway_warns_once_and_goes_quiet():
    messages = []

    class Broken(NullTracker):
        def log_metrics(self, metrics, step=None):
            raise ConnectionError("server went away")

    t = SafeTracker(Broken(), messages.append, name="MLflow")
    t.log_params({"a": 1})
    t.log_metrics({"x": 1.0}, step=1)
    t.log_metrics({"x": 2.0}, step=2)
    t.end()
    assert len(messages) == 1 and "server went away" in messages[0]
    assert isinstance(t, Tracker) and isinstance(NullTracker(), Tracker)


def test_flatten_and_numeric():
    assert flatten({"model": {"latent_dim": 8, "channels": [8, 16]}, "seed": 0}) == {"model.latent_dim": 8, "model.channels": [8, 16], "seed": 0}
    assert numeric({"a": 1, "b": True, "c": "x", "d": float("nan"), "e": {"f": 2.5}}) == {"a": 1.0, "b": 1.0, "e.f": 2.5}


SPEC = """name: tracked-sweep
base: digits
set:
  model.channels: [8, 16]
  train.epochs: 2
  train.early_stopping: false
axes:
  model.latent_dim: [8, 4]
  seed: [0, 1]
  weights.bits: [32]
  quantize.method: [none]
compare:
  axis: model.latent_dim
  reference: 8
  metrics: [psnr_db]
  pair_by: seed
threads: 1
"""


def test_ablate_logs_a_parent_run_with_a_child_per_cell(tmp_path, monkeypatch):
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    spec = tmp_path / "tracked.yaml"
    spec.write_text(SPEC)
    sweep = tmp_path / "sweep"
    assert main(["ablate", str(spec), "--out", str(sweep), "--executor", "local", "--track", "mlflow", "--no-progress"]) == 0
    client = MlflowClient(tracking_uri=uri)
    runs = list(_runs(client, "tracked-sweep").values())
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.run_name == "sweep"
    assert parents[0].data.metrics["n_done"] == 4 and parents[0].data.params["set.train.epochs"] == "2"
    assert {a.path for a in client.list_artifacts(parents[0].info.run_id)} >= {"claims.json", "claims.md"}
    assert len(children) == 4 and {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    from posthoc_vq.experiments import results_table

    by_cell = {row["cell_id"]: row for row in results_table(sweep, [])}
    for c in children:
        row = by_cell[c.info.run_name]
        assert c.data.params["model.latent_dim"] == str(row["model.latent_dim"]) and c.data.params["seed"] == str(row["seed"])
        assert c.data.metrics["psnr_db"] == pytest.approx(row["psnr_db"])


def test_a_library_tracker_that_raises_does_not_stop_training(tmp_path, capsys):
    from posthoc_vq.config import load_run_config
    from posthoc_vq.train import train

    seen = []

    class Flaky(NullTracker):
        def log_params(self, params):
            seen.append(dict(params))

        def log_metrics(self, metrics, step=None):
            raise RuntimeError("disk full")

    config = load_run_config("digits", ["train.epochs=2", "model.channels=[8,16]", "train.early_stopping=false"])
    result = train(config, tmp_path / "r", progress=False, tracker=Flaky())
    assert result.epochs == 2 and seen and seen[0]["train.epochs"] == 2
    assert capsys.readouterr().err.count("disk full") == 1


def test_a_resumed_training_logs_its_whole_history(tmp_path, monkeypatch):
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run = tmp_path / "resumed"
    one = [a if a != "train.epochs=2" else "train.epochs=1" for a in TINY]
    assert main(["train", "--preset", "digits", "--out", str(run), *one, "--track", "mlflow", "--no-progress"]) == 0
    assert main(["train", "--preset", "digits", "--out", str(run), *TINY, "--resume", "--track", "mlflow", "--no-progress"]) == 0
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("digits")
    first, second = sorted(client.search_runs([exp.experiment_id]), key=lambda r: r.info.start_time)
    history = json.loads((run / "history.json").read_text())
    val = sorted(client.get_metric_history(second.info.run_id, "val_loss"), key=lambda m: m.step)
    assert [m.step for m in val] == [1, 2]
    assert [m.value for m in val] == pytest.approx([row["val_loss"] for row in history], rel=1e-12)
    assert second.data.tags["resumed_after_epoch"] == "1"
    assert [m.step for m in client.get_metric_history(first.info.run_id, "val_loss")] == [1]
