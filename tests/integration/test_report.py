"""`posthoc-vq report` on a real tiny digits run and on the smoke sweep: contents checked against the run's own files
and independent recomputations of the stored sample sets; missing pieces give "missing" notes; a bad path gives a clear error.

``built_digits_run``, ``built_smoke_sweep`` and ``built_report`` build once per test session (cached under pytest's
base temp folder) and are shared with test_report_browser.py.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.sparse.csgraph import connected_components

from posthoc_vq.cli import main
from posthoc_vq.config import QuantizeConfig, WeightsConfig, configs_root, load_run_config
from posthoc_vq.errors import PosthocVQError
from posthoc_vq.evaluation.codebook import evaluate_codebook
from posthoc_vq.evaluation.reconstruction import evaluate_continuous, split_images
from posthoc_vq.evaluation.samples import fixed_indices, write_samples
from posthoc_vq.evaluation.weights import evaluate_weights
from posthoc_vq.experiments import run_sweep
from posthoc_vq.io import read_json
from posthoc_vq.latents import load_run_splits
from posthoc_vq.quantize.codebooks import fit_codebook_for_run, open_codebook
from posthoc_vq.quantize.compressed import compress_run
from posthoc_vq.report.build import detect, write_report
from posthoc_vq.report.codebook_figures import view_from_samples
from posthoc_vq.report.run_report import read_run, reconstruction_rows
from posthoc_vq.train import load_model, train

BOOKS = ("kmeans-K16-mu-train", "geodesic-K16-mu-train-k10")
ONE_SEED = """name: one-seed
base: digits
set: {model.channels: [8, 16], train.epochs: 40, train.patience: 2, train.min_delta: 0.5}
axes:
  model.latent_dim: [8, 4]
  seed: [0]
  weights.bits: [32]
  quantize.method: [none]
