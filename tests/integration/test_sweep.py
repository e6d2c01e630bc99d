"""The smoke sweep for real: killed and resumed, and identical under the local, process and Ray executors."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from posthoc_vq.cli import main
from posthoc_vq.config import configs_root
import posthoc_vq
from posthoc_vq.experiments import run_sweep
from posthoc_vq.experiments.spec import expand, load_sweep_spec

SMOKE = configs_root() / "ablations" / "smoke.yaml"
METRICS = ("psnr_db", "ssim", "mse", "continuous_psnr_db", "converged", "epochs")


def _done(db):
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM jobs WHERE status='done'").fetchone()[0]


def _metrics(sweep):
    with sqlite3.connect(sweep / "results.sqlite") as conn:
        rows = conn.execute("SELECT cell_id, status, metrics FROM jobs").fetchall()
    import json

    return {cid: (status, {k: json.loads(m)[k] for k in METRICS}) for cid, status, m in rows}


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """A local sweep SIGKILLed once some cells are done, then re-run to completion."""
    sweep = tmp_path_factory.mktemp("sweeps") / "local"
    cmd = [sys.executable, "-m", "posthoc_vq.cli", "ablate", str(SMOKE), "--out", str(sweep), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    deadline = time.time() + 300
    while _done(sweep / "results.sqlite") < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _done(sweep / "results.sqlite")
    assert 4 <= before < 24
    claims = posthoc_vq.ablate(SMOKE, sweep, progress=False)  # run_sweep, then claims.json and claims.md
    return sweep, before, claims


def test_killed_sweep_resumes_to_exactly_the_full_result_set(killed_and_resumed):
    sweep, before, claims = killed_and_resumed
    cells = {c.cell_id for c in expand(load_sweep_spec(SMOKE))}
    got = _metrics(sweep)
    assert set(got) == cells and len(got) == 24  # no cell missing, none twice (cell_id is the primary key)
    assert all(status == "done" for status, _ in got.values())
    assert claims["ran_now"] == 24 - before and claims["n_done"] == 24
    assert (sweep / "claims.md").exists() and claims["counts"]["invalid"] == 0
    # a third run has nothing left to do
    again = run_sweep(SMOKE, sweep, progress=False)
    assert again["ran_now"] == 0 and again["claims"] == claims["claims"]


@pytest.mark.parametrize("executor", ["process", "ray"])
def test_executors_give_identical_metrics(killed_and_resumed, executor, tmp_path):
    reference = _metrics(killed_and_resumed[0])
    sweep = tmp_path / executor
    assert main(["ablate", str(SMOKE), "--out", str(sweep), "--executor", executor, "--workers", "2", "--no-progress"]) == 0
    assert _metrics(sweep) == reference


def test_results_query(killed_and_resumed, capsys):
    sweep = killed_and_resumed[0]
    assert main(["results", str(sweep), "--where", "model.latent_dim=4", "--where", "weights.bits=8", "--format", "json"]) == 0
    import json

    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 6 and {r["model.latent_dim"] for r in rows} == {4} and {r["weights.bits"] for r in rows} == {8}
    assert main(["results", str(sweep), "--where", "latent=4"]) == 2
    assert "unknown key 'latent'" in capsys.readouterr().err


def test_offline_fd_is_a_sweep_metric(tmp_path):
    """FD/KID from a domain feature network can be compared like PSNR, in every cell: fp32 and weight-quantized."""
    import json

    import yaml

    from posthoc_vq.evaluation.perceptual import train_feature_net

    features = tmp_path / "features"
    train_feature_net("digits", features, epochs=2, seed=0, progress=False)
    spec = yaml.safe_load(SMOKE.read_text())
    spec["axes"] = {"model.latent_dim": [8, 4], "seed": [0, 1, 2], "weights.bits": [32, 8]}
    spec["compare"]["metrics"] = ["fd", "kid"]
    spec["features"] = str(features)
    path = tmp_path / "fd.yaml"
    path.write_text(yaml.safe_dump(spec))
    claims = run_sweep(path, tmp_path / "sweep", progress=False)
    rows = _metrics_raw(tmp_path / "sweep")
    for axes, m in rows:
        run_dir = next(p for p in (tmp_path / "sweep" / "runs").iterdir() if json.loads((p / "config.json").read_text())["seed"] == axes["seed"]
                       and json.loads((p / "config.json").read_text())["model"]["latent_dim"] == axes["model.latent_dim"])
        what = "continuous" if axes["weights.bits"] == 32 else "weights-int8-channel-sym"
        recorded = json.loads((run_dir / "eval" / f"perceptual-{what}-test.json").read_text())["sets"]["reconstruction"]
        assert m["fd"] == recorded["fd"] > 0 and m["kid"] == recorded["kid"]["mean"]
    fd_claims = [c for c in claims["claims"] if c["metric"] == "fd"]
    assert sorted(c["slice"]["weights.bits"] for c in fd_claims) == ["32", "8"] and all(c["n_arm"] == 3 for c in fd_claims)


def _metrics_raw(sweep):
    import json

    with sqlite3.connect(sweep / "results.sqlite") as conn:
        return [(json.loads(a), json.loads(m)) for a, m in conn.execute("SELECT axes, metrics FROM jobs WHERE status='done'")]
