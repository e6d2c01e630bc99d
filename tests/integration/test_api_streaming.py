"""Streaming input and devices in the library API: a stream of batches gives the one-tensor numbers; device= on CPU."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import posthoc_vq
from posthoc_vq.devices import resolve_device
from posthoc_vq.errors import ConfigError, DatasetError


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


def streams(x, y):
    return {
        "list": [x[i : i + 32] for i in range(0, len(x), 32)],
        "tuples": [(x[i : i + 25], y[i : i + 25]) for i in range(0, len(x), 25)],
        "dataloader": DataLoader(TensorDataset(x, y), batch_size=16, shuffle=False),
        "generator": (x[i : i + 7] for i in range(0, len(x), 7)),
    }


def same_quality(a, b):
    for block in ("continuous", "quantized", "penalty"):
        if block not in a:
            continue
        for metric in ("mse", "psnr_db", "ssim"):
            for key, value in a[block][metric].items():
                assert b[block][metric][key] == pytest.approx(value, abs=1e-6), (block, metric, key)
        assert a[block]["n_images"] == b[block]["n_images"]
        assert a[block]["output_range"] == pytest.approx(b[block]["output_range"], abs=1e-7)
    if "psnr_change_db" in a:
        for key, value in a["psnr_change_db"].items():
            assert b["psnr_change_db"][key] == pytest.approx(value, abs=1e-6)


@pytest.mark.parametrize("kind", ["list", "tuples", "dataloader", "generator"])
def test_stream_gives_the_one_tensor_codebook_and_metrics(images, kind):
    x, y = images
    model = TinyVAE()
    whole_fit = posthoc_vq.fit_codebook(model, x, K=8, random_state=3)
    fit = posthoc_vq.fit_codebook(model, streams(x, y)[kind], K=8, random_state=3)
    np.testing.assert_allclose(fit.latents.values, whole_fit.latents.values, atol=1e-6)
    np.testing.assert_array_equal(fit.codebook.codebook_, whole_fit.codebook.codebook_)
    if kind in ("tuples", "dataloader"):
        np.testing.assert_array_equal(fit.latents.labels, y.numpy())  # labels come from the pairs

    whole = posthoc_vq.evaluate(model, whole_fit, x).to_json()
    streamed = posthoc_vq.evaluate(model, whole_fit, streams(x, y)[kind]).to_json()  # a fresh stream: a generator is consumed once
    same_quality(whole, streamed)
    assert streamed["latent_mse"] == pytest.approx(whole["latent_mse"], abs=1e-7)
    assert streamed["usage"]["data"]["used"] == whole["usage"]["data"]["used"]
    assert streamed["mean_image_baseline"]["mse"] == pytest.approx(whole["mean_image_baseline"]["mse"], abs=1e-9)

    cont, cont_streamed = posthoc_vq.evaluate(model, None, x).to_json(), posthoc_vq.evaluate(model, None, streams(x, y)[kind]).to_json()
    same_quality(cont, cont_streamed)


def test_stream_per_image_metrics_equal_the_one_tensor_ones(images):
    from posthoc_vq.evaluation.reconstruction import QualityMeter

    x, _ = images
    out = (x * 0.9 + 0.05).clamp(0, 1)
    whole = QualityMeter().add(x, out)
    parts = QualityMeter()
    for i in range(0, len(x), 13):
        parts.add(x[i : i + 13], out[i : i + 13])
    for key, value in whole.per_image().items():
        np.testing.assert_allclose(parts.per_image()[key], value, rtol=0, atol=1e-6)
    assert parts.result().psnr_db.to_json() == pytest.approx(whole.result().psnr_db.to_json(), abs=1e-6)


@pytest.mark.parametrize("bad,message", [
    (lambda b: b.double() * 2, "batch 2: images must lie in [0, 1]"),
    (lambda b: (b * 255).to(torch.uint8), "batch 2: images must be floats"),
    (lambda b: b[:, :, :4], "batch 2: images of shape (1, 4, 8) per image, but batch 0 had (1, 8, 8)"),
])
def test_a_bad_batch_is_named_by_index(images, bad, message):
    x, _ = images
    batches = [x[:10], x[10:20], bad(x[20:30])]
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        posthoc_vq.fit_codebook(TinyVAE(), batches, K=4)
    with pytest.raises(DatasetError, match="batch 2"):
        posthoc_vq.evaluate(TinyVAE(), None, batches)


def test_a_spent_generator_says_so(images):
    x, _ = images
    gen = (x[i : i + 30] for i in range(0, len(x), 30))
    posthoc_vq.fit_codebook(TinyVAE(), gen, K=4)
    with pytest.raises(DatasetError, match="consumed once"):
        posthoc_vq.evaluate(TinyVAE(), None, gen)


def test_labels_argument_with_a_stream_is_refused(images):
    x, y = images
    with pytest.raises(DatasetError, match="stream of batches carries its labels"):
        posthoc_vq.fit_codebook(TinyVAE(), [x], K=4, labels=y)


# ---------------------------------------------------------------------------- devices


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device(None, TinyVAE()) == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu9")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=r"--device cuda.*: no CUDA device is available here \(torch.cuda.is_available\(\) is False\); use --device cpu or auto"):
            resolve_device(spec)
    with pytest.raises(ConfigError, match="no MPS"):
        resolve_device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match="1 CUDA device"):
        resolve_device("cuda:3")


def test_device_cpu_equals_the_default(images):
    x, _ = images
    model = TinyVAE()
    fit = posthoc_vq.fit_codebook(model, x, K=8)
    fit_cpu = posthoc_vq.fit_codebook(model, x, K=8, device="cpu")
    np.testing.assert_array_equal(fit.codebook.codebook_, fit_cpu.codebook.codebook_)
    default, cpu = posthoc_vq.evaluate(model, fit, x), posthoc_vq.evaluate(model, fit, x, device="cpu")  # typed: compared by attribute
    assert default.device == cpu.device == "cpu"
    assert default.quantized == cpu.quantized and default.continuous == cpu.continuous


def test_device_cuda_without_cuda_is_a_clear_error(images, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a machine with a GPU
    x, _ = images
    with pytest.raises(ConfigError, match="no CUDA device is available here"):
        posthoc_vq.fit_codebook(TinyVAE(), x, K=4, device="cuda")
    with pytest.raises(ConfigError, match="no CUDA device is available here"):
        posthoc_vq.evaluate(TinyVAE(), None, x, device="cuda")
