"""A fitted codebook as an nn.Module: the same codes as ``predict``, on vectors and token grids."""

import numpy as np
import pytest
import torch

from posthoc_vq.quantize.latent.class_conditional import ClassConditionalKMeans
from posthoc_vq.quantize.latent.geodesic import GeodesicKMedoids
from posthoc_vq.quantize.latent.kmeans import KMeans
from posthoc_vq.quantize.latent.module import CodebookModule, NotEuclideanCodebookError
from posthoc_vq.quantize.latent.random_prior import RandomPrior
from posthoc_vq.quantize.latent.residual import ResidualKMeans

rng = np.random.default_rng(0)
FIT = rng.standard_normal((400, 6)).astype(np.float32)
NEW = rng.standard_normal((300, 6)).astype(np.float32)


def fitted(method):
    if method == "kmeans":
        return KMeans(16, random_state=0).fit(FIT)
    if method == "residual":
        return ResidualKMeans(8, n_stages=3, random_state=0).fit(FIT)
    return RandomPrior(16, random_state=0).fit(FIT)


@pytest.mark.parametrize("method", ["kmeans", "residual", "random-prior"])
def test_indices_and_vectors_equal_predict(method):
    est = fitted(method)
    z_q, idx = est.as_module()(torch.from_numpy(NEW))
    np.testing.assert_array_equal(idx.numpy(), est.predict(NEW))
    np.testing.assert_array_equal(z_q.numpy(), est.quantize(NEW))
    assert idx.dtype == torch.int64 and idx.shape == ((300, 3) if method == "residual" else (300,))


@pytest.mark.parametrize("method", ["kmeans", "residual"])
def test_token_grid_is_quantized_per_position(method):
    est = fitted(method)
    grid = torch.from_numpy(NEW[:288]).reshape(8, 6, 6, 6).permute(0, 3, 1, 2)  # (N, C, h, w) with C = D = 6
    z_q, idx = est.as_module()(grid)
    assert z_q.shape == grid.shape
    tokens = grid.permute(0, 2, 3, 1).reshape(-1, 6).numpy()
    expected = est.predict(tokens)
    assert idx.shape == (8, 6, 6, *expected.shape[1:])
    np.testing.assert_array_equal(idx.reshape(len(tokens), *expected.shape[1:]).numpy(), expected)
    np.testing.assert_array_equal(z_q.permute(0, 2, 3, 1).reshape(-1, 6).numpy(), est.quantize(tokens))


def test_dtype_move_state_dict_and_straight_through():
    est = fitted("kmeans")
    module = est.as_module()
    z = torch.from_numpy(NEW)
    _, idx = module(z)
    moved = module.to(torch.float64).to("cpu")
    assert moved.codebooks.dtype == torch.float64
    z_q64, idx64 = moved(z.double())
    assert z_q64.dtype == torch.float64 and torch.equal(idx64, idx)

    fresh = CodebookModule(torch.zeros(1, 16, 6))
    fresh.load_state_dict(est.as_module().state_dict())
    assert torch.equal(fresh(z)[1], idx)

    zg = z.clone().requires_grad_(True)
    out, _ = est.as_module(straight_through=True)(zg)
    out.sum().backward()
    assert torch.equal(zg.grad, torch.ones_like(zg))
    assert not est.as_module()(zg)[0].requires_grad


def test_graph_and_label_codebooks_are_refused_by_name():
    geo = GeodesicKMedoids(8, n_neighbors=10, random_state=0).fit(FIT)
    with pytest.raises(NotEuclideanCodebookError, match="'geodesic'.*k-nearest-neighbour graph"):
        geo.as_module()
    cc = ClassConditionalKMeans(8, random_state=0).fit(FIT, y=np.arange(len(FIT)) % 2)
    with pytest.raises(NotEuclideanCodebookError, match="'class-conditional'.*class label"):
        cc.as_module()


def test_wrong_shapes_are_clear():
    module = fitted("kmeans").as_module()
    with pytest.raises(ValueError, match="dimension 5"):
        module(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="token grid"):
        module(torch.zeros(3, 6, 2))


@pytest.mark.parametrize("stages", [1, 3])
@pytest.mark.parametrize("grid", [False, True])
def test_one_quantizer_interface_named_output_and_the_way_back(stages, grid):
    """Post-hoc modules and trained quantizers: forward(z) -> .latents, .indices; dequantize(indices) == the forward's latents."""
    from posthoc_vq.config import VAEConfig
    from posthoc_vq.models.quantizers import build_quantizer

    g = torch.Generator().manual_seed(stages)
    module = CodebookModule(torch.randn(stages, 32, 4, generator=g))
    z = torch.randn(6, 4, 3, 3, generator=g) if grid else torch.randn(6, 4, generator=g)
    out = module(z)
    assert out.latents.shape == z.shape and out.indices.shape == (6, *((3, 3) if grid else ()), *((stages,) if stages > 1 else ()))
    assert torch.equal(module.dequantize(out.indices), out.latents)
    z_q, idx = out  # still unpacks
    assert torch.equal(z_q, out.latents) and torch.equal(idx, out.indices)
    trained = build_quantizer(VAEConfig(latent_dim=4, quantizer="rvq" if stages > 1 else "vq", codebook_size=32, **({"stages": stages} if stages > 1 else {})))
    trained.train()(z)  # k-means initialisation on the batch
    t_out = trained.eval()(z)
    assert t_out.latents.shape == z.shape and torch.equal(t_out.indices, t_out.codes)
    from posthoc_vq.tokens import from_tokens

    tokens = trained.dequantize(t_out.indices.reshape(6, -1, *((stages,) if stages > 1 else ())))
    assert torch.equal(from_tokens(tokens, tuple(z.shape[1:])), t_out.latents)
