"""Clean machine output on a small real sweep (digits, 2 trainings, 8 cells, seconds): `results`, `table`,
`evaluate` and `compress-table` as tidy CSV / JSON / Markdown, unwrapped at any terminal width (COLUMNS=40 in a
subprocess, so rich really sees a 40-column console); and --quiet / a deprecated alias on a real command."""

import csv
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from posthoc_vq.cli import main
from posthoc_vq.experiments import results_table, run_sweep
from posthoc_vq.io import read_json

SPEC = textwrap.dedent("""\
    name: machine-output
    base: digits
    set:
      model.channels: [8, 16]
      train.epochs: 2
      train.early_stopping: false
      quantize.K: 8
    axes:
      seed: [0, 1]
      quantize.method: [none, kmeans]
      weights.bits: [32, 8]
    compare: {axis: quantize.method, reference: none, metrics: [psnr_db], pair_by: seed}
    threads: 1
""")
RESULTS_NUMERIC = ("seed", "weights.bits", "attempts", "seconds", "psnr_db", "psnr_db_ci_low", "psnr_db_ci_high", "ssim", "mse",
                   "continuous_psnr_db", "bits_per_image", "compute_seconds", "optimizer_steps", "images_seen")
TABLE_NUMERIC = ("bits_per_image", "psnr_db", "psnr_db_ci_low", "psnr_db_ci_high", "ssim", "penalty_psnr_db", "codes_used", "n_codes",
                 "dead_codes", "entropy_nats", "entropy_bits", "perplexity", "graph_nodes", "graph_edges", "graph_components")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("machine-output")
    spec = root / "spec.yaml"
    spec.write_text(SPEC)
    claims = run_sweep(spec, root / "sweep", progress=False)
    assert claims["n_done"] == 8 and claims["n_failed"] == 0
    return root / "sweep"


@pytest.fixture(scope="module")
def run_with_codebook(sweep):
    """A trained run of the sweep with its continuous and k-means evaluations."""
    return next(p.parents[1] for p in sorted(sweep.glob("runs/*/eval/kmeans-*-test.json")))


