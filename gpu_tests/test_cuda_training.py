"""--device cuda on train, finetune, features, quantize and evaluate (--weights too), against the same work on CPU.

A CUDA run sees the same batches and reparameterisation noise as the CPU run (both are drawn from
CPU generators) and starts from the same weights, so the two differ only by the device's
arithmetic (cuDNN convolutions, TF32 where torch enables it): the per-epoch losses and the test
metrics agree within the tolerances below, which are stated, not fitted. Each test prints the
figures it compared (`pytest -s`), for the README's GPU record.
"""

import json

import pytest
import torch

from posthoc_vq.cli import main

DIGITS = ["--set", "model.latent_dim=8", "--set", "model.channels=[16,32]", "--set", "train.early_stopping=false", "--quiet"]


def cli(*args):
    assert main([str(a) for a in args]) == 0


def read(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same digits config trained for 4 epochs on CPU and on CUDA."""
    root = tmp_path_factory.mktemp("runs")
    for device in ("cpu", "cuda"):
        cli("train", "--preset", "digits", "--out", root / device, "--set", "train.epochs=4", *DIGITS, "--device", device)
    return root / "cpu", root / "cuda"


def test_training_on_cuda_follows_cpu(runs):
    cpu, gpu = runs
    assert read(gpu / "train_summary.json")["device"] == "cuda"
    prov = read(gpu / "provenance.json")
    assert prov["device"] == "cuda" and "NVIDIA" in prov["device_name"]
    a, b = ([row["val_loss"] for row in read(r / "history.json")] for r in runs)
    print(f"\nval loss per epoch, cpu {a}\n                    cuda {b}")
    assert b == pytest.approx(a, rel=0.02)
    for r in runs:
        cli("evaluate", r, "--quiet")
    pc, pg = (read(r / "eval" / "continuous-test.json")["continuous"]["psnr_db"]["mean"] for r in runs)
    print(f"test PSNR cpu {pc:.3f} dB, cuda {pg:.3f} dB")
    assert pg == pytest.approx(pc, abs=0.3)


def test_evaluation_and_quantize_on_cuda_agree_with_cpu(runs):
    cpu, _ = runs
    cli("quantize", cpu, "--K", 16, "--device", "cuda", "--quiet")
    assert read(cpu / "codebooks" / "kmeans-K16-mu-train" / "codebook.json")["device"] == "cuda"
    results = {}
    for device in ("cpu", "cuda"):
        cli("evaluate", cpu, "--codebook", "kmeans-K16-mu-train", "--device", device, "--quiet")
        results[device] = read(cpu / "eval" / "kmeans-K16-mu-train-test.json")
    assert results["cuda"]["device"] == "cuda"
    for key in ("continuous", "quantized"):
        c, g = (results[d][key]["psnr_db"]["mean"] for d in ("cpu", "cuda"))
        print(f"\n{key} PSNR cpu {c:.5f} dB, cuda {g:.5f} dB")
        assert g == pytest.approx(c, abs=0.01)
    cli("compress-weights", cpu, "--bits", 8, "--quiet")
    weights = {}
    for device in ("cpu", "cuda"):
        cli("evaluate", cpu, "--weights", "int8-channel-sym", "--device", device, "--quiet")
        weights[device] = read(cpu / "eval" / "weights-int8-channel-sym-test.json")
    assert weights["cuda"]["device"] == "cuda"
    c, g = (weights[d]["quantized"]["psnr_db"]["mean"] for d in ("cpu", "cuda"))
    print(f"int8 weights PSNR cpu {c:.5f} dB, cuda {g:.5f} dB")
    assert g == pytest.approx(c, abs=0.01)


def test_finetune_on_cuda_follows_cpu(runs, tmp_path):
    cpu, _ = runs
    cli("quantize", cpu, "--K", 8, "--quiet")
    losses = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        cli("finetune", cpu, "--codebook", "kmeans-K8-mu-train", "--out", out, "--epochs", 3, "--part", "decoder+codebook", "--device", device, "--quiet")
        losses[device] = [row["val_loss"] for row in read(out / "history.json")]
    assert read(tmp_path / "cuda" / "provenance.json")["device"] == "cuda"
    print(f"\nfine-tune val loss, cpu {losses['cpu']}\n                    cuda {losses['cuda']}")
    assert losses["cuda"] == pytest.approx(losses["cpu"], rel=0.02)


def test_resume_on_another_device(tmp_path):
    run = tmp_path / "run"
    cli("train", "--preset", "digits", "--out", run, "--set", "train.epochs=1", *DIGITS, "--device", "cuda")
    cli("train", "--preset", "digits", "--out", run, "--set", "train.epochs=2", *DIGITS, "--device", "cpu", "--resume")
    assert [row["epoch"] for row in read(run / "history.json")] == [1, 2]
    assert read(run / "train_summary.json")["device"] == "cpu"


@pytest.mark.parametrize("quantizer", ["vq", "fsq"])
def test_trained_quantizer_and_bf16_on_cuda(tmp_path, quantizer):
    run = tmp_path / quantizer
    extra = ["--set", "model.codebook_size=64"] if quantizer == "vq" else ["--set", "model.fsq_levels=[8,5,5,5]"]
    cli("train", "--preset", "digits", "--out", run, "--set", "train.epochs=2", "--set", f"model.quantizer={quantizer}", *extra,
        "--set", "train.precision=bf16", *DIGITS, "--device", "cuda")
    history = read(run / "history.json")
    assert all(row["val_loss"] == row["val_loss"] for row in history)  # finite, not NaN
    assert history[-1]["train_codes_used"] >= 2


def test_feature_net_on_cuda_matches_cpu_accuracy(tmp_path):
    acc = {}
    for device in ("cpu", "cuda"):
        cli("features", "train", "--dataset", "digits", "--out", tmp_path / device, "--epochs", 3, "--device", device, "--quiet")
        meta = read(tmp_path / device / "feature_net.json")
        acc[device] = meta["test_accuracy"]
    assert meta["device"] == "cuda"
    print(f"\nfeature net test accuracy cpu {acc['cpu']:.4f}, cuda {acc['cuda']:.4f}")
    assert acc["cuda"] == pytest.approx(acc["cpu"], abs=0.03)


def test_cuda_is_the_default_of_auto():
    from posthoc_vq.devices import resolve_device

    assert resolve_device("auto") == torch.device("cuda")


def test_precision_auto_is_bf16_on_cuda(tmp_path):
    run = tmp_path / "auto"
    cli("train", "--preset", "digits", "--out", run, "--set", "train.epochs=1", "--set", "train.precision=auto", *DIGITS, "--device", "cuda")
    assert read(run / "train_summary.json")["precision"] == "bf16"
    assert read(run / "provenance.json")["precision"] == "bf16"


def test_a_latent_cache_made_on_cuda_is_encoded_again_on_cpu(runs):
    cpu, _ = runs
    from posthoc_vq.latents import run_latents
    from posthoc_vq.run import Run

    record = Run.open(cpu).latent_files("mu", "test")[1]
    on_gpu = run_latents(cpu, "test", device="cuda")
    assert read(record)["device"] == "cuda" and "NVIDIA" in read(record)["device_name"]
    on_cpu = run_latents(cpu, "test", device="cpu")
    assert read(record)["device"] == "cpu"
    diff = float(abs(on_gpu.values - on_cpu.values).max())
    print(f"\nlargest |mu_cuda - mu_cpu| over the test split: {diff:.2e}")
    assert diff < 1e-2
