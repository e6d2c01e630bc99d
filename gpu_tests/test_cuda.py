"""CUDA checks, run where a GPU is lent (`make test-gpu`): outside the default test paths, and they fail
(never skip) on a machine without CUDA. The CPU suite covers the same code paths with device='cpu'."""

import pytest
import torch

import posthoc_vq


class TinyVAE(torch.nn.Module):
    """A seeded, untrained conv autoencoder with a (4, 2, 2) latent grid; images (B, 1, 8, 8)."""

    output_range = (0.0, 1.0)

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.enc = torch.nn.Conv2d(1, 8, 4, stride=4)
        self.dec = torch.nn.ConvTranspose2d(4, 1, 4, stride=4)

    def encode(self, x):
        h = self.enc(x)
        return h[:, :4], h[:, 4:]

    def decode(self, z):
        return torch.sigmoid(self.dec(z))


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(90, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (90,), generator=g)
    return x, y


def test_cuda_is_there():
    assert torch.cuda.is_available(), "no CUDA device: run these tests on a GPU machine"


def test_cuda_agrees_with_cpu(images):
    x, _ = images
    model = TinyVAE()
    fit = posthoc_vq.fit_codebook(model, x, K=8)
    cpu = posthoc_vq.evaluate(model, fit, x, device="cpu")
    gpu = posthoc_vq.evaluate(model.to("cuda"), fit, x)  # default: the model's device
    assert gpu["device"].startswith("cuda")
    assert gpu["continuous"]["psnr_db"]["mean"] == pytest.approx(cpu["continuous"]["psnr_db"]["mean"], abs=1e-3)
