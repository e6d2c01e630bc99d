"""pythae and diffusers adapters, on small randomly initialised models built here (nothing downloaded).

Both libraries come with the ``adapters`` extra (``pip install -e '.[test,adapters]'``, which
``make install`` and CI run); without it these tests skip, and a skip fails in CI.
"""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

import posthoc_vq
from posthoc_vq.autoencoders import (
    DiffusersAutoencoderKL,
    OutputRangeError,
    PythaeAutoencoder,
    as_autoencoder,
    decode_latents,
    encode_images,
)


def images(n, size, seed=0):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def pythae_vae():
    models = pytest.importorskip("pythae.models", reason="pythae comes with the 'adapters' extra")
    torch.manual_seed(0)
    return models.VAE(models.VAEConfig(input_dim=(1, 8, 8), latent_dim=4))


@pytest.fixture(scope="module")
def diffusers_vae():
    diffusers = pytest.importorskip("diffusers", reason="diffusers comes with the 'adapters' extra")
    torch.manual_seed(0)
    return diffusers.AutoencoderKL(
        in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=8,
    )


def test_pythae_adapter_encodes_decodes_and_quantizes(pythae_vae):
    ae = as_autoencoder(pythae_vae)
    assert isinstance(ae, PythaeAutoencoder) and ae.latent_shape == (4,) and ae.output_range == (0.0, 1.0)
    x = images(60, 8)
    with torch.no_grad():
        enc = pythae_vae.encoder(x)
        mu, logvar = enc.embedding, enc.log_covariance
        ref = pythae_vae.decoder(mu).reconstruction
    torch.testing.assert_close(encode_images(ae, x), mu)
    torch.testing.assert_close(decode_latents(ae, mu), ref)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(encode_images(ae, x, "z", seed=2), mu + torch.exp(0.5 * logvar) * eps)

    fit = posthoc_vq.fit_codebook(pythae_vae, x, K=8, random_state=0)
    result = posthoc_vq.evaluate(pythae_vae, fit, x, split="test").to_json()
    assert result["bits_per_image"] == 3.0 and result["model"]["family"] == "pythae.VAE"
    codes = torch.cdist(mu, torch.from_numpy(fit.codebook.codebook_)).argmin(1)
    with torch.no_grad():
        xq = pythae_vae.decoder(torch.from_numpy(fit.codebook.codebook_)[codes]).reconstruction.numpy()
    ps = [peak_signal_noise_ratio(x[i, 0].numpy(), xq[i, 0], data_range=1) for i in range(len(x))]
    assert result["quantized"]["psnr_db"]["mean"] == pytest.approx(np.mean(ps), abs=1e-4)


def test_diffusers_adapter_maps_minus_one_to_one_and_quantizes_per_position(diffusers_vae):
    ae = as_autoencoder(diffusers_vae)
    assert isinstance(ae, DiffusersAutoencoderKL) and ae.output_range == (-1.0, 1.0)
    assert DiffusersAutoencoderKL(diffusers_vae, image_size=8).latent_shape == (4, 4, 4)
    x = images(30, 8)
    with torch.no_grad():
        dist = diffusers_vae.encode(x * 2 - 1).latent_dist  # diffusers works on [-1, 1] images
        mu = dist.mean
        ref = (diffusers_vae.decode(mu).sample.clamp(-1, 1) + 1) / 2
    torch.testing.assert_close(encode_images(ae, x), mu)
    assert ae.latent_shape == (4, 4, 4)
    torch.testing.assert_close(decode_latents(ae, mu), ref)

    fit = posthoc_vq.fit_codebook(diffusers_vae, x, K=16, random_state=0)
    assert fit.latents.values.shape == (30, 4, 4, 4) and fit.meta["n_fit"] == 30 * 16
    result = posthoc_vq.evaluate(diffusers_vae, fit, x).to_json()
    assert result["bits_per_image"] == 16 * math.log2(16) and result["usage"]["data"]["n_vectors"] == 30 * 16
    # independent per-position quantization: nearest codebook row for every (image, position)
    C = torch.from_numpy(fit.codebook.codebook_)
    tokens = mu.permute(0, 2, 3, 1).reshape(-1, 4)
    zq = C[torch.cdist(tokens, C).argmin(1)].view(30, 4, 4, 4).permute(0, 3, 1, 2)
    with torch.no_grad():
        xq = ((diffusers_vae.decode(zq).sample.clamp(-1, 1) + 1) / 2).numpy()
    ps = [peak_signal_noise_ratio(x[i, 0].numpy(), xq[i, 0], data_range=1) for i in range(len(x))]
    assert result["quantized"]["psnr_db"]["mean"] == pytest.approx(np.mean(ps), abs=1e-4)


def test_diffusers_unclamped_overshoot_is_an_output_range_error(diffusers_vae):
    ae = DiffusersAutoencoderKL(diffusers_vae, clamp=False)
    z = encode_images(ae, images(8, 8)) * 20  # far from the data: a random decoder overshoots [-1, 1]
    with pytest.raises(OutputRangeError, match=r"outside its declared output_range \[-1, 1\]"):
        decode_latents(ae, z)
