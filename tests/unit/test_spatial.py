"""Spatial latents: the (C, h, w) VAE variant, tokens, and per-position codebooks."""

import math

import numpy as np
import pytest
import torch

from posthoc_vq.config import QuantizeConfig, VAEConfig
from posthoc_vq.errors import ConfigError
from posthoc_vq.latents import LatentSet, from_tokens, to_tokens
from posthoc_vq.models import ConvVAE, SpatialVAE, build_vae, latent_shape_of
from posthoc_vq.quantize import codebooks
from posthoc_vq.quantize.codebooks import fit_on_latents


def spatial(**kw):
    return build_vae(VAEConfig(**{"family": "spatial", "latent_dim": 8, "image_size": 28, "in_channels": 1, **kw}))


@pytest.mark.parametrize("size,channels,grid", [(28, [32, 64], 7), (8, [16, 32], 2), (32, [8, 16, 32], 4)])
def test_spatial_vae_shapes_and_range(size, channels, grid):
    torch.manual_seed(0)
    model = spatial(image_size=size, channels=channels)
    assert isinstance(model, SpatialVAE) and model.latent_shape == (8, grid, grid)
    assert latent_shape_of(model.config) == (8, grid, grid)
    out = model(torch.rand(3, 1, size, size))
    assert out.mu.shape == out.logvar.shape == out.z.shape == (3, 8, grid, grid)
    assert out.reconstruction.shape == (3, 1, size, size)
    decoded = model.decode(torch.randn(2, 8, grid, grid) * 10)
    assert decoded.min() >= 0 and decoded.max() <= 1
    with pytest.raises(ValueError, match=r"latents must be \(B, 8, "):
        model.decode(torch.randn(2, 8 * grid * grid))


def test_spatial_kl_sums_over_channels_and_positions():
    torch.manual_seed(1)
    model = spatial(beta=0.5).eval()
    x = torch.rand(4, 1, 28, 28)
    out = model(x)
    losses = model.loss(x, out)
    mu, logvar = out.mu.double(), out.logvar.double()
    kl = 0.5 * (logvar.exp() + mu**2 - 1 - logvar).sum() / 4
    assert math.isclose(losses.kl.item(), kl.item(), rel_tol=1e-4)


def test_conv_family_is_unchanged_by_the_spatial_variant():
    model = build_vae(VAEConfig(latent_dim=16, image_size=28, in_channels=1))
    assert type(model) is ConvVAE and model.latent_shape == (16,)
    keys = set(model.state_dict())
    assert {"fc_mu.weight", "fc_logvar.weight", "fc_dec.weight", "encoder.0.weight", "decoder.2.weight"} <= keys
    assert not any(k.startswith("conv_") for k in keys)


def test_tokens_are_positions_in_image_major_order():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((3, 4, 2, 5)).astype(np.float32)  # (N, C, h, w)
    tokens = to_tokens(values)
    assert tokens.shape == (3 * 2 * 5, 4)
    for n, i, j in [(0, 0, 0), (1, 1, 3), (2, 1, 4)]:
        np.testing.assert_array_equal(tokens[n * 10 + i * 5 + j], values[n, :, i, j])
    np.testing.assert_array_equal(from_tokens(tokens, (4, 2, 5)), values)
    flat = rng.standard_normal((3, 6)).astype(np.float32)
    assert to_tokens(flat) is flat and from_tokens(flat, (6,)) is flat
    s = LatentSet(values, np.array([7, 8, 9]), "train", "mu", None)
    assert s.latent_shape == (4, 2, 5) and s.tokens_per_image == 10
    np.testing.assert_array_equal(s.token_labels(), np.repeat([7, 8, 9], 10))


def grid_latents(n=200, c=3, h=2, w=2, seed=0, split="train"):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, c)).astype(np.float32) * 4
    tokens = centres[rng.integers(0, 6, n * h * w)] + 0.1 * rng.standard_normal((n * h * w, c)).astype(np.float32)
    return LatentSet(from_tokens(tokens, (c, h, w)), rng.integers(0, 3, n), split, "mu", None)


