"""report/ only reads: it imports and calls nothing that trains, encodes, fits, packs or evaluates; its images come from
the sample sets `evaluate` stores, its compression table from the JSON `compress-table` stores, and its claims from the
claims.json `ablate` stores, rendered by the same function as claims.md.

The digits run is the one test_report.py builds (cached once per session under pytest's base temp folder).
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_report import built_digits_run, built_report

import posthoc_vq
from posthoc_vq.cli import main
from posthoc_vq.report.claims import write_claims
from posthoc_vq.experiments.spec import expand, load_sweep_spec
from posthoc_vq.experiments.store import ResultStore
from posthoc_vq.run import Sweep
from posthoc_vq.io import read_json
from posthoc_vq.report.build import write_report
from posthoc_vq.report.claims import claims_tables
from posthoc_vq.report.compression_table import write_compression_table
from posthoc_vq.report.document import table_markdown
from posthoc_vq.run import Run

REPORT = Path(posthoc_vq.__file__).parent / "report"
COMPUTING = (  # modules that train, encode, fit, pack, evaluate or load data
    "posthoc_vq.train", "posthoc_vq.quantize", "posthoc_vq.latents", "posthoc_vq.autoencoders", "posthoc_vq.models", "posthoc_vq.export",
    "posthoc_vq.evaluation", "posthoc_vq.metrics.features", "posthoc_vq.data", "posthoc_vq.api",
)
FORBIDDEN_MODULES = COMPUTING + ("posthoc_vq.experiments.claims", "posthoc_vq.experiments.job", "posthoc_vq.experiments.runner",
                                 "posthoc_vq.experiments.executors")
FORBIDDEN_CALLS = {
    "fit", "fit_transform", "fit_codebook", "fit_codebook_for_run", "fit_on_latents", "encode", "encode_split", "encode_images", "model_latents",
    "run_latents", "train", "quantize_network", "compress_run", "make_claims", "predict", "decode", "decode_latents", "decode_paths",
    "load_model", "open_codebook", "open_compressed", "load_packed", "write_samples", "ensure_samples", "run_sweep", "run_job",
}
SPEC = """name: renderer
base: digits
axes:
  model.latent_dim: [8, 4]
  seed: [0, 1, 2]
