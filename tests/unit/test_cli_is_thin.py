"""The CLI parses and prints: it opens no run and holds no tracking code (posthoc_vq.pipeline does both, for the CLI and
the library API alike)."""

import ast
from pathlib import Path

import posthoc_vq

CLI = Path(posthoc_vq.__file__).parent / "cli.py"
TRACKER_CALLS = {"log_metrics", "log_params", "log_artifact", "set_tags", "open_tracker", "check_tracker"}


def test_cli_opens_no_run_and_logs_to_no_tracker():
    tree = ast.parse(CLI.read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {"Run", "Sweep"} & names, "a run or sweep is opened by posthoc_vq.pipeline, not by the CLI"
    assert not TRACKER_CALLS & attributes, sorted(TRACKER_CALLS & attributes)
    assert not {"posthoc_vq.run", "posthoc_vq.tracking"} & imported
    assert "posthoc_vq.pipeline" in imported
