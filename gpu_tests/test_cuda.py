"""CUDA checks, run where a GPU is lent (`make test-gpu`): outside the default test paths, and they fail
(never skip) on a machine without CUDA. The CPU suite covers the same code paths with device='cpu'."""

import pytest
import torch

import posthoc_vq
from test_api_streaming import TinyVAE, images  # noqa: F401  (the CPU suite's model and fixture; gpu_tests/conftest.py puts them on the path)


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
