"""The library API on a model given as two plain functions gives the run-based CLI's numbers exactly."""

import json

import numpy as np
import pytest
import torch

import posthoc_vq
from posthoc_vq.autoencoders import FunctionAutoencoder
from posthoc_vq.cli import main
from posthoc_vq.config import load_run_config
from posthoc_vq.latents import load_run_splits
from posthoc_vq.quantize.codebooks import open_codebook
from posthoc_vq.train import load_model, train

# Result keys computed from the model, the codebook and the images (not from the run directory).
METRIC_KEYS = (
    "codebook", "method", "K", "bits_per_image", "bits_per_token", "tokens_per_image", "latent_shape", "latents", "latent_seed",
    "fit_on", "fit_includes_test", "n_fit", "continuous", "quantized", "penalty", "psnr_change_db", "latent_mse", "usage", "graph",
)


def cli(*args):
    return main([str(a) for a in args])


@pytest.fixture(scope="module", params=["conv", "spatial"])
def run(request, tmp_path_factory):
    """A tiny digits run: one-vector latents (D=8) or a spatial grid (4 x 2 x 2)."""
    run_dir = tmp_path_factory.mktemp("runs") / request.param
    overrides = ["model.channels=[16,32]", "train.epochs=4", "train.early_stopping=false"]
    overrides += ["model.latent_dim=8"] if request.param == "conv" else ["model.family=spatial", "model.latent_dim=4"]
    train(load_run_config("digits", overrides), run_dir, progress=False)
    return run_dir


def plain_functions(run_dir):
    """The run's model as two plain Python functions, knowing nothing of this package's types."""
    model, _ = load_model(run_dir)

    def encode(x):
        return model.encode(x).mu, model.encode(x).logvar

    def decode(z):
        return model.decode(z)

    return FunctionAutoencoder(encode, decode, output_range=(0, 1), name="plain")


@pytest.mark.parametrize("method,args", [("kmeans", ["--K", 16]), ("residual", ["--K", 8, "--n-stages", 2])])
def test_plain_functions_give_the_cli_results(run, method, args):
    assert cli("quantize", run, "--method", method, *args) == 0
    name = "kmeans-K16-mu-train" if method == "kmeans" else "residual-M2-K8-mu-train"
    assert cli("evaluate", run, "--codebook", name) == 0
    from_cli = json.loads((run / "eval" / f"{name}-test.json").read_text())

    ae = plain_functions(run)
    test = load_run_splits(run).test
    result = posthoc_vq.evaluate(ae, run / "codebooks" / name, test, split="test", dataset="digits").to_json()
    for key in METRIC_KEYS:
        assert result[key] == from_cli[key], key
    assert result["run"] is None and result["model"]["family"] == "plain" and result["model"]["latent_shape"] == from_cli["model"]["latent_shape"]
    assert result["warnings"] == [w for w in from_cli["warnings"] if w["code"] not in ("not_converged", "untrained")]
    spatial = len(from_cli["latent_shape"]) == 3
    assert from_cli["tokens_per_image"] == (4 if spatial else 1)
    assert from_cli["usage"]["test"]["n_vectors"] == len(test) * from_cli["tokens_per_image"]


def test_fit_codebook_on_plain_functions_matches_the_cli_codebook(run):
    assert cli("quantize", run, "--method", "kmeans", "--K", 12) == 0
    saved, saved_meta = open_codebook(run, "kmeans-K12-mu-train")
    splits = load_run_splits(run)
    fit = posthoc_vq.fit_codebook(plain_functions(run), splits.train, method="kmeans", K=12, fit_on="train")
    np.testing.assert_array_equal(fit.codebook.codebook_, saved.codebook_)
    assert fit.meta["name"] == "kmeans-K12-mu-train" and fit.meta["fit_usage"] == saved_meta["fit_usage"]
    assert fit.latents.values.shape == (len(splits.train), *saved_meta["latent_shape"])
    # evaluate straight from the fitted object, and after a save/load round trip
    direct = posthoc_vq.evaluate(plain_functions(run), fit, splits.test, split="test").to_json()
    stem = run / "api-codebook"
    fit.save(stem)
    reloaded = posthoc_vq.evaluate(plain_functions(run), stem, splits.test, split="test").to_json()
    for key in ("quantized", "penalty", "usage", "bits_per_image", "n_fit"):
        assert direct[key] == reloaded[key], key


def test_continuous_evaluation_matches_the_cli(run):
    assert cli("evaluate", run) == 0
    from_cli = json.loads((run / "eval" / "continuous-test.json").read_text())
    model, _ = load_model(run)
    ae = FunctionAutoencoder(lambda x: model.encode(x).mu, model.decode)
    result = posthoc_vq.evaluate(ae, None, load_run_splits(run).test, split="test", out=run / "api-continuous.json").to_json()
    assert result["continuous"] == from_cli["continuous"]
    assert json.loads((run / "api-continuous.json").read_text())["continuous"] == from_cli["continuous"]


def test_decoded_images_are_what_the_model_gives(run):
    """A hand check of one quantized image, outside every library path."""
    if not (run / "codebooks" / "kmeans-K16-mu-train" / "codebook.json").exists():
        assert cli("quantize", run, "--method", "kmeans", "--K", 16) == 0
    model, _ = load_model(run)
    codebook, _ = open_codebook(run, "kmeans-K16-mu-train")
    x = load_run_splits(run).test.to_tensor()[:1]
    with torch.no_grad():
        mu = model.encode(x).mu
        tokens = mu.movedim(1, -1).reshape(-1, mu.shape[1]) if mu.ndim == 4 else mu
        C = torch.from_numpy(codebook.codebook_)
        zq = C[torch.cdist(tokens, C).argmin(1)]
        zq = zq.view(1, *mu.shape[2:], mu.shape[1]).movedim(-1, 1) if mu.ndim == 4 else zq
        xq = model.decode(zq)
    result = posthoc_vq.evaluate(model, codebook, x).to_json()
    mse = float(((xq - x) ** 2).mean())
    assert result["quantized"]["psnr_db"]["mean"] == pytest.approx(10 * np.log10(1 / mse), abs=1e-4)
