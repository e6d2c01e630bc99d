"""--device on quantize and evaluate: cpu is the default and is recorded; an unavailable device is a usage error (exit 2)."""

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
