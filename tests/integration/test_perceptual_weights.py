"""FD/KID of weight-quantized models: INT8/INT4 packed weights through perceptual_metrics, the CLI and a sweep, offline on digits."""

import json
import math
import sqlite3

import pytest
import torch
import yaml

from posthoc_vq.cli import main
from reference import codebook_reconstruction_fd, fd_scipy
from posthoc_vq.config import WeightsConfig
from posthoc_vq.data import load_dataset
from posthoc_vq.evaluation.perceptual import perceptual_metrics
from posthoc_vq.experiments import run_sweep
from posthoc_vq.evaluation.perceptual import train_feature_net
from posthoc_vq.metrics.features import load_feature_net
from posthoc_vq.quantize.codebooks import open_codebook
from posthoc_vq.quantize.compressed import compress_run, open_compressed
from posthoc_vq.run import Run

CODEBOOK = "kmeans-K16-mu-train"


def cli(*args):
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def setup(tmp_path_factory, make_digits_run):
    """A briefly trained digits run with INT8 and INT4 packed weights and a k-means codebook, and a digits feature network."""
    root = tmp_path_factory.mktemp("perceptual-weights")
    run_dir = make_digits_run(epochs=8)
    train_feature_net("digits", root / "features", epochs=5, seed=0, progress=False)
    names = {bits: compress_run(run_dir, WeightsConfig(bits=bits))[0] for bits in (8, 4)}
    assert cli("quantize", run_dir, "--method", "kmeans", "--K", 16) == 0
    return run_dir, root / "features", names


def _fd_kid(run_dir, features, weights):
    r = perceptual_metrics(run_dir, weights=weights, metrics=["fd", "kid"], features=features, progress=False)
    rec = r["sets"]["reconstruction"]
    return r, rec["fd"], rec["kid"]["mean"]


def test_int8_fd_kid_close_to_fp32_and_int4_recorded(setup):
    run_dir, features, names = setup
    _, fd32, kid32 = _fd_kid(run_dir, features, None)
    r8, fd8, kid8 = _fd_kid(run_dir, features, names[8])
    r4, fd4, kid4 = _fd_kid(run_dir, features, names[4])
    assert all(math.isfinite(v) for v in (fd32, kid32, fd8, kid8, fd4, kid4)) and fd32 > 0
    assert (r8["weights"], r8["bits"], r4["bits"]) == (names[8], 8, 4)
    # the packed models made the images (not the fp32 one); INT8 moves FD only slightly. INT4 moves the images more, but
    # FD measures the distance to the real images, so its change need not be larger than INT8's (here it is not): only bounded.
    assert fd8 != fd32 and fd4 != fd32 and kid8 != kid32
    assert abs(fd8 - fd32) < 0.02 * fd32 and abs(kid8 - kid32) < 0.02 * abs(kid32)
    assert abs(fd4 - fd32) < 0.15 * fd32
    # the real-data floors do not depend on the model
    assert r8["sets"]["val_floor"]["fd"] == r4["sets"]["val_floor"]["fd"]

    for bits in (8, 4):  # the result lands where run.py says, and it is what was returned
        path = Run(run_dir).eval_file("test", weights=names[bits], kind="perceptual")
        assert path.name == f"perceptual-weights-{names[bits]}-test.json"
        assert json.loads(path.read_text())["sets"]["reconstruction"]["fd"] == (fd8 if bits == 8 else fd4)
    assert json.loads(Run(run_dir).eval_file("test", kind="perceptual").read_text())["sets"]["reconstruction"]["fd"] == fd32

    # independent recomputation: the dequantized INT8 model's own encode/decode, own features, scipy sqrtm
    qmodel, _ = open_compressed(run_dir, names[8])
    fnet = load_feature_net(features)
    x = load_dataset("digits").test.to_tensor()
    with torch.no_grad():
        recon = qmodel.decode(qmodel.encode(x).mu)
    assert fd8 == pytest.approx(fd_scipy(fnet.embed(x)[0].numpy(), fnet.embed(recon)[0].numpy()), rel=1e-3)


def test_cli_weights_with_codebook_writes_pixel_and_perceptual_results(setup, capsys):
    run_dir, features, names = setup
    name = names[8]
    assert cli("evaluate", run_dir, "--weights", name, "--codebook", CODEBOOK, "--metrics", "psnr,fd,kid", "--features", features) == 0
    out = capsys.readouterr().out
    assert f"{name} + codebook {CODEBOOK}" in out and "FD" in out
    run = Run(run_dir)
    pixel = json.loads(run.eval_file("test", weights=name, codebook=CODEBOOK).read_text())
    assert pixel["weights"] == name and pixel["with_codebook"]["name"] == CODEBOOK  # evaluate_weights' result
    path = run.eval_file("test", weights=name, codebook=CODEBOOK, kind="perceptual")
    assert path.name == f"perceptual-weights-{name}@{CODEBOOK}-test.json"
    r = json.loads(path.read_text())
    assert (r["weights"], r["codebook"], r["bits"]) == (name, CODEBOOK, 8)
    assert {"reconstruction", "prior", "codes_empirical", "codes_uniform"} <= set(r["sets"])

    # independent: the INT8 encoder's mu assigned to the fp32-fitted codes, decoded by the INT8 decoder
    qmodel, _ = open_compressed(run_dir, name)
    codebook, _ = open_codebook(run_dir, CODEBOOK)
    fnet = load_feature_net(features)
    x = load_dataset("digits").test.to_tensor()
    assert r["sets"]["reconstruction"]["fd"] == pytest.approx(codebook_reconstruction_fd(qmodel, codebook, fnet, x), rel=1e-3)

    assert cli("evaluate", run_dir, "--weights", "int3-nope", "--metrics", "fd", "--features", features) == 2
    assert "no packed weights 'int3-nope'" in capsys.readouterr().err


def test_sweep_fd_kid_cover_every_cell(setup, tmp_path):
    """fd/kid are measured for INT8 cells too (with and without a codebook), never None for a done cell."""
    _, features, _ = setup
    spec = {
        "name": "fd-weights", "base": "digits",
        "set": {"model.channels": [8, 16], "model.latent_dim": 4, "train.epochs": 2, "train.early_stopping": False, "quantize.K": 16},
        "axes": {"seed": [0], "weights.bits": [32, 8], "quantize.method": ["none", "kmeans"]},
        "compare": {"axis": "weights.bits", "reference": 32, "metrics": ["fd", "kid"], "pair_by": "seed"},
        "features": str(features),
    }
    path = tmp_path / "fd-weights.yaml"
    path.write_text(yaml.safe_dump(spec))
    run_sweep(path, tmp_path / "sweep", progress=False)
    with sqlite3.connect(tmp_path / "sweep" / "results.sqlite") as conn:
        rows = [(json.loads(a), json.loads(m), json.loads(art)) for a, m, art in conn.execute("SELECT axes, metrics, artifacts FROM jobs WHERE status='done'")]
    assert len(rows) == 4
    for axes, m, art in rows:
        assert m["fd"] is not None and m["kid"] is not None and math.isfinite(m["fd"]) and m["fd"] > 0, axes
        run = Run(art["run_dir"])
        stored = run.eval_file("test", codebook=art["codebook"], weights=art["weights"], kind="perceptual")
        assert (art["weights"] is None) == (axes["weights.bits"] == 32)
        recorded = json.loads(stored.read_text())["sets"]["reconstruction"]
        assert m["fd"] == recorded["fd"] and m["kid"] == recorded["kid"]["mean"]
