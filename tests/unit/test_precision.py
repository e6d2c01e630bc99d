"""train.precision: auto is bf16 where the device computes bf16 natively, fp32 elsewhere; the precision used is recorded."""

import json

import pytest
import torch

from posthoc_vq import devices
from posthoc_vq.config import load_run_config
from posthoc_vq.train import train


@pytest.mark.parametrize("flags, expected", [
    ({"avx2", "avx512f", "avx512_bf16"}, "bf16"),
    ({"avx2", "amx_tile", "amx_bf16"}, "bf16"),
    ({"avx2", "avx512f", "avx512bw"}, "fp32"),  # bf16 there would be emulated
    (set(), "fp32"),  # no /proc/cpuinfo (macOS, Windows)
])
def test_auto_follows_the_cpu_flags(monkeypatch, flags, expected):
    monkeypatch.setattr(devices, "cpu_flags", lambda: flags)
    assert devices.resolve_precision("auto", torch.device("cpu")) == expected
    assert devices.resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert devices.resolve_precision("bf16", torch.device("cpu")) == "bf16"


def test_auto_is_bf16_on_cuda_and_fp32_on_mps():
    assert devices.resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert devices.resolve_precision("auto", torch.device("mps")) == "fp32"


def test_cpu_flags_are_read_from_cpuinfo():
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        pytest.fail("this test runs on Linux (CI): /proc/cpuinfo is missing")
    line = next(l for l in text.splitlines() if l.startswith("flags"))
    assert devices.cpu_flags() == set(line.split(":", 1)[1].split())


@pytest.mark.parametrize("native", [True, False])
def test_auto_trains_exactly_as_the_precision_it_resolves_to(tmp_path, monkeypatch, native):
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"avx512_bf16"} if native else set())
    resolved = "bf16" if native else "fp32"
    histories = {}
    for precision in ("auto", resolved):
        config = load_run_config("digits", ["model.latent_dim=4", "model.channels=[8,16]", "train.epochs=1", f"train.precision={precision}"])
        run = tmp_path / precision
        result = train(config, run, progress=False)
        assert result.precision == resolved
        assert json.loads((run / "train_summary.json").read_text())["precision"] == resolved
        assert json.loads((run / "provenance.json").read_text())["precision"] == resolved
        assert json.loads((run / "config.json").read_text())["train"]["precision"] == precision  # what was asked stays in the config
        histories[precision] = [(r["train_loss"], r["val_loss"]) for r in json.loads((run / "history.json").read_text())]
    assert histories["auto"] == histories[resolved]
