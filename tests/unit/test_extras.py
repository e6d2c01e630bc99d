"""Optional dependencies: each extra's entry point fails, without one, in one line naming the extra to install;
and the whole package imports with every extra missing (their imports are lazy)."""

import subprocess
import sys
import textwrap

import pytest
import torch

from posthoc_vq.cli import main
from posthoc_vq.errors import MissingExtraError
from posthoc_vq.extras import EXTRAS, install_command, require


def message(what: str, extra: str, module: str) -> str:
    return f"{what} needs the '{extra}' extra: pip install 'posthoc-vq[{extra}]' ({module} is not installed)"


class _Blocker:
    """A meta-path finder in front of all others: the blocked packages (and their submodules) are not installed."""

    def __init__(self, names: set[str]):
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname.split(".")[0])
        return None


@pytest.fixture
def block(monkeypatch):
    """``block('ray')``: importing ray (or any ray.* module) now fails as if it were not installed; undone after the test."""
    blocker = _Blocker(set())
    monkeypatch.setattr(sys, "meta_path", [blocker, *sys.meta_path])

    def _block(*names: str) -> None:
        for name in names:
            for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
                monkeypatch.delitem(sys.modules, key)  # imported earlier in this process: forgotten until the test ends
            blocker.names.add(name)

    return _block


def test_require_returns_the_module_and_names_the_extra_when_missing(block):
    import jinja2

    assert require("jinja2", "report", "The report") is jinja2
    block("jinja2")
    with pytest.raises(MissingExtraError) as err:
        require("jinja2", "report", "The report")
    assert str(err.value) == message("The report", "report", "jinja2")
    with pytest.raises(MissingExtraError, match=r"needs the 'metrics' extra: .*\(torchmetrics is not installed\)"):
        block("torchmetrics")
        require("torchmetrics.image.fid", "metrics", "FD")  # a submodule of a missing package names the package
    with pytest.raises(ValueError, match="unknown extra 'reports'"):
        require("jinja2", "reports", "The report")


def test_an_installed_package_that_fails_to_import_says_so(monkeypatch):
    import importlib

    def broken(name, *a, **k):
        raise ImportError("libfoo.so: cannot open shared object file", name="libfoo")

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(MissingExtraError, match=r"^ONNX export needs the 'export' extra: .*\(onnxruntime is installed but does not import: libfoo.so: cannot open"):
        require("onnxruntime", "export", "ONNX export")


def test_every_extra_is_declared_in_pyproject():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    assert set(EXTRAS) | {"all", "test", "docs"} == set(optional)  # test and docs: the developers' tools, not features
    assert optional["all"] == [f"posthoc-vq[{','.join(EXTRAS)}]"]
    core = " ".join(project["dependencies"])
    for modules in EXTRAS.values():
        for m in modules:
            assert m not in core, f"{m} belongs to an extra, not the core install"
    from posthoc_vq.compat import TORCH_FLOOR, TORCH_NEWEST_TESTED

    window = f"torch>={TORCH_FLOOR[0]}.{TORCH_FLOOR[1]},<{TORCH_NEWEST_TESTED[0]}.{TORCH_NEWEST_TESTED[1] + 1}"  # the tested window
    assert window in project["dependencies"] and install_command("export") == "pip install 'posthoc-vq[export]'"


