"""Config loading: presets validate, unknown or mistyped keys are errors naming key and file."""

import re

import pytest

from posthoc_vq.config import RunConfig, configs_root, load_run_config
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


def _preset(tmp_path, text: str | bytes, name: str = "train.yaml"):
    data = text.encode() if isinstance(text, str) else text
    (tmp_path / name).write_bytes(data)
    return tmp_path


def test_binary_preset_file_is_a_config_error_naming_the_file(tmp_path):
    _preset(tmp_path, bytes(range(256)) * 4, "vae.yaml")
    with pytest.raises(ConfigError, match=r"vae.yaml: binary data .*save the file again as UTF-8 YAML text"):
        load_run_config(tmp_path)


def test_non_utf8_preset_file_is_a_config_error_naming_the_file_and_byte(tmp_path):
    _preset(tmp_path, "# réglages\ntrain:\n  epochs: 3\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"train.yaml: not UTF-8 text \(byte 0xe9 on line 1.*save the file again with UTF-8 encoding"):
        load_run_config(tmp_path)


def test_utf8_preset_with_bom_and_non_ascii_comment_still_loads(tmp_path):
    _preset(tmp_path, "\ufeff# réglages: ünïcode\ntrain:\n  epochs: 3\n")
    assert load_run_config(tmp_path).train.epochs == 3


@pytest.mark.parametrize(
    ("text", "key", "lines"),
    [
        ("train:\n  epochs: 3\ntrain:\n  lr: 0.1\n", "train", (3, 1)),  # top level
        ("model:\n  latent_dim: 8\n  channels: [8, 16]\n  latent_dim: 4\n", "model.latent_dim", (4, 2)),  # nested
        ("train:\n  lr: 0.1\nmodel:\n  beta: 1.0\n  beta: 2.0\n", "model.beta", (5, 4)),  # in a later section
    ],
    ids=["top-level", "nested", "later-section"],
)
def test_duplicate_key_in_preset_is_a_config_error_naming_key_file_and_lines(tmp_path, text, key, lines):
    _preset(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"train.yaml: duplicate key '{key}' \(line {lines[0]}; first given on line {lines[1]}\).*delete one of them"):
        load_run_config(tmp_path)


def test_yaml_merge_key_may_still_override_merged_keys():
    from posthoc_vq.config import load_yaml

    assert load_yaml("a: &x {p: 1, q: 2}\nb:\n  <<: *x\n  p: 3\n") == {"a": {"p": 1, "q": 2}, "b": {"p": 3, "q": 2}}


@pytest.mark.parametrize(("raw", "key"), [(".inf", "train.lr"), ("-.inf", "train.min_delta"), (".nan", "model.beta"), (".NaN", "train.grad_clip")])
def test_non_finite_number_in_preset_is_a_config_error_naming_key_and_file(tmp_path, raw, key):
    section, field = key.split(".")
    _preset(tmp_path, f"{section}:\n  {field}: {raw}\n")
    with pytest.raises(ConfigError, match=rf"train.yaml: '{key}' \(line 2\) is {re.escape(raw)}, a non-finite number.*give a finite value"):
        load_run_config(tmp_path)


@pytest.mark.parametrize("raw", ["inf", "nan", "-inf", "Infinity", ".inf", "-.inf", ".nan"])
def test_non_finite_override_is_a_config_error_naming_the_key(raw):
    with pytest.raises(ConfigError, match=r"train.lr.*(finite number|non-finite number)"):
        load_run_config("digits", [f"train.lr={raw}"])


@pytest.mark.parametrize("override", ["train.grad_clip=inf", "train.min_delta=nan", "model.beta=inf", "data.val_fraction=nan", "train.lr_gamma=nan"])
def test_every_float_field_refuses_non_finite_values(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}: Input should be a finite number.*give a finite number"):
        load_run_config("digits", [override])


def test_non_finite_values_are_refused_in_python_too():
    from pydantic import ValidationError

    from posthoc_vq.config import QuantizeConfig, TrainConfig

    with pytest.raises(ValidationError, match="finite number"):
        TrainConfig(lr=float("inf"))
    with pytest.raises(ValidationError, match="finite number"):
        TrainConfig().grad_clip = float("nan")  # validate_assignment
    assert QuantizeConfig().K == 1024


def test_sweep_spec_yaml_goes_through_the_strict_loader(tmp_path):
    from posthoc_vq.experiments.spec import load_sweep_spec

    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\naxes:\n  seed: [0, 1]\n  seed: [2]\n")
    with pytest.raises(ConfigError, match=r"s.yaml: duplicate key 'axes.seed' \(line 4; first given on line 3\)"):
        load_sweep_spec(spec)
    spec.write_text("name: s\nset: {train.lr: .inf}\naxes:\n  seed: [0, 1]\n")
    with pytest.raises(ConfigError, match=r"s.yaml: 'set.train.lr' \(line 2\) is .inf, a non-finite number"):
        load_sweep_spec(spec)


def test_every_yaml_file_under_configs_loads_strictly():
    from posthoc_vq.config import load_quantize_config, read_yaml
    from posthoc_vq.experiments.spec import load_sweep_spec

    files = sorted(configs_root().rglob("*.yaml")) + sorted(configs_root().rglob("*.yml"))
    assert len(files) >= 20
    for path in files:
        read_yaml(path)  # no duplicate keys, no inf/nan, UTF-8 text
        if path.parent.name == "ablations":
            load_sweep_spec(path)
        elif path.name.startswith("quantize-"):
            load_quantize_config(path)
        else:
            assert path.name in ("vae.yaml", "train.yaml"), path
            load_run_config(path.parent)
