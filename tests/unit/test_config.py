"""Config loading: presets validate, unknown or mistyped keys are errors naming key and file."""

import pytest

from posthoc_vq.config import RunConfig, configs_root, load_config_file, load_run_config
from posthoc_vq.errors import ConfigError

PRESETS = ["digits", "mnist", "fashion-mnist", "cifar-10", "celeba"]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_validates_and_names_its_dataset(preset):
    config = load_run_config(preset)
    assert config.data.name == preset
    assert (configs_root() / "presets" / preset / "vae.yaml").exists()


def test_fashion_mnist_preset_is_the_study_architecture():
    c = load_run_config("fashion-mnist")
    assert (c.model.latent_dim, c.model.recon_loss, c.model.batch_norm) == (128, "mse", True)
    assert c.train.early_stopping and c.train.epochs <= 30


def test_dotted_overrides_are_typed_and_applied():
    c = load_run_config("digits", ["train.epochs=5", "model.channels=[8, 16]", "train.precision=bf16"], seed=7)
    assert c.train.epochs == 5 and c.model.channels == [8, 16] and c.train.precision == "bf16" and c.seed == 7


def test_unknown_key_in_preset_file_names_key_file_and_hint(tmp_path):
    (tmp_path / "vae.yaml").write_text("model:\n  latnt_dim: 8\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'model.latnt_dim' in .*vae.yaml \(did you mean 'model.latent_dim'\?\)"):
        load_run_config(tmp_path)


def test_unknown_top_level_section(tmp_path):
    (tmp_path / "train.yaml").write_text("trian:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'trian' in .*train.yaml \(did you mean 'train'\?\)"):
        load_run_config(tmp_path)


def test_unknown_override_key_names_the_override():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch' in --set train.epoch=3 \(did you mean 'train.epochs'\?\)"):
        load_run_config("digits", ["train.epoch=3"])


def test_wrong_type_names_the_dotted_key():
    with pytest.raises(ConfigError, match=r"train.batch_size"):
        load_run_config("digits", ["train.batch_size=many"])
    with pytest.raises(ConfigError, match=r"train.precision"):
        load_run_config("digits", ["train.precision=fp8"])


def test_malformed_override_and_yaml(tmp_path):
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        load_run_config("digits", ["train.epochs"])
    (tmp_path / "vae.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"vae.yaml: invalid YAML"):
        load_run_config(tmp_path)


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ConfigError, match=r"unknown preset 'svhn'.*fashion-mnist"):
        load_run_config("svhn")


def test_geometry_is_checked_against_image_size():
    with pytest.raises(ConfigError, match="not divisible by 2\\*\\*len\\(channels\\) = 8"):
        load_run_config("digits", ["model.image_size=28", "model.channels=[8,16,32]"])


def test_saved_config_round_trips_and_damaged_json_is_named(tmp_path):
    c = load_run_config("mnist", ["train.epochs=2"])
    path = tmp_path / "config.json"
    path.write_text(c.model_dump_json())
    assert load_config_file(path) == c
    path.write_text(c.model_dump_json()[:-10])
    with pytest.raises(ConfigError, match=r"config.json: not valid JSON"):
        load_config_file(path)
    assert RunConfig().data.name == "digits"