def cli_at_40_columns(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "40", "LINES": "20", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "posthoc_vq.cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def tidy(text: str, numeric: tuple[str, ...]) -> list[dict[str, str]]:
    """Parse CSV with the csv module: every row as long as the header, numeric columns parse as numbers, no '-' placeholders."""
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    assert body and all(len(r) == len(header) for r in body), [len(r) for r in rows]
    records = [dict(zip(header, r)) for r in body]
    for col in numeric:
        assert col in header, col
        for r in records:
            if r[col] != "":
                float(r[col])  # a number, not "512 (fp32)" or "[19.70, 20.07]"
    assert not any(v.strip() in ("-", "nan") or v.startswith("[") for r in records for v in r.values())
    return records


def test_results_csv_is_tidy_and_unwrapped_at_40_columns(sweep):
    proc = cli_at_40_columns("results", sweep, "--format", "csv")
    rows = tidy(proc.stdout, RESULTS_NUMERIC)
    assert len(rows) == 8 and proc.stderr == ""
    assert {r["bits_per_image"] for r in rows if r["quantize.method"] == "none"} == {""}  # empty for missing
    assert {float(r["bits_per_image"]) for r in rows if r["quantize.method"] == "kmeans"} == {3.0}  # K=8: 3 bits per image
    for r in rows:
        assert float(r["psnr_db_ci_low"]) <= float(r["psnr_db"]) <= float(r["psnr_db_ci_high"])
        assert r["converged"] == "false" and r["warnings"] == "not_converged"


def test_results_json_and_markdown_are_raw_and_rectangular(sweep):
    rows = json.loads(cli_at_40_columns("results", sweep, "--format", "json").stdout)
    assert len(rows) == 8 and len({tuple(r) for r in rows}) == 1  # every row has every key
    assert all(r["bits_per_image"] is None for r in rows if r["quantize.method"] == "none")
    lines = cli_at_40_columns("results", sweep, "--format", "markdown").stdout.splitlines()
    assert len(lines) == 2 + 8 and len({line.count("|") for line in lines}) == 1 and max(map(len, lines)) > 40


def test_results_table_carries_every_stored_metric(sweep):
    rows = results_table(sweep)
    with sqlite3.connect(sweep / "results.sqlite") as conn:
        stored = {cid: json.loads(m) for cid, m in conn.execute("SELECT cell_id, metrics FROM jobs")}
    for r in rows:
        m = stored[r["cell_id"]]
        for key, value in m.items():
            if key == "psnr_db_ci":
                assert [r["psnr_db_ci_low"], r["psnr_db_ci_high"]] == value
            else:
                assert r[key] == value, key
    assert {"mse", "bits_per_image", "compute_seconds", "ssim", "continuous_psnr_db", "psnr_db_ci_low"} <= set(rows[0])
    assert all(isinstance(r["mse"], float) and r["mse"] > 0 for r in rows) and rows[0]["error"] is None


def test_table_csv_is_tidy_and_matches_the_file_it_writes(run_with_codebook):
    proc = cli_at_40_columns("table", run_with_codebook, "--format", "csv")
    rows = tidy(proc.stdout, TABLE_NUMERIC)
    continuous, kmeans = rows
    latent_dim = read_json(run_with_codebook / "config.json")["model"]["latent_dim"]
    assert continuous["bits_label"] == "fp32" and int(continuous["bits_per_image"]) == 32 * latent_dim
    assert kmeans["codebook"].startswith("kmeans-K8") and float(kmeans["bits_per_image"]) == 3.0 and kmeans["bits_label"] == ""
    assert (run_with_codebook / "report" / "codebooks-test.csv").read_text() == proc.stdout
    assert "wrote" in proc.stderr  # notes go to stderr, stdout holds the table only
    human = cli_at_40_columns("table", run_with_codebook).stdout  # the Markdown, unwrapped: one line per table row
    table_lines = [line for line in human.splitlines() if line.startswith("|")]
    assert len(table_lines) == 4 and len({line.count("|") for line in table_lines}) == 1 and f"{32 * latent_dim} (fp32)" in human


def test_evaluate_csv_is_one_long_table(run_with_codebook):
    book = next(run_with_codebook.glob("codebooks/*")).name
    rows = tidy(cli_at_40_columns("evaluate", run_with_codebook, "--codebook", book, "--format", "csv").stdout, ("value", "ci_low", "ci_high", "std", "n"))
    by = {(r["model"], r["reference"], r["metric"]): r for r in rows}
    psnr = by[book, "ground truth", "psnr_db"]
    assert float(psnr["ci_low"]) <= float(psnr["value"]) <= float(psnr["ci_high"])
    stored = read_json(run_with_codebook / "eval" / f"{book}-test.json")
    assert float(psnr["value"]) == stored["quantized"]["psnr_db"]["mean"]
    assert float(by[book, "", "bits_per_image"]["value"]) == stored["bits_per_image"]
    assert {("continuous (mu)", "ground truth", m) for m in ("mse", "psnr_db", "ssim")} <= set(by)


def test_compress_table_csv_to_a_file(run_with_codebook, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_with_codebook, run)
    out = tmp_path / "table.csv"
    assert main(["compress-table", str(run), "--bits", "32,8", "--out", str(tmp_path / "c"), "--format", "csv", "-o", str(out)]) == 0
    assert capsys.readouterr().out == ""  # the table went to the file
    rows = tidy(out.read_text(), ("latent_dim", "parameters", "weight_bits", "file_bytes", "ratio_own", "compound_factor", "psnr_db",
                                  "psnr_db_ci_low", "psnr_db_ci_high", "ssim", "psnr_change_db", "psnr_change_db_ci_low", "psnr_change_db_ci_high"))
    assert [int(r["weight_bits"]) for r in rows] == [32, 8] and rows[0]["psnr_change_db"] == "" and rows[1]["psnr_change_db"] != ""
    assert float(rows[0]["ratio_own"]) == 1.0 and 0 < float(rows[1]["ratio_own"]) < 1 and rows[0]["converged"] == "false"
    assert (tmp_path / "c" / "compression-test.csv").read_text() == out.read_text()


def test_quiet_real_command_prints_nothing_and_the_old_flag_still_works(run_with_codebook, tmp_path, capfd):
    run = tmp_path / "run"
    shutil.copytree(run_with_codebook, run)
    assert main(["quantize", str(run), "--method", "kmeans", "--K", "4", "--name", "loud"]) == 0
    assert "saved" in capfd.readouterr().out  # without --quiet it reports
    assert main(["quantize", str(run), "--method", "kmeans", "--K", "4", "--name", "quiet", "--quiet"]) == 0
    assert capfd.readouterr() == ("", "")
    assert main(["-q", "quantize", str(run), "--method", "residual", "--K", "4", "--stages", "2", "--name", "old-flag"]) == 0
    out, err = capfd.readouterr()
    assert out == "" and err == "posthoc-vq: --stages is deprecated; use --n-stages\n"
    assert read_json(Path(run) / "codebooks" / "old-flag" / "codebook.json")["quantize"]["n_stages"] == 2