def test_kmeans_per_position_codes_bits_and_token_usage():
    lat = grid_latents()
    est, meta = fit_on_latents(lat, QuantizeConfig(method="kmeans", K=8, random_state=0))
    tokens = lat.tokens()
    # every position takes the nearest codebook vector (independent brute force)
    nearest = torch.cdist(torch.from_numpy(tokens), torch.from_numpy(est.codebook_)).argmin(1).numpy()
    np.testing.assert_array_equal(est.predict(tokens), nearest)
    assert meta["bits_per_image"] == 4 * math.log2(8) and meta["tokens_per_image"] == 4 and meta["latent_shape"] == [3, 2, 2]
    assert meta["n_fit"] == meta["n_fit_tokens"] == 800 and meta["n_fit_images"] == 200
    assert meta["fit_usage"]["n_vectors"] == 800
    counts = np.bincount(nearest, minlength=8)
    assert meta["fit_usage"]["used"] == int((counts > 0).sum())
    per_class = meta["fit_usage"]["per_class"]["classes"]
    assert sum(c["n_vectors"] for c in per_class.values()) == 800


def test_max_fit_vectors_fits_on_a_seeded_sample_and_assigns_all():
    lat = grid_latents()
    q = QuantizeConfig(method="kmeans", K=8, max_fit_vectors=300, random_state=3)
    est, meta = fit_on_latents(lat, q)
    assert meta["n_fit"] == 300 and meta["fit_usage"]["n_vectors"] == 800
    rows = codebooks.sample_rows(800, 300, 3)
    from posthoc_vq.quantize.latent.kmeans import KMeans

    ref = KMeans(8, random_state=3).fit(lat.tokens()[rows])
    np.testing.assert_array_equal(est.codebook_, ref.codebook_)
    again, _ = fit_on_latents(lat, q)
    np.testing.assert_array_equal(again.codebook_, est.codebook_)
    assert q.default_name() == "kmeans-K8-mu-train-n300-rs3"


def test_residual_per_position_bits_and_reconstruction():
    lat = grid_latents()
    est, meta = fit_on_latents(lat, QuantizeConfig(method="residual", K=4, n_stages=2))
    assert meta["bits_per_image"] == 4 * 2 * math.log2(4)
    codes = est.predict(lat.tokens())
    assert codes.shape == (800, 2) and meta["fit_usage"]["stages"][1]["n_vectors"] == 800
    back = from_tokens(est.inverse_transform(codes), lat.latent_shape)
    assert back.shape == lat.values.shape
    assert np.mean((back - lat.values) ** 2) < np.mean((lat.values - lat.values.mean()) ** 2)


@pytest.mark.filterwarnings("ignore::posthoc_vq.quantize.latent.graph.DisconnectedGraphWarning")  # six separated clusters
def test_geodesic_per_position_refuses_too_many_tokens_and_works_on_a_sample(monkeypatch):
    monkeypatch.setattr(codebooks, "MAX_EXACT_GRAPH_VECTORS", 500)
    monkeypatch.setattr(codebooks, "MAX_GRAPH_VECTORS", 600)
    lat = grid_latents()  # 800 tokens
    with pytest.raises(ConfigError, match=r"800 \(200 images x 4 positions\).*quantize.graph=hnsw.*quantize.max_fit_vectors"):
        fit_on_latents(lat, QuantizeConfig(method="geodesic", K=8, n_neighbors=5))
    with pytest.raises(ConfigError, match="hnsw graph is limited to 600"):
        fit_on_latents(lat, QuantizeConfig(method="hybrid", K=8, n_neighbors=5, graph="hnsw"))
    est, meta = fit_on_latents(lat, QuantizeConfig(method="geodesic", K=8, n_neighbors=5, max_fit_vectors=400))
    assert meta["n_fit"] == 400 and meta["fit_usage"]["n_vectors"] == 800 and meta["graph"]["nodes"] == 400
    assert est.predict(lat.tokens()).shape == (800,)


def test_k_larger_than_the_fit_set_is_a_config_error():
    with pytest.raises(ConfigError, match="quantize.K=900 is more than the 800 latent vectors"):
        fit_on_latents(grid_latents(), QuantizeConfig(method="kmeans", K=900))