compare: {axis: model.latent_dim, reference: 8, metrics: [psnr_db], pair_by: seed}
threads: 1
"""


def built_digits_run(tmp_path_factory):
    """A digits VAE (3 epochs, no early stopping: not converged) with a k-means and a geodesic codebook and INT8 weights, all evaluated,
    with the sample sets the evaluating commands store (as `posthoc-vq evaluate` and `compress-weights` do)."""
    run = tmp_path_factory.getbasetemp() / "report-digits-run"
    if (run / "ready").exists():
        return run
    shutil.rmtree(run, ignore_errors=True)
    config = load_run_config("digits", ["model.latent_dim=8", "model.channels=[16,32]", "train.epochs=3", "train.early_stopping=false"])
    train(config, run, progress=False)
    evaluate_continuous(run)
    write_samples(run)
    for q in (QuantizeConfig(method="kmeans", K=16), QuantizeConfig(method="geodesic", K=16, n_neighbors=10)):
        name, _, _ = fit_codebook_for_run(run, q)
        evaluate_codebook(run, name)
        write_samples(run, codebook=name)
    name, _ = compress_run(run, WeightsConfig(bits=8))
    evaluate_weights(run, name)
    write_samples(run, weights=name)
    evaluate_weights(run, name, codebook=BOOKS[0])
    (run / "ready").write_text("ok")
    return run


def built_smoke_sweep(tmp_path_factory):
    """The packaged spec smoke.yaml run to completion (digits, 2 latent sizes x 3 seeds x fp32/INT8 x none/k-means)."""
    sweep = tmp_path_factory.getbasetemp() / "report-smoke-sweep"
    if not (sweep / "claims.json").exists():
        run_sweep(configs_root() / "ablations" / "smoke.yaml", sweep, progress=False)
    return sweep


_REPORTS: dict = {}


def built_report(tmp_path_factory, kind: str):
    """(source directory, write_report result) of the digits run (``kind='run'``) or the smoke sweep, written once per session."""
    out = tmp_path_factory.getbasetemp() / f"report-{kind}-out"
    if out not in _REPORTS:
        source = built_digits_run(tmp_path_factory) if kind == "run" else built_smoke_sweep(tmp_path_factory)
        _REPORTS[out] = source, write_report(source, out)
    return _REPORTS[out]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return built_digits_run(tmp_path_factory)


@pytest.fixture(scope="module")
def run_report(tmp_path_factory):
    return built_report(tmp_path_factory, "run")[1]


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory):
    return built_report(tmp_path_factory, "sweep")


def section(report, key):
    return next(s for s in report.sections if s.key == key)


def test_run_report_has_every_section_and_valid_figures(run, run_report):
    report = run_report["report"]
    assert report.kind == "run" and detect(run) == "run"
    assert [s.key for s in report.sections] == ["training", "reconstructions", "codebooks", "interpolation", "rate-distortion", "tables", "claims"]
    files = {f.file for f in report.figures}
    assert files == {"training-curves.png", "reconstructions.png", "interpolation.png", "rate-distortion.png"} | {f"codebook-{b}.png" for b in BOOKS}
    for f in report.figures:
        with Image.open(run_report["markdown"].parent / f.file) as im:
            assert im.format == "PNG" and min(im.size) > 100
    assert report.missing == []  # everything a run can have is there
    header = dict(report.header)
    assert header["parameters"] == f"{read_json(run / 'model.json')['num_parameters']:,}"
    assert header["dataset"].startswith("digits") and header["fit set"] == "train" and header["latent choice"] == "mu"
    assert header["git commit"] == read_json(run / "provenance.json")["git_commit"]
    md = run_report["markdown"].read_text()
    for f in files:
        assert f"]({f})" in md
    tables = {t.key: t for t in section(report, "tables").tables}
    assert [r["codebook"] for r in tables["study"].rows] == ["-", *sorted(BOOKS)]
    rows = tables["compression"].rows
    assert [r["run"] for r in rows] == ["fp32", "int8-channel-sym", f"int8-channel-sym + {BOOKS[0]}"]
    plain = read_json(run / "eval" / "weights-int8-channel-sym-test.json")
    with_book = read_json(run / "eval" / f"weights-int8-channel-sym@{BOOKS[0]}-test.json")["with_codebook"]
    assert rows[2]["file bytes"] == rows[1]["file bytes"] == f"{plain['size']['packed_file_bytes']:,}"
    assert rows[1]["PSNR (dB)"] == f"{plain['quantized']['psnr_db']['mean']:.2f}"
    assert rows[2]["PSNR (dB)"] == f"{with_book['quantized']['psnr_db']['mean']:.2f}"
    assert rows[0]["PSNR (dB)"] == f"{read_json(run / 'eval' / 'continuous-test.json')['continuous']['psnr_db']['mean']:.2f}"


def test_limitations_are_written_from_the_data(run_report):
    items = section(run_report["report"], "claims").items
    text = "\n".join(items)
    assert "Not trained to convergence" in text and "3 epochs" in text  # no early stopping: stopped at the epoch limit
    assert "No evaluated codebook saw the test split" in text
    assert "One training seed (0)" in text
    assert "`not_converged`" in text  # the audit's warning, named with the results it fired in


def test_reconstruction_rows_match_an_independent_decode(run):
    """The grid's stored rows are the model's own outputs: recomputed here with torch.cdist for the k-means code lookup."""
    rf = read_run(run)
    labels = np.asarray(load_run_splits(run).split("test").labels)
    idx = fixed_indices(labels)
    assert rf.samples.idx == list(idx) and rf.samples.labels == [int(labels[i]) for i in idx]
    assert [int(labels[i]) for i in idx] == list(range(8)) and all(np.flatnonzero(labels == c)[0] == i for c, i in enumerate(idx))
    rows = reconstruction_rows(rf)
    assert [r.label.split("\n")[0] for r in rows] == ["continuous (mu)", *sorted(BOOKS), "weights int8-channel-sym"]
    model, _ = load_model(run)
    codebook, _ = open_codebook(run, "kmeans-K16-mu-train")
    x = split_images(load_run_splits(run), "test")[idx]
    torch.testing.assert_close(rf.samples.continuous["ground_truth"], x)
    with torch.no_grad():
        mu = model.encode(x).mu
        centres = torch.from_numpy(codebook.codebook_)
        torch.testing.assert_close(rows[0].images, model.decode(mu), atol=1e-5, rtol=0)
        kmeans_row = [r for r in rows if r.label.startswith("kmeans")][0]
        torch.testing.assert_close(kmeans_row.images, model.decode(centres[torch.cdist(mu, centres).argmin(1)]), atol=1e-5, rtol=0)


def test_codebook_counts_agree_with_the_stored_evaluation(run):
    """The stored code counts of the test split must equal the evaluation's used/dead/per-class numbers, and the geodesic
    graph's stored degrees and components must equal the statistics stored when it was fitted (scipy as reference)."""
    rf = read_run(run)
    assert sorted(rf.samples.codebooks) == sorted(BOOKS)
    for name, samples in rf.samples.codebooks.items():
        meta = rf.codebooks[name]
        view = view_from_samples(name, meta, samples, "test")
        usage = read_json(run / "eval" / f"{name}-test.json")["usage"]["test"]
        assert view.counts.sum() == usage["n_vectors"] == len(load_run_splits(run).split("test").labels)
        assert view.dead == [usage["dead"]] and int((view.counts[0] > 0).sum()) == usage["used"]
        for c, stats in usage["per_class"]["classes"].items():
            assert int((view.class_counts[:, int(c)] > 0).sum()) == stats["used"]
            assert int(view.class_counts[:, int(c)].sum()) == stats["n_vectors"]
        if meta["method"] == "geodesic":
            g = meta["graph"]
            codebook, _ = open_codebook(run, name)
            assert (view.degrees.min(), view.degrees.max()) == (g["degree_min"], g["degree_max"])
            assert view.degrees.mean() == pytest.approx(g["degree_mean"])
            assert len(view.component_sizes) == g["components"] == connected_components(codebook.graph_.adjacency, directed=False)[0]
            assert view.component_sizes.sum() == g["nodes"]
        else:
            assert view.degrees is None


