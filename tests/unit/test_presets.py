"""Presets and ablation specs ship inside the package (importlib.resources), $POSTHOC_VQ_CONFIGS overrides them,
and `posthoc-vq presets` lists them."""

import importlib.resources
import json
from pathlib import Path

import pytest

import posthoc_vq
from posthoc_vq.cli import main
from posthoc_vq.config import (
    CONFIGS_ENV, PRESET_FILES, configs_root, known_ablations, known_presets, known_quantize_presets, list_configs, load_quantize_config,
    load_run_config, packaged_configs, preset_files,
)
from posthoc_vq.errors import ConfigError
from posthoc_vq.experiments.spec import load_sweep_spec

# what the repository ships; a preset or spec that goes missing from the package (or from the wheel) fails here
SHIPPED_PRESETS = ["celeba", "cifar-10", "cifar-10-jpeg", "cifar-10-jpeg-spatial", "digits", "fashion-mnist", "fashion-mnist-spatial", "mnist"]
SHIPPED_ABLATIONS = ["cross-dataset", "latent-dim", "latent-dim-cifar-10-jpeg", "posthoc-vs-joint", "posthoc-vs-joint-full", "precision", "smoke"]


@pytest.fixture(autouse=True)
def _no_override(monkeypatch):
    monkeypatch.delenv(CONFIGS_ENV, raising=False)


def test_configs_are_found_through_importlib_resources_inside_the_package():
    root = packaged_configs()
    assert root == importlib.resources.files("posthoc_vq") / "configs"
    assert root == Path(posthoc_vq.__file__).parent / "configs"  # inside the package, not the checkout's parents[2]
    assert configs_root() == root


def test_listed_presets_and_ablations_equal_the_folders_present():
    root = packaged_configs()
    folders = sorted(p.name for p in (root / "presets").iterdir() if p.is_dir())
    specs = sorted(p.stem for p in (root / "ablations").glob("*.yaml"))
    assert known_presets() == folders == SHIPPED_PRESETS
    assert known_ablations() == specs == SHIPPED_ABLATIONS
    for name in SHIPPED_PRESETS:
        files = preset_files(name)
        assert files[:2] == list(PRESET_FILES)
        assert sorted(files) == sorted(p.name for p in (root / "presets" / name).glob("*.yaml"))
    assert "digits/quantize-euclidean" in known_quantize_presets() and "mnist/quantize-geodesic" in known_quantize_presets()


def test_env_override_replaces_the_packaged_configs(tmp_path, monkeypatch):
    (tmp_path / "presets" / "mine").mkdir(parents=True)
    (tmp_path / "presets" / "mine" / "vae.yaml").write_text("data:\n  name: digits\nmodel:\n  latent_dim: 3\n  channels: [4]\n")
    (tmp_path / "presets" / "mine" / "train.yaml").write_text("train:\n  epochs: 1\n")
    (tmp_path / "presets" / "mine" / "quantize-tiny.yaml").write_text("quantize:\n  K: 5\n")
    (tmp_path / "ablations").mkdir()
    (tmp_path / "ablations" / "mine-sweep.yaml").write_text(
        "name: mine-sweep\nbase: mine\naxes:\n  seed: [0, 1]\ncompare:\n  axis: seed\n  reference: 0\n  metrics: [psnr_db]\n")
    monkeypatch.setenv(CONFIGS_ENV, str(tmp_path))

    assert configs_root() == tmp_path
    assert known_presets() == ["mine"] and known_ablations() == ["mine-sweep"] and known_quantize_presets() == ["mine/quantize-tiny"]
    c = load_run_config("mine")
    assert (c.model.latent_dim, c.model.channels, c.train.epochs) == (3, [4], 1)
    assert load_quantize_config("mine/quantize-tiny").K == 5
    assert load_sweep_spec("mine-sweep").base == "mine"
    with pytest.raises(ConfigError, match=rf"unknown preset 'digits': .*\(from \${CONFIGS_ENV}=.*\)\. Known presets: mine;"):
        load_run_config("digits")
    listing = list_configs()
    assert listing["source"] == CONFIGS_ENV and listing["root"] == str(tmp_path)


def test_errors_list_the_known_names():
    with pytest.raises(ConfigError, match=r"unknown preset 'digit' \(did you mean 'digits'\?\).*Known presets: celeba, cifar-10, .*digits.*mnist; `posthoc-vq presets`"):
        load_run_config("digit")
    with pytest.raises(ConfigError, match=r"quantize preset not found: digits/quantize-euclid \(did you mean 'digits/quantize-euclidean'\?\).*mnist/quantize-geodesic"):
        load_quantize_config("digits/quantize-euclid")
    with pytest.raises(ConfigError, match=r"sweep spec not found: smok .*packaged spec: cross-dataset, latent-dim, .*smoke"):
        load_sweep_spec("smok")


def test_cli_presets_prints_one_plain_line_each(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")  # plain text: never wrapped, whatever the terminal width
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(SHIPPED_PRESETS) + len(SHIPPED_ABLATIONS)
    assert lines[0].startswith(f"configs  {packaged_configs()}  ")
    presets = [line.split() for line in lines if line.startswith("preset ")]
    ablations = [line.split() for line in lines if line.startswith("ablation ")]
    assert [p[1] for p in presets] == SHIPPED_PRESETS
    assert dict((p[1], p[2:]) for p in presets)["digits"] == ["vae.yaml", "train.yaml", "quantize-euclidean.yaml", "quantize-geodesic.yaml"]
    assert [a[1] for a in ablations] == SHIPPED_ABLATIONS
    assert all(Path(a[2]).is_file() and Path(a[2]).stem == a[1] for a in ablations)


def test_cli_presets_json(capsys):
    assert main(["presets", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == list_configs()
    assert out["source"] == "package" and [p["name"] for p in out["presets"]] == SHIPPED_PRESETS
    assert all(Path(p["path"], f).is_file() for p in out["presets"] for f in p["files"])


def test_listing_ignores_a_same_named_folder_in_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "digits").mkdir()
    (tmp_path / "digits" / "stray.yaml").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    assert preset_files("digits") == ["vae.yaml", "train.yaml", "quantize-euclidean.yaml", "quantize-geodesic.yaml"]
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        preset_files("nope")
