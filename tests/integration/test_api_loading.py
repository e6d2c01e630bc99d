"""The library functions that load runs, codebooks and packed weights back, and pack any nn.Module."""

import numpy as np
import pytest
import torch

import posthoc_vq
from posthoc_vq.cli import main
from posthoc_vq.config import load_run_config
from posthoc_vq.errors import CheckpointError, NotFoundError
from posthoc_vq.latents import load_run_splits
from posthoc_vq.quantize.compressed import open_compressed
from posthoc_vq.train import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "conv"
    train(load_run_config("digits", ["model.channels=[16,32]", "model.latent_dim=8", "train.epochs=3", "train.early_stopping=false"]), run_dir, progress=False)
    return run_dir


def test_load_run_and_load_codebook(run):
    loaded = posthoc_vq.load_run(run)
    assert isinstance(loaded.model, torch.nn.Module) and not loaded.model.training
    assert loaded.config.model.latent_dim == 8 and loaded.record["sha256"] and loaded.path == run
    with pytest.raises(NotFoundError, match="0 codebooks"):
        posthoc_vq.load_codebook(run)
    assert main(["quantize", str(run), "--method", "kmeans", "--K", "8"]) == 0
    fit = posthoc_vq.load_codebook(loaded)  # the only codebook
    named = posthoc_vq.load_codebook(run, "kmeans-K8-mu-train")
    folder = posthoc_vq.load_codebook(run / "codebooks" / "kmeans-K8-mu-train")
    assert fit.latents is None and fit.meta["name"] == named.meta["name"] == folder.meta["name"] == "kmeans-K8-mu-train"
    np.testing.assert_array_equal(fit.codebook.codebook_, folder.codebook.codebook_)
    test = load_run_splits(run).test
    z = loaded.model.encode(test.to_tensor()[:50]).mu.detach()
    _, idx = fit.as_module()(z)
    np.testing.assert_array_equal(idx.numpy(), fit.codebook.predict(z.numpy()))
    result = posthoc_vq.evaluate(loaded.model, fit, test, split="test").to_json()
    assert result["codebook"] == "kmeans-K8-mu-train"


def test_compress_weights_round_trip_matches_the_cli_format(run, tmp_path):
    model = posthoc_vq.load_run(run).model
    packed = posthoc_vq.compress_weights(model, bits=8, out=tmp_path / "w.safetensors")
    assert packed.bytes and packed.sha256 and packed.network.errors
    back = posthoc_vq.load_packed(tmp_path / "w.safetensors")  # the VAE from the header
    into = posthoc_vq.load_packed(tmp_path / "w.safetensors", into=posthoc_vq.load_run(run).model)
    for key, value in packed.state_dict().items():
        assert torch.equal(back.state_dict()[key], value) and torch.equal(into.state_dict()[key], value)
    # the CLI's packed file loads into a module too
    assert main(["compress-weights", str(run), "--bits", "4", "--no-eval"]) == 0
    name = posthoc_vq.load_run(run).path.joinpath("weights").iterdir().__next__().name
    cli_model, _ = open_compressed(run, name)
    loaded = posthoc_vq.load_packed(run / "weights" / name / "weights.safetensors", into=posthoc_vq.load_run(run).model)
    for key, value in cli_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    result = posthoc_vq.evaluate_weights(run, name).to_json()
    assert result["weights"] == name and result["bits"] == 4


def test_any_module_packs_and_mismatches_name_the_key(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    packed = posthoc_vq.compress_weights(net, bits=4, out=tmp_path / "net.safetensors")
    assert packed.model_config == {} and set(packed.network.errors) == {"0", "2"}
    fresh = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    posthoc_vq.load_packed(tmp_path / "net.safetensors", into=fresh)
    x = torch.randn(5, 8)
    assert torch.allclose(fresh(x), net(x), atol=0.3) and torch.equal(fresh[0].weight, packed.state_dict()["0.weight"])
    wrong_shape = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    with pytest.raises(CheckpointError, match=r"'0.weight' is \[16, 8\] in the file, \[32, 8\] in the module"):
        posthoc_vq.load_packed(tmp_path / "net.safetensors", into=wrong_shape)
    other_names = torch.nn.Sequential(torch.nn.Linear(8, 16))
    with pytest.raises(CheckpointError, match="the file has '2.weight', the module does not"):
        posthoc_vq.load_packed(tmp_path / "net.safetensors", into=other_names)
    with pytest.raises(NotFoundError):
        posthoc_vq.load_packed(tmp_path / "missing.safetensors", into=fresh)


def test_untrained_bring_your_own_model_is_flagged(run):
    from posthoc_vq.models import build_vae

    loaded = posthoc_vq.load_run(run)
    test = load_run_splits(run).test
    torch.manual_seed(0)
    random_model = build_vae(loaded.config.model).eval()
    for codebook in (None, posthoc_vq.fit_codebook(random_model, test, K=8)):
        result = posthoc_vq.evaluate(random_model, codebook, test, split="test").to_json()
        base = result["mean_image_baseline"]
        assert base["model_mse"] >= base["mse"]
        assert [w["code"] for w in result["warnings"]][:1] == ["untrained"] and "no better than the mean image" in result["warnings"][0]["message"]
    trained = posthoc_vq.evaluate(loaded.model, None, test, split="test").to_json()
    assert trained["mean_image_baseline"]["model_mse"] < trained["mean_image_baseline"]["mse"]
    assert "untrained" not in [w["code"] for w in trained["warnings"]]
