"""Codebook files: registry errors, and damaged or mismatched files give errors naming the file."""

import json

import numpy as np
import pytest

from posthoc_vq.errors import CheckpointError, ConfigError
from posthoc_vq.quantize.latent.random_prior import RandomPrior
from posthoc_vq.quantize.latent.store import load_codebook, make_estimator, save_codebook


@pytest.fixture
def saved(tmp_path):
    est = RandomPrior(16, random_state=0).fit(np.zeros((4, 5), np.float32))
    save_codebook(tmp_path / "cb", est)
    return tmp_path / "cb"


def test_unknown_method_and_parameter():
    with pytest.raises(ConfigError, match="unknown codebook method 'kmedians'.*kmeans"):
        make_estimator("kmedians")
    with pytest.raises(ConfigError, match=r"no parameter\(s\) \['n_neighbours'\]"):
        make_estimator("random-prior", n_neighbours=3)


def test_wrong_latent_dimension_names_file_and_model(saved):
    with pytest.raises(CheckpointError, match=r"cb/codebook.safetensors has latent dimension D=5 but the model's latent_dim is 128"):
        load_codebook(saved, expected_dim=128)


def test_truncated_or_modified_tensor_file(saved):
    path = saved / "codebook.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-7])
    with pytest.raises(CheckpointError, match=r"cb/codebook.safetensors is corrupt or was modified"):
        load_codebook(saved)


def test_json_that_disagrees_with_tensors(saved):
    meta_path = saved / "codebook.json"
    meta = json.loads(meta_path.read_text())
    meta["tensor_shapes"]["codebook"] = [32, 5]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"holds tensors \{'codebook': \[16, 5\]\} but .*records"):
        load_codebook(saved)
    meta["tensor_shapes"]["codebook"] = [16, 5]
    meta["n_codes"] = 1024
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"codebook is K=16, D=5 but its JSON says K=1024"):
        load_codebook(saved)


def test_missing_and_unparsable_json(saved, tmp_path):
    with pytest.raises(CheckpointError, match=r"codebook record not found: .*nope/codebook.json"):
        load_codebook(tmp_path / "nope")
    (saved / "codebook.json").write_text("{")
    with pytest.raises(CheckpointError, match=r"cb/codebook.json is damaged"):
        load_codebook(saved)
