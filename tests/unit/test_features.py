"""The domain feature network: seeded training, accuracy, save/load, errors, and use inside torchmetrics."""

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score
from torchmetrics.image.fid import FrechetInceptionDistance

from posthoc_vq.cli import main
from posthoc_vq.data import load_dataset
from posthoc_vq.errors import CheckpointError, ConfigError
from posthoc_vq.io import read_json
from posthoc_vq.metrics.features import (
    META_FILE, WEIGHTS_FILE, FeatureExtractor, default_features_dir, load_feature_net, train_feature_net,
)
from posthoc_vq.metrics.frechet import frechet_distance

EPOCHS = 12


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    return train_feature_net("digits", tmp_path_factory.mktemp("f") / "a", epochs=EPOCHS, seed=0, splits=digits, progress=False)


def test_accuracy_is_recorded_and_matches_sklearn(trained, digits):
    logits = trained.net(digits.test.to_tensor())
    acc = accuracy_score(digits.test.labels, logits.argmax(1).numpy())
    assert trained.meta["test_accuracy"] == pytest.approx(acc)
    assert acc > 0.9  # a working classifier, not chance (0.1)
    record = read_json(trained.path / META_FILE)
    assert record["test_accuracy"] == trained.meta["test_accuracy"] and record["metric_name"] == "FD-digits"
    assert record["config"]["seed"] == 0 and record["n_test"] == len(digits.test) and record["sha256"]


def test_same_seed_same_weights_other_seed_other_weights(trained, digits, tmp_path):
    again = train_feature_net("digits", tmp_path / "b", epochs=EPOCHS, seed=0, splits=digits, progress=False)
    assert (again.path / WEIGHTS_FILE).read_bytes() == (trained.path / WEIGHTS_FILE).read_bytes()
    other = train_feature_net("digits", tmp_path / "c", epochs=1, seed=1, splits=digits, progress=False)
    first = trained.net.state_dict()["hidden.weight"]
    assert not torch.equal(other.net.state_dict()["hidden.weight"], first)


def test_load_round_trip_gives_the_same_features(trained, digits):
    loaded = load_feature_net(trained.path / META_FILE, dataset="digits")
    x = digits.test.to_tensor()
    f1, p1 = trained.embed(x)
    f2, p2 = loaded.embed(x)
    assert torch.equal(f1, f2) and torch.equal(p1, p2)
    assert f1.shape == (len(x), loaded.net.num_features) and loaded.name == "FD-digits"
    assert not any(p.requires_grad for p in loaded.net.parameters())


def test_feature_extractor_is_a_torchmetrics_feature_module(trained, digits):
    """FID fed images through FeatureExtractor equals our FD on precomputed features."""
    real, fake = digits.test.to_tensor(), digits.val.to_tensor()
    fid = FrechetInceptionDistance(feature=FeatureExtractor(trained.net))
    fid.update(real, real=True)
    fid.update(fake, real=False)
    ours = frechet_distance(trained.embed(real)[0], trained.embed(fake)[0])
    assert float(fid.compute()) == pytest.approx(ours, rel=1e-4)


def test_missing_wrong_and_corrupt_networks_are_clear_errors(trained, tmp_path):
    with pytest.raises(CheckpointError, match="posthoc-vq features train --dataset mnist"):
        load_feature_net(tmp_path / "nowhere", dataset="mnist")
    with pytest.raises(CheckpointError, match="not 'mnist'"):
        load_feature_net(trained.path, dataset="mnist")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / META_FILE).write_bytes((trained.path / META_FILE).read_bytes())
    (broken / WEIGHTS_FILE).write_bytes((trained.path / WEIGHTS_FILE).read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="corrupt or was modified"):
        load_feature_net(broken)


def test_images_of_another_shape_are_rejected(trained):
    with pytest.raises(ConfigError, match="trained on digits images"):
        trained.check_images(torch.zeros(2, 1, 28, 28), "mnist test images")


def test_default_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("POSTHOC_VQ_FEATURES", str(tmp_path))
    assert default_features_dir("mnist") == tmp_path / "mnist"
    monkeypatch.delenv("POSTHOC_VQ_FEATURES")
    assert default_features_dir("mnist").parts[-3:] == ("posthoc_vq", "features", "mnist")


def test_cli_features_train(tmp_path, capsys):
    assert main(["features", "train", "--dataset", "digits", "--out", str(tmp_path / "d"), "--epochs", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    record = read_json(tmp_path / "d" / META_FILE)
    assert "test accuracy" in out and f"{record['test_accuracy']:.2%}" in out
    assert record["config"]["epochs"] == 1 and np.isfinite(record["seconds"])