@pytest.mark.parametrize("module", ["onnx", "onnxscript", "onnxruntime"])
def test_export_without_the_export_extra(block, capsys, tmp_path, module):
    from posthoc_vq.export.onnx import export_run

    block(module)
    with pytest.raises(MissingExtraError) as err:
        export_run(tmp_path / "no-run")  # fails before looking at the run
    assert str(err.value) == message("ONNX export", "export", module)
    assert main(["export", str(tmp_path / "no-run")]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert err_lines == [f"error: {message('ONNX export', 'export', module)}"]


def test_ray_executor_without_the_sweeps_extra(block, capsys, tmp_path):
    from posthoc_vq.experiments import run_sweep
    from posthoc_vq.experiments.executors import make_executor

    block("ray")
    expected = message("The Ray executor (--executor ray)", "sweeps", "ray")
    with pytest.raises(MissingExtraError) as err:
        make_executor("ray")
    assert str(err.value) == expected
    with pytest.raises(MissingExtraError, match=r"needs the 'sweeps' extra"):
        run_sweep("smoke", tmp_path / "sweep", executor="ray", progress=False)
    assert not (tmp_path / "sweep").exists()  # checked before any work
    assert main(["ablate", "smoke", "--executor", "ray", "--out", str(tmp_path / "sweep"), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {expected}"
    make_executor("local").close()  # the other executors need no extra


def test_report_without_the_report_extra(block, capsys, tmp_path):
    from posthoc_vq.report.build import write_report

    block("jinja2")
    expected = message("The report (report.html, from a Jinja2 template)", "report", "jinja2")
    with pytest.raises(MissingExtraError) as err:
        write_report(tmp_path, tmp_path / "rep")
    assert str(err.value) == expected
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "rep")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {expected}"
    assert not (tmp_path / "rep").exists()  # nothing half-written


def test_fd_and_kid_without_the_metrics_extra(block, capsys, tmp_path):
    from posthoc_vq.evaluation.perceptual import perceptual_metrics
    from posthoc_vq.metrics.frechet import frechet_distance, kernel_distance

    block("torchmetrics")
    feats = torch.randn(8, 3)
    with pytest.raises(MissingExtraError) as err:
        frechet_distance(feats, feats)
    assert str(err.value) == message("The Fréchet distance (--metrics fd)", "metrics", "torchmetrics")
    with pytest.raises(MissingExtraError, match=r"^The kernel distance \(--metrics kid\) needs the 'metrics' extra"):
        kernel_distance(feats, feats)
    expected = message("FD/KID (--metrics fd, kid)", "metrics", "torchmetrics")
    with pytest.raises(MissingExtraError) as err:
        perceptual_metrics(tmp_path / "no-run", metrics=["kid"])  # before any work
    assert str(err.value) == expected
    assert main(["evaluate", str(tmp_path / "no-run"), "--metrics", "fd"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {expected}"


def test_tracking_without_the_tracking_extra(block, capsys, tmp_path):
    from posthoc_vq.tracking import NullTracker, open_tracker

    block("mlflow")
    expected = message("Experiment tracking (--track mlflow)", "tracking", "mlflow")
    with pytest.raises(MissingExtraError) as err:
        open_tracker("mlflow", "experiment", "run")
    assert str(err.value) == expected
    assert isinstance(open_tracker(None, "experiment", "run"), NullTracker)  # no --track: nothing needed
    for argv in (["train", "--out", str(tmp_path / "r")], ["evaluate", str(tmp_path / "no-run")], ["ablate", "smoke", "--out", str(tmp_path / "s")],
                 ["finetune", str(tmp_path / "no-run"), "--codebook", "c", "--out", str(tmp_path / "ft")]):
        assert main([*argv, "--track", "mlflow", "--no-progress"]) == 2, argv
        assert capsys.readouterr().err.strip() == f"error: {expected}", argv
    assert not any((tmp_path / name).exists() for name in ("r", "s", "ft"))  # checked before any work


def test_the_package_imports_with_every_extra_missing():
    """A core install imports every module: no module imports an extra's package at import time."""
    blocked = sorted({m for modules in EXTRAS.values() for m in modules} | {"statsmodels"})
    code = textwrap.dedent(f"""
        import importlib, pkgutil, sys
        for name in {blocked!r}:
            sys.modules[name] = None
        import posthoc_vq
        names = [m.name for m in pkgutil.walk_packages(posthoc_vq.__path__, "posthoc_vq.")]
        for name in names:
            importlib.import_module(name)
        loaded = sorted(n for n in {blocked!r} if sys.modules.get(n) is not None)
        assert not loaded, loaded
        print(len(names))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[-1]) > 100  # every module was imported
