"""train -> quantize -> evaluate -> table on digits, checked against independent computations."""

import json

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from posthoc_vq.cli import main
from posthoc_vq.config import load_run_config
from posthoc_vq.data import load_dataset
from posthoc_vq.quantize.codebooks import open_codebook
from posthoc_vq.train import load_model, train


@pytest.fixture(scope="module")
def run(make_digits_run):
    return make_digits_run(epochs=8)


def cli(*args):
    return main([str(a) for a in args])


def test_evaluate_codebook_matches_skimage_and_files_are_written(run, capsys):
    assert cli("quantize", run, "--method", "kmeans", "--K", 32) == 0
    assert cli("evaluate", run) == 0
    assert cli("evaluate", run, "--codebook", "kmeans-K32-mu-train") == 0
    out = capsys.readouterr().out
    assert "bits/image" in out and "5.0 bits/image" in out
    result = json.loads((run / "eval" / "kmeans-K32-mu-train-test.json").read_text())

    # independent recomputation: own encode, own codebook lookup, skimage metrics
    model, _ = load_model(run)
    codebook, meta = open_codebook(run, "kmeans-K32-mu-train")
    test = load_dataset("digits").test
    x = torch.from_numpy(test.images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        mu = model.encode(x).mu
        d2 = torch.cdist(mu, torch.from_numpy(codebook.codebook_))
        xq = model.decode(torch.from_numpy(codebook.codebook_)[d2.argmin(1)]).numpy()
        xc = model.decode(mu).numpy()
    gt = x.numpy()
    ps = [peak_signal_noise_ratio(gt[i, 0], xq[i, 0], data_range=1) for i in range(len(gt))]
    ss = [structural_similarity(gt[i, 0], xq[i, 0], data_range=1, gaussian_weights=True, sigma=6 / 7, use_sample_covariance=False) for i in range(len(gt))]
    pen = [peak_signal_noise_ratio(xc[i, 0], xq[i, 0], data_range=1) for i in range(len(gt))]
    assert result["quantized"]["psnr_db"]["mean"] == pytest.approx(np.mean(ps), abs=1e-4)
    assert result["quantized"]["ssim"]["mean"] == pytest.approx(np.mean(ss), abs=1e-4)
    assert result["penalty"]["psnr_db"]["mean"] == pytest.approx(np.mean(pen), abs=1e-4)
    assert result["usage"]["test"]["n_vectors"] == len(gt) and result["bits_per_image"] == 5.0
    # a codebook vector approximates mu: the quantized model cannot beat the continuous one
    assert result["quantized"]["psnr_db"]["mean"] <= result["continuous"]["psnr_db"]["mean"] + 0.5
    assert result["warnings"] == [] or all(w["code"] == "not_converged" for w in result["warnings"])
    assert meta["fit_on"] == "train" and meta["n_fit"] == len(load_dataset("digits").train)


def test_transductive_fit_is_labelled_and_flagged(run):
    assert cli("quantize", run, "--method", "random-prior", "--K", 32, "--fit-on", "train+test") == 0
    assert cli("evaluate", run, "--codebook", "random-prior-K32-mu-train_test") == 0
    result = json.loads((run / "eval" / "random-prior-K32-mu-train_test-test.json").read_text())
    assert result["fit_includes_test"] and "test_leakage" in [w["code"] for w in result["warnings"]]
    assert result["n_fit"] == len(load_dataset("digits").train) + len(load_dataset("digits").test)


def test_z_latents_are_recorded_and_seeded(run):
    assert cli("quantize", run, "--method", "kmeans", "--K", 16, "--latents", "z", "--set", "quantize.latent_seed=4") == 0
    _, meta = open_codebook(run, "kmeans-K16-z-seed4-train")
    assert meta["latents"] == "z" and meta["latent_seed"] == 4
    t1 = (run / "latents" / "z-train-seed4.safetensors").read_bytes()
    assert cli("quantize", run, "--method", "kmeans", "--K", 16, "--latents", "z", "--set", "quantize.latent_seed=4", "--name", "again") == 0
    assert (run / "latents" / "z-train-seed4.safetensors").read_bytes() == t1


@pytest.fixture(scope="module")
def evaluated(run):
    """The run with its continuous model and a k-means codebook evaluated (what `table` reads)."""
    if not (run / "codebooks" / "kmeans-K32-mu-train" / "codebook.json").exists():
        assert cli("quantize", run, "--method", "kmeans", "--K", 32) == 0
    assert cli("evaluate", run) == 0
    assert cli("evaluate", run, "--codebook", "kmeans-K32-mu-train") == 0
    return run


def test_table_and_figure(evaluated):
    run = evaluated
    assert cli("table", run) == 0
    md = (run / "report" / "codebooks-test.md").read_text()
    assert "| continuous |" in md and "kmeans-K32-mu-train" in md
    png = (run / "report" / "rate-distortion-test.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_damaged_evaluation_json_is_a_clear_error(evaluated, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(evaluated, copy)
    (copy / "eval" / "continuous-test.json").write_text("{")
    assert cli("table", copy) == 1  # a damaged result file: failed work (exit 1), not a usage error
    assert "continuous-test.json is damaged" in capsys.readouterr().err


def test_clear_errors_for_missing_and_mismatched_codebooks(run, tmp_path, capsys):
    assert cli("evaluate", run, "--codebook", "nope") == 2
    assert "no codebook 'nope'" in capsys.readouterr().err
    other = tmp_path / "other"
    train(load_run_config("digits", ["model.latent_dim=4", "model.channels=[8,16]", "train.epochs=1"]), other, progress=False)
    import shutil

    (other / "codebooks").mkdir(exist_ok=True)
    shutil.copytree(run / "codebooks" / "kmeans-K32-mu-train", other / "codebooks" / "foreign")
    assert cli("evaluate", other, "--codebook", "foreign") == 1  # an inconsistent artifact in the run: a CheckpointError
    assert "latent dimension D=8 but the model's latent_dim is 4" in capsys.readouterr().err
    assert cli("quantize", run, "--method", "kmedoids") == 2
    assert "quantize.method" in capsys.readouterr().err
