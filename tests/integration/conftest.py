"""Shared fixtures of the integration tests: a small digits VAE trained for real (seconds on 2 cores)."""

import pytest

from posthoc_vq.config import load_run_config
from posthoc_vq.train import train

#: the two latent layouts of the codec tests: one vector per image (D=8), and a 4 x 2 x 2 token grid
CODEC_FAMILIES = {"conv": ["model.latent_dim=8"], "spatial": ["model.family=spatial", "model.latent_dim=4"]}


@pytest.fixture(scope="module")
def make_digits_run(tmp_path_factory):
    """Factory: train a digits VAE (latent 8, channels [16, 32], no early stopping) into a fresh run directory."""

    def make(epochs: int = 8, name: str = "digits"):
        run_dir = tmp_path_factory.mktemp("runs") / name
        config = load_run_config("digits", ["model.latent_dim=8", "model.channels=[16,32]", f"train.epochs={epochs}", "train.early_stopping=false"])
        train(config, run_dir, progress=False)
        return run_dir

    return make


@pytest.fixture(scope="module")
def make_codec_runs(tmp_path_factory):
    """Factory: family -> a digits run of each latent layout of :data:`CODEC_FAMILIES` (channels [16, 32], no early stopping)."""

    def make(epochs: int) -> dict:
        out = {}
        for family, overrides in CODEC_FAMILIES.items():
            run = tmp_path_factory.mktemp("runs") / family
            train(load_run_config("digits", overrides + ["model.channels=[16,32]", f"train.epochs={epochs}", "train.early_stopping=false"]), run, progress=False)
            out[family] = run
        return out

    return make
