"""Training: determinism, resume after SIGKILL, NaN handling, damaged checkpoints, run-dir safety."""

import json
from importlib.metadata import version
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from posthoc_vq.config import load_run_config
from posthoc_vq.errors import CheckpointError, ConfigError, TrainingError
from posthoc_vq.models import ConvVAE
from posthoc_vq.train import Trainer, load_model, train

SMALL = ["model.latent_dim=8", "model.channels=[8,16]", "train.batch_size=64", "train.threads=1"]


def config(*extra, seed=0):
    return load_run_config("digits", SMALL + list(extra), seed=seed)


def weights(run_dir, name="model.safetensors"):
    return load_file(str(Path(run_dir) / name))


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_seed_gives_identical_weights_and_other_seed_differs(tmp_path):
    c = config("train.epochs=3", "train.early_stopping=false")
    train(c, tmp_path / "a", progress=False)
    train(c, tmp_path / "b", progress=False)
    train(config("train.epochs=3", "train.early_stopping=false", seed=1), tmp_path / "c", progress=False)
    a, b, c2 = weights(tmp_path / "a"), weights(tmp_path / "b"), weights(tmp_path / "c")
    assert_same(a, b)
    assert not torch.equal(a["fc_mu.weight"], c2["fc_mu.weight"])
    hist = json.loads((tmp_path / "a" / "history.json").read_text())
    assert [r["epoch"] for r in hist] == [1, 2, 3]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]  # it learns


def test_run_directory_records_config_provenance_and_convergence(tmp_path):
    result = train(config("train.epochs=40", "train.patience=2", "train.min_delta=0.5"), tmp_path / "r", progress=False)
    run = tmp_path / "r"
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["image_size"] == 8 and saved["model"]["in_channels"] == 1 and saved["seed"] == 0
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["seed"] == 0 and prov["versions"]["torch"] == version("torch") and "git_commit" in prov
    summary = json.loads((run / "train_summary.json").read_text())
    # a large min_delta makes the criterion fire early: the run is marked converged, not max-epochs
    assert summary["converged"] is True and summary["stop_reason"] == "early_stopping" and summary["epochs"] < 40
    assert result.best_epoch == summary["best_epoch"] <= summary["epochs"] - 2
    csv_lines = (run / "history.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,lr,train_loss") and len(csv_lines) == summary["epochs"] + 1
    model, meta = load_model(run)
    assert meta["epoch"] == result.best_epoch and meta["trained_steps"] > 0 and not model.training


