"""The Autoencoder protocol: adapters, range mapping, and the errors a broken model gets."""

import numpy as np
import pytest
import torch

import posthoc_vq
from posthoc_vq.autoencoders import (
    FunctionAutoencoder,
    LatentShapeError,
    ModelContractError,
    OutputRangeError,
    VAEAutoencoder,
    as_autoencoder,
    decode_latents,
    encode_images,
)
from posthoc_vq.config import VAEConfig
from posthoc_vq.errors import ConfigError, DatasetError, PosthocVQError
from posthoc_vq.models import build_vae


def linear_pair(d=3, seed=0, out_scale=1.0):
    """A fixed random linear autoencoder on 1x4x4 images: encode W x, decode sigmoid(V z) * out_scale."""
    g = torch.Generator().manual_seed(seed)
    W, V = torch.randn(d, 16, generator=g), torch.randn(16, d, generator=g)
    return (lambda x: x.flatten(1) @ W.T), (lambda z: torch.sigmoid(z @ V.T).view(-1, 1, 4, 4) * out_scale)


def images(n=20, seed=0):
    return torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))


def test_function_autoencoder_accepts_the_usual_encoder_returns():
    enc, dec = linear_pair()
    x = images()
    mu = enc(x)
    for wrapped in (enc, lambda x: (enc(x), torch.zeros_like(enc(x))), lambda x: {"mu": enc(x)}):
        ae = FunctionAutoencoder(wrapped, dec)
        torch.testing.assert_close(encode_images(ae, x, batch_size=7), mu, rtol=0, atol=0)
        assert ae.latent_shape == (3,)
    # z = mu + exp(logvar / 2) * eps with the seeded generator, batch by batch
    ae = FunctionAutoencoder(lambda x: (enc(x), torch.full_like(enc(x), np.log(4.0))), dec)
    eps = torch.randn((20, 3), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(encode_images(ae, x, "z", seed=5, batch_size=20), mu + 2.0 * eps)


def test_output_range_maps_inputs_and_outputs_linearly():
    enc, dec = linear_pair()
    seen = []

    def encode(x):
        seen.append((float(x.min()), float(x.max())))
        return enc((x + 1) / 2)

    ae = FunctionAutoencoder(encode, lambda z: dec(z) * 2 - 1, output_range=(-1, 1))
    x = images()
    z = encode_images(ae, x)
    assert seen[0][0] >= -1 and seen[0][1] <= 1 and seen[0][0] < -0.5  # the model saw [-1, 1] images
    torch.testing.assert_close(z, enc(x))
    torch.testing.assert_close(decode_latents(ae, z), dec(z))  # mapped back to [0, 1]


def test_decoder_outside_its_declared_range_is_a_clear_error():
    enc, dec = linear_pair(out_scale=1.5)  # sigmoid * 1.5 overshoots (0, 1)
    ae = FunctionAutoencoder(enc, dec, output_range=(0, 1), name="mine")
    with pytest.raises(OutputRangeError, match=r"mine.decode returned values in \[.*\], outside its declared output_range \[0, 1\].*output_range=\(-1, 1\)"):
        decode_latents(ae, encode_images(ae, images()))
    with pytest.raises(OutputRangeError):  # the library entry point checks too
        posthoc_vq.evaluate(ae, None, images())
    nan = FunctionAutoencoder(enc, lambda z: dec(z) * float("nan"))
    with pytest.raises(OutputRangeError, match="nan"):
        decode_latents(nan, torch.zeros(2, 3))
    assert issubclass(OutputRangeError, PosthocVQError)


def test_latent_shape_mismatches_are_clear_errors():
    enc, dec = linear_pair()
    with pytest.raises(LatentShapeError, match=r"returned latents of shape \(3,\) per image, but the model declares latent_shape \(4,\)"):
        encode_images(FunctionAutoencoder(enc, dec, latent_shape=(4,)), images())
    fit = posthoc_vq.fit_codebook(FunctionAutoencoder(enc, dec), images(40), K=4)
    other_enc, other_dec = linear_pair(d=5, seed=1)
    with pytest.raises(LatentShapeError, match=r"holds vectors of D=3, but the model's latents are vectors of D=5.*fit one on this model"):
        posthoc_vq.evaluate(FunctionAutoencoder(other_enc, other_dec), fit, images())
    grid = FunctionAutoencoder(lambda x: x.view(-1, 1, 4, 4).repeat(1, 2, 1, 1), lambda z: z[:, :1])
    with pytest.raises(LatentShapeError, match=r"\(C, h, w\) = \(2, 4, 4\), i.e. tokens of C=2"):
        posthoc_vq.evaluate(grid, fit, images())


def test_sampled_latents_need_a_logvar():
    enc, dec = linear_pair()
    with pytest.raises(ModelContractError, match="returns no logvar"):
        posthoc_vq.fit_codebook(FunctionAutoencoder(enc, dec), images(), K=4, latents="z")


def test_as_autoencoder_dispatch_and_refusal():
    model = build_vae(VAEConfig(latent_dim=4, channels=[4, 8], image_size=8, in_channels=1))
    ae = as_autoencoder(model)
    assert isinstance(ae, VAEAutoencoder) and ae.output_range == (0.0, 1.0) and ae.latent_shape == (4,)
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(encode_images(ae, x), model.encode(x).mu, rtol=0, atol=0)
    assert as_autoencoder(ae) is ae
    enc, dec = linear_pair()
    assert isinstance(as_autoencoder((enc, dec)), FunctionAutoencoder)

    class Duck:
        output_range = (0, 1)
        latent_shape = (3,)

        def encode(self, x):
            return enc(x)

        def decode(self, z):
            return dec(z)

    duck = as_autoencoder(Duck())
    assert duck.latent_shape == (3,) and duck.name == "Duck"
    with pytest.raises(ModelContractError, match="cannot use a Linear as an autoencoder: it has no encode, decode, output_range.*FunctionAutoencoder"):
        as_autoencoder(torch.nn.Linear(2, 2))
    with pytest.raises(ModelContractError, match="output_range must be finite with lo < hi"):
        FunctionAutoencoder(enc, dec, output_range=(1, 0))


def test_bad_images_are_clear_errors():
    enc, dec = linear_pair()
    ae = FunctionAutoencoder(enc, dec)
    with pytest.raises(DatasetError, match="floats in \\[0, 1\\], got dtype torch.uint8.*/ 255"):
        posthoc_vq.fit_codebook(ae, (images() * 255).to(torch.uint8), K=4)
    with pytest.raises(DatasetError, match="must lie in \\[0, 1\\]"):
        posthoc_vq.fit_codebook(ae, images() * 2 - 1, K=4)
    with pytest.raises(DatasetError, match="labels must be \\(20,\\)"):
        posthoc_vq.fit_codebook(ae, images(), K=4, labels=[0, 1])
    with pytest.raises(ConfigError, match="method"):
        posthoc_vq.fit_codebook(ae, images(), K=4, method="kmedoids")