def test_run_without_codebooks_or_evaluations_says_what_is_missing(run, tmp_path):
    bare = tmp_path / "bare-run"
    shutil.copytree(run, bare, ignore=shutil.ignore_patterns("codebooks", "eval", "weights", "latents", "ready"))
    result = write_report(bare, tmp_path / "out")
    report = result["report"]
    missing = "\n".join(report.missing)
    assert "no codebook in" in missing and f"posthoc-vq quantize {bare}" in missing
    assert "no INT8/INT4 weights" in missing
    assert f"posthoc-vq evaluate {bare}" in missing  # tables, rate-distortion and the stored samples need the evaluation
    assert "no decoded samples of the continuous model" in missing  # the report decodes nothing itself
    assert {f.file for f in report.figures} == {"training-curves.png"}
    md = result["markdown"].read_text()
    assert md.count("> **Missing:**") == len(report.missing)
    assert "Missing:" in result["html"].read_text()


def test_sweep_report_contents(sweep_report):
    sweep, result = sweep_report
    report = result["report"]
    assert report.kind == "sweep" and detect(sweep) == "sweep"
    assert [s.key for s in report.sections] == ["training", "ablation", "rate-distortion", "reconstructions", "codebooks", "interpolation", "tables", "claims"]
    assert {"training-curves.png", "ablation.png", "rate-distortion.png", "reconstructions.png", "interpolation.png"} <= {f.file for f in report.figures}
    assert report.missing == []
    claims = read_json(sweep / "claims.json")
    table = next(t for t in section(report, "claims").tables if t.key == "claims")
    assert [(r["arm"], r["metric"], r["verdict"], r["reason"]) for r in table.rows] == [(c["arm"], c["metric"], c["verdict"], c["reason"]) for c in claims["claims"]]
    runs = next(t for t in section(report, "training").tables if t.key == "runs")
    assert len(runs.rows) == 6 and {r["arm"] for r in runs.rows} == {"model.latent_dim=8", "model.latent_dim=4"}
    items = "\n".join(section(report, "claims").items)
    assert "Seeds per arm: model.latent_dim=8: 3 (0, 1, 2), model.latent_dim=4: 3 (0, 1, 2)." in items
    assert "No audit warning fired in any cell" in items and "No codebook saw the test split" in items
    assert dict(report.header)["seeds"] == "0, 1, 2"


def test_one_seed_sweep_and_missing_claims_file(tmp_path):
    spec = tmp_path / "one-seed.yaml"
    spec.write_text(ONE_SEED)
    sweep = tmp_path / "sweep"
    run_sweep(spec, sweep, progress=False)
    report = write_report(sweep, tmp_path / "out")["report"]
    verdicts = {r["verdict"] for t in section(report, "claims").tables for r in t.rows}
    assert verdicts == {"insufficient evidence"}
    missing = "\n".join(report.missing)
    assert "one observation per arm" in missing and "no rate-distortion points" in missing and "no codebook in" in missing
    assert "with one seed there is no spread across training runs" in "\n".join(section(report, "claims").items)
    (sweep / "claims.json").unlink()  # an interrupted sweep: the report judges nothing, it says how to get the claims
    again = write_report(sweep, tmp_path / "out2")["report"]
    missing = "\n".join(again.missing)
    assert "claims.json not found" in missing and f"posthoc-vq ablate {sweep / 'spec.json'} --out {sweep}" in missing
    assert section(again, "claims").tables == [] and "ablation.png" not in {f.file for f in again.figures}


def test_bad_paths_give_clear_errors(tmp_path, capsys):
    with pytest.raises(PosthocVQError, match="does not exist"):
        write_report(tmp_path / "no-such-run", tmp_path / "out")
    assert main(["report", str(tmp_path / "no-such-run"), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(PosthocVQError, match="neither a run directory"):
        write_report(tmp_path / "empty", tmp_path / "out")


def test_cli_writes_both_files_and_nothing_into_the_run(run, tmp_path, capsys):
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    assert main(["report", str(run), "--out", str(tmp_path), "--no-progress"]) == 0
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before
    out = capsys.readouterr().out
    assert re.search(r"run report: 7 sections, 6 figures", out)
    html = (tmp_path / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 6 and "http://" not in html and "https://" not in html and "<script" not in html
