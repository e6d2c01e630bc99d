"""The built wheel carries the presets, ablation specs and report templates, and works without the checkout.

The full check (a fresh venv, the wheel installed without extras, train/quantize/evaluate/report from a
temporary folder) is ``.ci/wheel_check.sh``, run by ``make test``; this test builds the wheel only (a few seconds).
"""

import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the checkout's files (tracked, or new and not ignored): no stale build/ folder leaks in."""
    tmp = tmp_path_factory.mktemp("wheel")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=True)
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (REPO / name).is_file():  # a file deleted but still in the index is skipped
            (tmp / "src" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, tmp / "src" / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(tmp / "dist"), str(tmp / "src")],
                   check=True, capture_output=True, timeout=120)
    (built,) = (tmp / "dist").glob("posthoc_vq-*.whl")
    return built


def test_the_wheel_holds_every_config_and_template(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    package = REPO / "src" / "posthoc_vq"
    configs = {p.relative_to(package.parent).as_posix() for p in (package / "configs").rglob("*.yaml")}
    templates = {p.relative_to(package.parent).as_posix() for p in (package / "report" / "templates").glob("*.j2")}
    assert len(configs) >= 30 and templates
    assert configs <= names, sorted(configs - names)
    assert templates <= names, sorted(templates - names)
    assert "posthoc_vq/configs/presets/digits/vae.yaml" in names and "posthoc_vq/configs/ablations/smoke.yaml" in names


def test_the_wheel_metadata_keeps_extras_out_of_the_core_install(wheel):
    with zipfile.ZipFile(wheel) as z:
        meta = Parser().parsestr(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode())
    core = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    from posthoc_vq.compat import TORCH_FLOOR, TORCH_NEWEST_TESTED

    window = f"torch<{TORCH_NEWEST_TESTED[0]}.{TORCH_NEWEST_TESTED[1] + 1},>={TORCH_FLOOR[0]}.{TORCH_FLOOR[1]}"  # the tested window, not a pin
    assert window in core and not any(r.startswith("torch==") for r in core), core
    core_names = {r.split(">")[0].split("=")[0].split(";")[0].strip().lower() for r in core}
    assert not core_names & {"ray", "onnx", "onnxruntime", "onnxscript", "jinja2", "torchmetrics", "statsmodels", "mlflow"}
    assert {"sweeps", "export", "report", "metrics", "adapters", "all", "test"} <= set(meta.get_all("Provides-Extra"))


def test_presets_come_from_the_wheel_outside_the_checkout(wheel, tmp_path):
    """The unpacked wheel on sys.path, run from a folder outside the checkout: presets and specs resolve inside it."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("from posthoc_vq.config import configs_root, known_presets, known_ablations, load_run_config; "
            "from posthoc_vq.experiments.spec import load_sweep_spec; "
            "print(configs_root()); print(','.join(known_presets())); print(','.join(known_ablations())); "
            "print(load_run_config('digits').data.name, load_sweep_spec('smoke').name)")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "POSTHOC_VQ_CONFIGS")} | {"PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    root, presets, ablations, loaded = out.stdout.splitlines()
    assert Path(root) == site / "posthoc_vq" / "configs"
    assert "digits" in presets.split(",") and "fashion-mnist" in presets.split(",") and "smoke" in ablations.split(",")
    assert loaded == "digits smoke"
