"""`posthoc-vq geometry RUN` on a small digits run: the JSON, the figure, and a clear error for a bad split."""

import json
import time

import pytest

from posthoc_vq.cli import main
from posthoc_vq.run import Run


@pytest.fixture(scope="module")
def digits_run(make_digits_run):
    return make_digits_run(epochs=2, name="geometry")


def test_geometry_cli_writes_json_and_figure(digits_run, capsys):
    tic = time.perf_counter()
    assert main(["geometry", str(digits_run), "--seed", "1"]) == 0
    seconds = time.perf_counter() - tic
    out = capsys.readouterr().out
    assert "TwoNN" in out and "d_eff" in out and "geometry-train.json" in out
    run = Run.open(digits_run)
    path = run.geometry_file("train")
    assert path.name == "geometry-train.json" and path.parent.name == "eval"
    r = json.loads(path.read_text())
    assert r["split"] == "train" and r["latents"] == "mu" and r["seed"] == 1
    n = r["n_vectors"]
    assert r["dim"] == r["intrinsic_dimension"]["ambient"] == 8
    assert r["samples"]["dimension"] == min(n, 5000) and r["samples"]["distortion"] == min(n, 20000)
    dims = r["intrinsic_dimension"]
    assert 0 < dims["twonn"] < 8 * 1.5 and 0 < dims["mle"] < 8 * 1.5
    d = r["distortion"]
    assert d["K"][0] == 16 and max(d["K"]) <= n // 4 and len(d["D"]) == len(d["K"])
    assert all(a > b for a, b in zip(d["D"], d["D"][1:]))  # more codes, less distortion
    assert d["slope"] < 0 and d["d_eff"] == pytest.approx(-2 / d["slope"])
    c = r["classes"]
    assert c["labels"] == list(range(10)) and sum(c["counts"]) == n and len(c["spread"]) == 10
    assert c["separation"] > 0 and c["fisher_ratio"] > 0
    k = r["connectivity"]
    assert len(k["k"]) == len(k["components"]) and k["components"][0] >= k["components"][-1]
    assert k["connected_k"] is None or k["components"][k["k"].index(k["connected_k"])] == 1
    figure = run.geometry_figure("train")
    assert figure.exists() and figure.read_bytes()[:4] == b"\x89PNG"
    print(f"geometry of a digits run ({n} train vectors): {seconds:.1f}s")


def test_geometry_cli_bad_split_is_a_clear_error(digits_run, capsys):
    assert main(["geometry", str(digits_run), "--split", "training"]) == 2
    err = capsys.readouterr().err
    assert "unknown split 'training'" in err
    assert not Run.open(digits_run).geometry_file("test").exists()
