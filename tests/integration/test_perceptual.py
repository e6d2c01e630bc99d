"""train -> quantize -> evaluate --metrics fd,kid,pr,diversity,interp on digits, offline, checked independently."""

import json
import socket

import numpy as np
import pytest
import torch

from posthoc_vq.cli import main
from reference import codebook_reconstruction_fd, fd_scipy
from posthoc_vq.config import load_run_config
from posthoc_vq.data import load_dataset
from posthoc_vq.evaluation.perceptual import perceptual_metrics
from posthoc_vq.evaluation.perceptual import train_feature_net
from posthoc_vq.metrics.features import load_feature_net
from posthoc_vq.metrics.lpips import LPIPSUnavailableError
from posthoc_vq.quantize.codebooks import open_codebook
from posthoc_vq.train import load_model, train

METRICS = "psnr,ssim,fd,kid,pr,diversity,interp"


def cli(*args):
    return main([str(a) for a in args])


def _keys(d):
    for k, v in d.items():
        yield k
        if isinstance(v, dict):
            yield from _keys(v)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("perceptual")
    run_dir = root / "digits"
    config = load_run_config("digits", ["model.latent_dim=8", "model.channels=[16,32]", "train.epochs=8", "train.early_stopping=false"])
    train(config, run_dir, progress=False)
    train_feature_net("digits", root / "features", epochs=15, progress=False)
    assert cli("quantize", run_dir, "--method", "kmeans", "--K", 32) == 0
    assert cli("quantize", run_dir, "--method", "geodesic", "--K", 32, "--n-neighbors", 10) == 0
    return run_dir


@pytest.fixture()
def features(run):
    return run.parent / "features"


def test_continuous_fd_matches_scipy_and_reports_samples_and_floors(run, features, capsys):
    assert cli("evaluate", run, "--metrics", METRICS, "--features", features) == 0
    out = capsys.readouterr().out
    assert "FD-digits" in out and "FID-" not in out and "PSNR" in out and "interpolation" in out
    r = json.loads((run / "eval" / "perceptual-continuous-test.json").read_text())
    assert "fid" not in {k.lower() for k in _keys(r)} and not any("FID" in v for v in r["metric_names"].values())
    assert (run / "eval" / "continuous-test.json").exists()  # the pixel metrics ran too
    assert set(r["sets"]) == {"reconstruction", "prior", "train_floor", "val_floor"}
    assert r["metric_names"]["fd"] == "FD-digits" and set(r["interpolation"]) == {"linear"}

    # independent recomputation of the reconstruction FD: own encode/decode, own features, scipy sqrtm
    model, _ = load_model(run)
    fnet = load_feature_net(features)
    x = load_dataset("digits").test.to_tensor()
    with torch.no_grad():
        recon = model.decode(model.encode(x).mu)
    real, fake = fnet.embed(x)[0].numpy(), fnet.embed(recon)[0].numpy()
    assert r["sets"]["reconstruction"]["fd"] == pytest.approx(fd_scipy(real, fake), rel=1e-3)
    # real data against real data is closer than a briefly trained VAE's prior samples
    assert r["sets"]["val_floor"]["fd"] < r["sets"]["prior"]["fd"]
    kid = r["sets"]["prior"]["kid"]
    assert kid["subset_size"] == len(x) // 2 and kid["std"] > 0
    pr = r["sets"]["reconstruction"]["precision_recall"]
    assert 0 <= pr["precision"] <= 1 and 0 <= pr["recall"] <= 1
    assert r["reference"]["diversity"]["distinct_classes"] == 10


def test_geodesic_codebook_samples_and_graph_interpolation(run, features, capsys):
    name = "geodesic-K32-mu-train-k10"
    assert cli("evaluate", run, "--codebook", name, "--metrics", "fd,kid,pr,diversity,interp", "--features", features, "--pairs", 12) == 0
    r = json.loads((run / "eval" / f"perceptual-{name}-test.json").read_text())
    assert {"reconstruction", "prior", "codes_empirical", "codes_uniform"} <= set(r["sets"])
    assert set(r["interpolation"]) == {"linear", "linear_quantized", "graph_geodesic", "graph_geodesic_quantized"}
    assert r["interpolation"]["graph_geodesic"]["length_ratio_mean"] >= 1.0
    assert r["interpolation"]["linear"]["n_paths"] == 12
    # a quantized path only jumps between codebook vectors: its steps are less even than the linear path's
    assert r["interpolation"]["linear_quantized"]["max_over_mean"] > r["interpolation"]["linear"]["max_over_mean"]

    model, _ = load_model(run)
    codebook, _ = open_codebook(run, name)
    fnet = load_feature_net(features)
    x = load_dataset("digits").test.to_tensor()
    assert r["sets"]["reconstruction"]["fd"] == pytest.approx(codebook_reconstruction_fd(model, codebook, fnet, x), rel=1e-3)
    assert r["sets"]["codes_empirical"]["n"] == len(x)


def test_metrics_run_with_networking_blocked(run, features, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("networking is blocked in this test")

    monkeypatch.setattr(socket, "socket", no_network)
    with pytest.raises(OSError, match="blocked"):
        socket.create_connection(("127.0.0.1", 9))  # numeric: no DNS, straight to socket creation
    r = perceptual_metrics(run, codebook="kmeans-K32-mu-train", metrics=["fd", "kid", "pr", "diversity", "interp"],
                           features=features, n_pairs=5, progress=False)
    assert np.isfinite(r["sets"]["codes_uniform"]["fd"]) and "linear_quantized" in r["interpolation"]
    # a fresh feature network trains offline too
    fresh = train_feature_net("digits", run.parent / "features-offline", epochs=1, progress=False)
    assert 0 <= fresh.meta["test_accuracy"] <= 1
    with pytest.raises(LPIPSUnavailableError, match="never downloads"):
        perceptual_metrics(run, metrics=["lpips"], features=features, progress=False)


def test_json_output_combines_pixel_and_perceptual_results(run, features, capsys):
    assert cli("evaluate", run, "--metrics", "psnr,fd", "--features", features, "--format", "json", "--samples", 100) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"pixel", "perceptual"} and out["perceptual"]["metrics"] == ["fd"]
    assert out["perceptual"]["sets"]["prior"]["n"] == 100 and "kid" not in out["perceptual"]["sets"]["prior"]
    assert out["pixel"]["continuous"]["psnr_db"]["mean"] > 0


def test_clear_errors(run, features, tmp_path, capsys):
    assert cli("evaluate", run, "--metrics", "fd", "--features", tmp_path / "none") == 2
    assert "posthoc-vq features train --dataset digits" in capsys.readouterr().err
    assert cli("evaluate", run, "--metrics", "psnr,kd") == 2
    assert "did you mean 'kid'" in capsys.readouterr().err
    assert cli("evaluate", run, "--metrics", "lpips", "--features", features) == 2
    assert "LPIPS is unavailable" in capsys.readouterr().err
    weights = tmp_path / "alexnet.pth"
    weights.write_bytes(b"not used")
    assert cli("evaluate", run, "--metrics", "lpips", "--features", features, "--lpips-weights", weights) == 2
    assert "`lpips` package" in capsys.readouterr().err
