"""--device on train, finetune, features, quantize and evaluate: cpu is the default and is recorded; an unavailable device is a usage error (exit 2)."""

import json

import pytest
import torch

from posthoc_vq.cli import main


def cli(*args):
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def run(make_digits_run):
    return make_digits_run(epochs=2)


def test_device_is_recorded_and_cpu_equals_the_default(run):
    assert cli("quantize", run, "--K", 8, "--device", "cpu", "--quiet") == 0
    meta = json.loads((run / "codebooks" / "kmeans-K8-mu-train" / "codebook.json").read_text())
    assert meta["device"] == "cpu"
    assert cli("evaluate", run, "--codebook", "kmeans-K8-mu-train", "--quiet") == 0
    default = json.loads((run / "eval" / "kmeans-K8-mu-train-test.json").read_text())
    assert cli("evaluate", run, "--codebook", "kmeans-K8-mu-train", "--device", "auto" if not torch.cuda.is_available() else "cpu", "--quiet") == 0
    explicit = json.loads((run / "eval" / "kmeans-K8-mu-train-test.json").read_text())
    assert default["device"] == explicit["device"] == "cpu"
    assert default["quantized"] == explicit["quantized"]
    assert cli("evaluate", run, "--device", "cpu", "--quiet") == 0
    assert json.loads((run / "eval" / "continuous-test.json").read_text())["device"] == "cpu"


def test_unavailable_device_is_a_usage_error(run, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a machine with a GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert cli("evaluate", run, "--device", "cuda") == 2
    assert "no CUDA device is available here" in capsys.readouterr().err
    assert cli("quantize", run, "--K", 4, "--device", "cuda:1") == 2


def test_train_finetune_features_record_their_device(tmp_path):
    run = tmp_path / "run"
    digits = ["--set", "model.latent_dim=8", "--set", "model.channels=[16,32]", "--set", "train.epochs=1", "--quiet"]
    assert cli("train", "--preset", "digits", "--out", run, *digits, "--device", "cpu") == 0
    assert json.loads((run / "train_summary.json").read_text())["device"] == "cpu"
    assert json.loads((run / "provenance.json").read_text())["device"] == "cpu"
    assert cli("quantize", run, "--K", 4, "--quiet") == 0
    out = tmp_path / "ft"
    assert cli("finetune", run, "--codebook", "kmeans-K4-mu-train", "--out", out, "--epochs", 1, "--device", "cpu", "--quiet") == 0
    assert json.loads((out / "provenance.json").read_text())["device"] == "cpu"
    assert cli("compress-weights", run, "--bits", 8, "--quiet") == 0
    assert cli("evaluate", run, "--weights", "int8-channel-sym", "--device", "cpu", "--quiet") == 0
    assert json.loads((run / "eval" / "weights-int8-channel-sym-test.json").read_text())["device"] == "cpu"
    assert cli("features", "train", "--dataset", "digits", "--out", tmp_path / "features", "--epochs", 1, "--device", "cpu", "--quiet") == 0
    assert json.loads((tmp_path / "features" / "feature_net.json").read_text())["device"] == "cpu"


def test_train_finetune_features_refuse_an_unavailable_device(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert cli("train", "--preset", "digits", "--out", tmp_path / "r", "--device", "cuda") == 2
    assert not (tmp_path / "r").exists()  # refused before anything was written
    assert cli("finetune", run, "--codebook", "kmeans-K8-mu-train", "--out", tmp_path / "ft", "--device", "cuda:0") == 2
    assert cli("features", "train", "--dataset", "digits", "--out", tmp_path / "f", "--device", "tpu") == 2
    err = capsys.readouterr().err
    assert err.count("no CUDA device is available here") == 2  # train and finetune
    assert "--device tpu: unknown device" in err or "--device tpu: unsupported device type" in err