compare: {axis: model.latent_dim, reference: 8, metrics: [psnr_db, ssim], pair_by: seed}
threads: 1
"""


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        return [base] + [f"{base}.{a.name}" for a in node.names]
    return []


def _called(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == "decode" and all(isinstance(a, ast.Constant) for a in node.args) and not node.keywords:
            return None  # bytes.decode("ascii"): text, not a decoder
        return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
    return None


def test_report_modules_import_and_call_nothing_that_computes():
    """Every module under report/, parsed: no forbidden import (at any depth of the file), no call by a computing name."""
    modules = sorted(REPORT.rglob("*.py"))
    assert len(modules) > 10
    bad = []
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level:
                bad.append(f"{path.name}:{node.lineno} relative import")
            for name in _imported(node):
                if name.startswith(FORBIDDEN_MODULES) or name in ("importlib", "__import__"):
                    bad.append(f"{path.name}:{node.lineno} imports {name}")
            name = _called(node)
            if name in FORBIDDEN_CALLS or (name or "").startswith("evaluate_") or name in ("import_module", "__import__"):
                bad.append(f"{path.name}:{node.lineno} calls {name}")
    assert bad == []


def test_importing_the_report_loads_no_computing_module():
    """The whole import closure of the report package, in a fresh interpreter (the sweep drivers under experiments/ come in
    through that package's __init__, but they import what they run only when they run it)."""
    code = ("import sys, posthoc_vq.report.build, posthoc_vq.report.compression_table, posthoc_vq.report.claims\n"
            f"print([m for m in sys.modules if m.startswith({COMPUTING!r})])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("ready", ".lock"))
    return dst


def test_report_builds_from_stored_results_when_the_model_file_is_gone(tmp_path_factory, tmp_path, monkeypatch):
    """Same sections and figures as the full run's report, with model.safetensors, the checkpoints and the latent cache
    deleted and every model loader made to fail: the report never loads or runs a model."""
    full = built_report(tmp_path_factory, "run")[1]["report"]
    run = _copy_run(built_digits_run(tmp_path_factory), tmp_path / "run")
    (run / "model.safetensors").unlink()
    shutil.rmtree(run / "checkpoints")
    shutil.rmtree(run / "latents", ignore_errors=True)

    def refuse(*_, **__):
        raise AssertionError("the report loaded a model")

    monkeypatch.setattr(Run, "load_model", refuse)
    monkeypatch.setattr(Run, "verified_model_sha256", refuse)
    import torch

    monkeypatch.setattr(torch.nn.Module, "__call__", refuse)
    result = write_report(run, tmp_path / "out")
    report = result["report"]
    assert [s.key for s in report.sections] == [s.key for s in full.sections]
    assert {f.file for f in report.figures} == {f.file for f in full.figures}
    assert report.missing == []
    tables = {t.key: t.rows for s in report.sections for t in s.tables}
    assert tables == {t.key: t.rows for s in full.sections for t in s.tables}  # file sizes come from the stored evaluations


def test_evaluate_stores_the_samples_and_the_report_names_what_is_absent_or_stale(tmp_path_factory, tmp_path):
    run = _copy_run(built_digits_run(tmp_path_factory), tmp_path / "run")
    for p in (run / "eval").glob("samples-*"):
        p.unlink()
    report = write_report(run, tmp_path / "out1")["report"]
    missing = "\n".join(report.missing)
    assert f"posthoc-vq evaluate {run} --split test" in missing
    assert f"posthoc-vq evaluate {run} --codebook kmeans-K16-mu-train --split test" in missing
    assert f"posthoc-vq compress-weights {run} --bits 8 --name int8-channel-sym --split test" in missing
    assert {f.file for f in report.figures} == {"training-curves.png", "rate-distortion.png"}  # nothing decoded by the report

    assert main(["evaluate", str(run)]) == 0
    for book in ("kmeans-K16-mu-train", "geodesic-K16-mu-train-k10"):
        assert main(["evaluate", str(run), "--codebook", book]) == 0
        assert Run(run).samples_file("test", codebook=book).exists()
    report = write_report(run, tmp_path / "out2")["report"]
    assert {"reconstructions.png", "interpolation.png", "codebook-kmeans-K16-mu-train.png", "codebook-geodesic-K16-mu-train-k10.png"} <= {f.file for f in report.figures}
    assert [m for m in report.missing if "int8-channel-sym" not in m] == []  # only the packed weights' samples are still absent

    record = read_json(run / "model.json")
    (run / "model.json").write_text(json.dumps({**record, "sha256": "0" * 64}))  # as if the model had been retrained
    report = write_report(run, tmp_path / "out3")["report"]
    assert "was made with another version of the model" in "\n".join(report.missing)
    assert "reconstructions.png" not in {f.file for f in report.figures}
    # its evaluations too: left out and said so, never shown as the current model's numbers
    assert f"measured another version of the run's model (it is stale and left out): run `posthoc-vq evaluate {run} --split test`" in "\n".join(report.missing)
    assert not any(t.key == "study" for s in report.sections for t in s.tables)


def test_compress_table_stores_json_and_the_report_module_reproduces_the_table(tmp_path_factory, tmp_path, capsys):
    run = _copy_run(built_digits_run(tmp_path_factory), tmp_path / "run")
    out = tmp_path / "table"
    assert main(["compress-table", str(run), "--bits", "32,8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    data = read_json(out / "compression-test.json")
    assert data["split"] == "test" and data["bits"] == [32, 8] and [r["bits"] for r in data["rows"]] == [32, 8]
    assert data["rows"][0]["file_bytes"] == (run / "model.safetensors").stat().st_size
    md, csv = (out / "compression-test.md").read_text(), (out / "compression-test.csv").read_text()
    assert "NOT CONVERGED" in md and "compression-test.json" in printed.replace("\n", "")
    (out / "compression-test.md").unlink()
    (out / "compression-test.csv").unlink()
    shutil.rmtree(run)  # nothing left to measure: the table is formatted from the stored JSON alone
    paths = write_compression_table(out)
    assert paths["json"] == out / "compression-test.json"
    assert paths["markdown"].read_text() == md and paths["csv"].read_text() == csv
    again = write_compression_table(out / "compression-test.json", tmp_path / "elsewhere")
    assert again["markdown"].read_text() == md


def _table_block(text: str, title: str) -> str:
    lines = text.splitlines()
    i = lines.index(f"**{title}**")
    j = i + 2
    while j < len(lines) and lines[j].startswith("|"):
        j += 1
    assert lines[i + 1] == "" and j > i + 4  # a header, a rule and at least one row
    return "\n".join(lines[i:j])


@pytest.fixture()
def finished_sweep(tmp_path):
    """A sweep directory as `ablate` leaves it (spec, database of done cells, claims.json/.md), with made-up metrics."""
    spec_path = tmp_path / "renderer.yaml"
    spec_path.write_text(SPEC)
    spec = load_sweep_spec(spec_path)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "spec.json").write_text(json.dumps(spec.model_dump(mode="json")))
    cells = expand(spec)
    store = ResultStore(Sweep(sweep).db_file)
    try:
        store.register((c.cell_id, c.train_key, c.axes) for c in cells)
        for c in cells:
            dim, seed = c.axes["model.latent_dim"], c.axes["seed"]
            psnr, ssim = (22.0, 0.9) if dim == 8 else (19.0, 0.8)
            psnr, ssim = psnr + 0.1 * seed + 0.01 * seed * seed * (dim == 4), ssim + 0.01 * seed - 0.002 * seed * seed * (dim == 4)
            store.finish(c.cell_id, {"psnr_db": psnr, "ssim": ssim, "continuous_psnr_db": psnr, "converged": True,
                                     "trained_steps": 100, "warnings": [], "fit_includes_test": False, "protocol": "p", "bits_per_image": None}, {}, 1.0)
        rows = store.rows()
    finally:
        store.close()
    from posthoc_vq.experiments.claims import make_claims

    claims = make_claims(rows, spec.compare) | {"sweep": spec.name, "n_cells": len(cells), "n_failed": 0, "ran_now": len(cells)}
    write_claims(sweep, claims, spec)
    return sweep, claims


def test_claims_md_and_the_sweep_report_come_from_one_renderer(finished_sweep, tmp_path, monkeypatch):
    sweep, claims = finished_sweep
    import posthoc_vq.experiments.claims as judge

    monkeypatch.setattr(judge, "make_claims", lambda *a, **k: pytest.fail("the report judged claims"))
    result = write_report(sweep, tmp_path / "out")
    claims_md, report_md = (sweep / "claims.md").read_text(), result["markdown"].read_text()
    tables = claims_tables(read_json(sweep / "claims.json"))
    assert {c["verdict"] for c in claims["claims"]} == {"validated"} and set(tables) == {"claims", "arms", "anova"}
    for table in tables.values():
        block = _table_block(claims_md, table.title)
        assert block == table_markdown(table).rstrip() == _table_block(report_md, table.title)
    shown = next(t for s in result["report"].sections for t in s.tables if t.key == "claims")
    assert shown.rows == tables["claims"].rows


def test_sweep_report_without_claims_json_names_the_command_and_judges_nothing(finished_sweep, tmp_path, monkeypatch):
    sweep, _ = finished_sweep
    (sweep / "claims.json").unlink()
    import posthoc_vq.experiments.claims as judge

    monkeypatch.setattr(judge, "make_claims", lambda *a, **k: pytest.fail("the report judged claims"))
    report = write_report(sweep, tmp_path / "out")["report"]
    missing = "\n".join(report.missing)
    assert f"{sweep / 'claims.json'} not found" in missing
    assert f"posthoc-vq ablate {sweep / 'spec.json'} --out {sweep}" in missing and "rewrites the claims" in missing
    assert not [t for s in report.sections for t in s.tables if t.key in ("claims", "arms", "anova")]
    assert "ablation.png" not in {f.file for f in report.figures}
