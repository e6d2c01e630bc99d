"""Shared fixtures of the integration tests: a small digits VAE trained for real (seconds on 2 cores)."""

import pytest

from posthoc_vq.config import load_run_config
from posthoc_vq.train import train


@pytest.fixture(scope="module")
def make_digits_run(tmp_path_factory):
    """Factory: train a digits VAE (latent 8, channels [16, 32], no early stopping) into a fresh run directory."""

    def make(epochs: int = 8, name: str = "digits"):
        run_dir = tmp_path_factory.mktemp("runs") / name
        config = load_run_config("digits", ["model.latent_dim=8", "model.channels=[16,32]", f"train.epochs={epochs}", "train.early_stopping=false"])
        train(config, run_dir, progress=False)
        return run_dir

    return make