def test_max_epochs_is_marked_not_converged(tmp_path):
    result = train(config("train.epochs=2", "train.patience=5"), tmp_path / "r", progress=False)
    assert (result.converged, result.stop_reason, result.epochs) == (False, "max_epochs", 2)


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    args = ["--preset", "digits", "--no-progress"] + [x for s in SMALL + ["train.epochs=30", "train.early_stopping=false", "train.lr_schedule=cosine"] for x in ("--set", s)]
    train_cmd = [sys.executable, "-m", "posthoc_vq.cli", "train"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(train_cmd + args + ["--out", str(full)], check=True, capture_output=True)
    proc = subprocess.Popen(train_cmd + args + ["--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = killed / "checkpoints" / "latest.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if pointer.exists() and json.loads(pointer.read_text())["epoch"] >= 3:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "train_summary.json").exists()
    out = subprocess.run(train_cmd + ["--out", str(killed), "--resume", "--no-progress"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "resuming" in out.stderr
    assert_same(weights(full), weights(killed))
    a, b = (json.loads((d / "history.json").read_text()) for d in (full, killed))
    assert [r["val_loss"] for r in a] == [r["val_loss"] for r in b]


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "r"
    original = ConvVAE.loss
    calls = {"n": 0}

    def poisoned(self, x, out):
        calls["n"] += self.training
        losses = original(self, x, out)
        if self.training and calls["n"] == 25:  # batch 4 of epoch 2 (21 batches per epoch)
            losses.loss = losses.loss * float("nan")
        return losses

    monkeypatch.setattr(ConvVAE, "loss", poisoned)
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 2, step 4 of 21.*checkpoints.*--resume"):
        train(config("train.epochs=5", "train.early_stopping=false"), run, progress=False)
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["epoch"] == 1
    weights(run / "checkpoints" / "epoch-0001")  # the last good checkpoint still loads
    monkeypatch.setattr(ConvVAE, "loss", original)
    result = train(config("train.epochs=5", "train.early_stopping=false"), run, resume=True, progress=False)
    assert result.epochs == 5
    clean = tmp_path / "clean"
    train(config("train.epochs=5", "train.early_stopping=false"), clean, progress=False)
    assert_same(weights(run), weights(clean))  # the NaN epoch was redone from the good checkpoint


def test_nan_from_cli_is_a_clear_error(tmp_path, capsys, monkeypatch):
    from posthoc_vq.cli import main

    monkeypatch.setattr(ConvVAE, "loss", lambda self, x, out: type("L", (), {"loss": torch.tensor(float("inf"), requires_grad=True), "recon": torch.tensor(0.0), "kl": torch.tensor(0.0)})())
    code = main(["train", "--out", str(tmp_path / "r"), "--no-progress"] + [x for s in SMALL for x in ("--set", s)])
    assert code == 1  # failed work (a TrainingError), not a usage error
    assert "loss became inf at epoch 1, step 1" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_checkpoint_is_a_clear_error(tmp_path, damage):
    run = tmp_path / "r"
    train(config("train.epochs=2", "train.early_stopping=false"), run, progress=False)
    target = run / "checkpoints" / "epoch-0002" / "optimizer.safetensors"
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        target.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    else:
        target.unlink()
    with pytest.raises(CheckpointError, match=r"epoch-0002/optimizer.safetensors"):
        train(config("train.epochs=3", "train.early_stopping=false"), run, resume=True, progress=False)


def test_damaged_model_file_is_a_clear_error(tmp_path):
    run = tmp_path / "r"
    train(config("train.epochs=1"), run, progress=False)
    (run / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"model.safetensors is corrupt or was modified"):
        load_model(run)
    (run / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"model.json is damaged"):
        load_model(run)
    with pytest.raises(CheckpointError, match=r"run directory not found"):
        load_model(tmp_path / "nope")


def test_existing_run_is_not_overwritten_and_resume_config_is_checked(tmp_path):
    run = tmp_path / "r"
    train(config("train.epochs=1"), run, progress=False)
    before = (run / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        train(config("train.epochs=1"), run, progress=False)
    with pytest.raises(ConfigError, match=r"different config \(model.latent_dim\)"):
        train(config("train.epochs=2", "model.latent_dim=4"), run, resume=True, progress=False)
    assert (run / "model.safetensors").read_bytes() == before
    assert train(config("train.epochs=2"), run, resume=True, progress=False).epochs == 2


def test_bf16_precision_trains_and_differs_from_fp32(tmp_path):
    a = train(config("train.epochs=2", "train.early_stopping=false", "train.precision=bf16"), tmp_path / "bf16", progress=False)
    b = train(config("train.epochs=2", "train.early_stopping=false"), tmp_path / "fp32", progress=False)
    assert abs(a.best_val_loss - b.best_val_loss) < 0.05 * b.best_val_loss  # bf16 autocast learns as well as fp32
    assert not torch.equal(weights(tmp_path / "bf16")["fc_mu.weight"], weights(tmp_path / "fp32")["fc_mu.weight"])


def test_threads_setting_is_honoured(tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        Trainer(config("train.threads=1"), tmp_path / "a", progress=False)
        assert torch.get_num_threads() == 1
        Trainer(config("train.threads=2"), tmp_path / "b", progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_warm_up_epochs_never_count_toward_patience(tmp_path):
    # min_delta so large that no epoch after the first improves: early stopping fires as soon as it may
    plain = train(config("train.epochs=20", "train.patience=2", "train.min_delta=1e9"), tmp_path / "plain", progress=False)
    warm = train(config("train.epochs=20", "train.patience=2", "train.min_delta=1e9", "train.min_epochs=4"), tmp_path / "warm", progress=False)
    assert (plain.epochs, plain.stop_reason) == (3, "early_stopping")
    assert (warm.epochs, warm.stop_reason, warm.best_epoch) == (6, "early_stopping", 1)  # min_epochs + patience, not earlier
    history = json.loads((tmp_path / "warm" / "history.json").read_text())
    assert [r["improved"] for r in history] == [True] + [False] * 5
    # the warm-up may change on resume (it is read as training goes): a longer one lets the stopped run go on
    more = train(config("train.epochs=20", "train.patience=2", "train.min_delta=1e9", "train.min_epochs=7"), tmp_path / "warm",
                 resume=True, progress=False)
    assert more.epochs == 9 and json.loads((tmp_path / "warm" / "config.json").read_text())["train"]["min_epochs"] == 7
