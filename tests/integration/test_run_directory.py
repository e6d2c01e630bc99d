"""The run directory has one owner (posthoc_vq.run): confined names, locks, atomic artifacts, validated files.

Each test here reproduces a way a user destroyed or falsified a result before run.py existed.
"""

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from posthoc_vq.cli import main
from posthoc_vq.config import QuantizeConfig
from posthoc_vq.errors import CheckpointError, ConfigError, LockedError
from posthoc_vq.io import sha256_file
from posthoc_vq.latents import run_latents
from posthoc_vq.locking import folder_lock
from posthoc_vq.quantize.codebooks import fit_codebook_for_run, open_codebook
from posthoc_vq.quantize.latent.store import load_codebook
from posthoc_vq.run import Run, check_name


@pytest.fixture(scope="module")
def trained(make_digits_run):
    return make_digits_run(epochs=2, name="owner")


@pytest.fixture
def run_copy(trained, tmp_path):
    """A private copy of the trained run (tests that damage files work on it)."""
    dst = tmp_path / "run"
    shutil.copytree(trained, dst)
    return dst


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


# ----------------------------------------------------------------------------- confined names


@pytest.mark.parametrize("name", ["../model", "/tmp/abs-codebook", "../../x", ".", "..", "", "a/b", "x.tmp-1", "model.json"])
def test_quantize_name_that_leaves_the_run_is_refused_before_any_work(run_copy, name, capsys):
    before = _digest(run_copy)
    assert main(["quantize", str(run_copy), "--method", "kmeans", "--K", "8", "--name", name]) == 2
    assert "invalid codebook name" in capsys.readouterr().err
    assert _digest(run_copy) == before  # nothing written, the model untouched
    assert not Path("/tmp/abs-codebook").exists()


@pytest.mark.parametrize("name", ["../model", "/tmp/abs-weights", "../../x"])
def test_compress_weights_name_that_leaves_the_run_is_refused(run_copy, name, capsys):
    before = _digest(run_copy)
    assert main(["compress-weights", str(run_copy), "--bits", "8", "--name", name, "--no-eval"]) == 2
    assert "invalid weights name" in capsys.readouterr().err
    assert _digest(run_copy) == before


def test_sweep_spec_name_is_confined(tmp_path):
    from posthoc_vq.experiments.spec import load_sweep_spec

    spec = tmp_path / "bad.yaml"
    spec.write_text("name: ../../escape\nbase: digits\naxes: {seed: [0]}\ncompare: {axis: seed, metrics: [psnr_db]}\n")
    with pytest.raises(ConfigError, match="invalid sweep name '../../escape'"):
        load_sweep_spec(spec)


def test_codebook_names_that_collide_with_result_files_are_reserved(run_copy):
    for name in ("continuous", "weights-int8", "perceptual-x"):
        with pytest.raises(ConfigError, match="invalid codebook name"):
            fit_codebook_for_run(run_copy, QuantizeConfig(K=8, name=name))


def test_valid_names_pass_the_pattern():
    for name in ("kmeans-K1024-mu-train", "int4-g32-sym", "a", "x_1.2+3", "A" * 100):
        assert check_name(name) == name
    with pytest.raises(ConfigError):
        check_name("A" * 101)


def test_latest_pointer_outside_the_run_is_refused(run_copy, tmp_path):
    other = tmp_path / "other-run" / "checkpoints" / "epoch-0001"
    shutil.copytree(run_copy / "checkpoints" / "epoch-0002", other)
    (run_copy / "checkpoints" / "latest.json").write_text(json.dumps({"checkpoint": "../../other-run/checkpoints/epoch-0001", "epoch": 1}))
    with pytest.raises(CheckpointError, match="latest.json is not a valid checkpoint pointer: checkpoint"):
        Run.open(run_copy).latest_checkpoint()
    assert main(["train", "--out", str(run_copy), "--resume", "--set", "train.epochs=3", "--no-progress"]) == 1  # a damaged run: failed work


def test_every_path_a_run_makes_is_checked_to_lie_inside_it(run_copy):
    run = Run.open(run_copy)
    with pytest.raises(CheckpointError, match="outside the run directory"):
        run.inside(run_copy / ".." / "elsewhere.json")
    link = run_copy / "eval"
    link.parent.mkdir(exist_ok=True)
    shutil.rmtree(link, ignore_errors=True)
    link.symlink_to(run_copy.parent)  # eval/ is a link out of the run: writing through it is refused
    with pytest.raises(CheckpointError, match="outside the run directory"):
        run.eval_file("test")


# ----------------------------------------------------------------------------- model checks


def test_quantize_fails_when_the_model_file_is_missing_even_with_cached_latents(run_copy, capsys):
    run_latents(run_copy, "train")  # cache the latents
    (run_copy / "model.safetensors").unlink()
    assert main(["quantize", str(run_copy), "--method", "kmeans", "--K", "8"]) == 1  # a CheckpointError: failed work
    assert "model.safetensors not found" in capsys.readouterr().err
    assert not (run_copy / "codebooks").exists() or Run(run_copy).codebook_names() == []


def test_quantize_fails_when_the_model_file_is_corrupt_even_with_cached_latents(run_copy, capsys):
    run_latents(run_copy, "train")
    data = bytearray((run_copy / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (run_copy / "model.safetensors").write_bytes(bytes(data))
    assert main(["quantize", str(run_copy), "--method", "kmeans", "--K", "8"]) == 1
    assert "model.safetensors is corrupt or was modified" in capsys.readouterr().err


def test_removing_the_checksum_does_not_disable_the_model_check(run_copy, capsys):
    meta = json.loads((run_copy / "model.json").read_text())
    del meta["sha256"]
    (run_copy / "model.json").write_text(json.dumps(meta))
    assert main(["quantize", str(run_copy), "--method", "kmeans", "--K", "8"]) == 1
    err = capsys.readouterr().err
    assert "model.json is not a valid model record: sha256: Field required" in err.replace("\n", " ")


# ----------------------------------------------------------------------------- wrongly shaped JSON


@pytest.mark.parametrize("content", ["[]", "null", "42", '"text"'])
@pytest.mark.parametrize("target", ["model.json", "config.json", "codebook", "state.json", "latest.json"])
def test_valid_json_of_the_wrong_shape_is_a_one_line_error_naming_the_file(run_copy, target, content):
    run = Run.open(run_copy)
    if target == "codebook":
        fit_codebook_for_run(run_copy, QuantizeConfig(K=8))
        path = run.codebook_files("kmeans-K8-mu-train")[1]
        call = lambda: open_codebook(run_copy, "kmeans-K8-mu-train")  # noqa: E731
    elif target == "state.json":
        from posthoc_vq.train import train

        path = run.latest_checkpoint() / "state.json"
        call = lambda: train(run.config(), run_copy, resume=True, progress=False)  # noqa: E731
    elif target == "latest.json":
        path = run.latest_file
        call = run.latest_checkpoint
    else:
        path = run_copy / target
        call = (lambda: run.load_model()) if target == "model.json" else run.config
    path.write_text(content)
    with pytest.raises(CheckpointError) as err:
        call()
    message = str(err.value)
    assert str(path) in message and "is not a valid" in message and "\n" not in message


# ----------------------------------------------------------------------------- locks


def _hold_lock(folder: str, ready, release) -> None:
    with folder_lock(folder, "test-holder"):
        ready.set()
        release.wait(60)


@pytest.fixture
def held(tmp_path):
    """Hold a folder's writer lock in another process for the duration of a test."""
    ctx = mp.get_context("spawn")
    holders = []

    def hold(folder):
        ready, release = ctx.Event(), ctx.Event()
        proc = ctx.Process(target=_hold_lock, args=(str(folder), ready, release))
        proc.start()
        assert ready.wait(60)
        holders.append((proc, release))
        return proc.pid

    yield hold
    for proc, release in holders:
        release.set()
        proc.join(30)


def test_second_writer_of_a_run_fails_at_once_naming_the_holder(run_copy, held, capsys):
    pid = held(run_copy)
    tic = time.perf_counter()
    for argv in (["quantize", str(run_copy), "--K", "8"], ["compress-weights", str(run_copy), "--bits", "8"], ["evaluate", str(run_copy)],
                 ["train", "--out", str(run_copy), "--resume", "--set", "train.epochs=3", "--no-progress"], ["export", str(run_copy)]):
        assert main(argv) == 1  # a LockedError: the command is right, the work cannot run now
        err = capsys.readouterr().err.replace("\n", " ")
        assert f"is being written by pid {pid}" in err, argv
    assert time.perf_counter() - tic < 30  # failed at once, did not wait


def test_two_fresh_trainings_into_one_folder_do_not_both_start(tmp_path, held, capsys):
    out = tmp_path / "fresh"
    pid = held(out)
    assert main(["train", "--preset", "digits", "--out", str(out), "--set", "train.epochs=1", "--no-progress"]) == 1
    assert f"pid {pid}" in capsys.readouterr().err.replace("\n", " ")
    assert not (out / "config.json").exists()


def test_readers_need_no_lock(run_copy, held):
    held(run_copy)
    run = Run.open(run_copy)
    model, meta = run.load_model()
    assert run.config().data.name == "digits" and meta["sha256"] == run.verified_model_sha256() and run.summary()["epochs"] == 2


def test_stale_temp_files_of_a_killed_writer_are_removed_on_the_next_write(run_copy):
    (run_copy / "codebooks" / ".tmp-kmeans-K8-mu-train-99999").mkdir(parents=True)
    (run_copy / "eval").mkdir(exist_ok=True)
    (run_copy / "eval" / "continuous-test.json.tmp-99999").write_text("{")
    fit_codebook_for_run(run_copy, QuantizeConfig(K=8))
    assert not list(run_copy.rglob("*.tmp-*")) and Run(run_copy).codebook_names() == ["kmeans-K8-mu-train"]


# ----------------------------------------------------------------------------- concurrent writers, many times


def _writer(run_dir: str, seed: int, rounds: int, out) -> None:
    import torch

    torch.set_num_threads(1)
    from posthoc_vq.config import WeightsConfig
    from posthoc_vq.quantize.compressed import compress_run

    wins = locked = 0
    for i in range(rounds):
        while True:  # a refused writer fails at once; it waits a moment and tries again
            try:
                if i % 4 == 3:
                    compress_run(run_dir, WeightsConfig(bits=4 if seed % 2 else 8, name="shared-weights"))
                else:
                    fit_codebook_for_run(run_dir, QuantizeConfig(K=8, random_state=seed * 1000 + i, max_iter=5, threads=1, name="shared"))
                wins += 1
                break
            except LockedError:
                locked += 1
                time.sleep(0.002)
    out.put((seed, wins, locked))


def test_two_concurrent_writers_hundreds_of_times_leave_every_artifact_pair_consistent(run_copy):
    run_latents(run_copy, "train")  # both writers reuse it; neither may see it half-written
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(run_copy), s, 150, out)) for s in (1, 2)]
    for p in procs:
        p.start()
    checks = 0
    while any(p.is_alive() for p in procs):  # a reader without the lock, all the while
        for name in Run(run_copy).codebook_names():
            try:
                load_codebook(run_copy / "codebooks" / name)  # checks sha256 and shapes of the pair
                checks += 1
            except CheckpointError as err:
                if "not found" not in str(err):  # the instant between the two renames of a replacement
                    raise
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    results = [out.get(timeout=10) for _ in procs]
    assert [w for _, w, _ in results] == [150, 150] and sum(lk for _, _, lk in results) > 0  # 300 writes, and the writers did collide
    est, meta = load_codebook(run_copy / "codebooks" / "shared")
    assert est.n_codes == 8 and meta["sha256"] == sha256_file(run_copy / "codebooks" / "shared" / "codebook.safetensors")
    record = json.loads((run_copy / "weights" / "shared-weights" / "weights.json").read_text())
    assert record["sha256"] == sha256_file(run_copy / "weights" / "shared-weights" / "weights.safetensors")
    assert not list(run_copy.rglob("*.tmp-*"))
    assert checks > 0


TINY_SWEEP = textwrap.dedent("""\
    name: tiny-locks
    base: digits
    set:
      model.channels: [8, 16]
      model.latent_dim: 4
      train.epochs: 40  # long enough that the second driver, starting a Python, meets the first one still running
      train.early_stopping: false
      quantize.K: 8
    axes:
      seed: [0, 1]
      quantize.method: [none, kmeans]
    compare:
      axis: quantize.method
      reference: none
      metrics: [psnr_db]
      pair_by: seed
    threads: 1
""")


def _sweep_metrics(sweep: Path) -> dict:
    import sqlite3

    with sqlite3.connect(sweep / "results.sqlite") as conn:
        rows = conn.execute("SELECT cell_id, status, metrics FROM jobs").fetchall()
    return {cid: (status, {k: json.loads(m)[k] for k in ("psnr_db", "ssim", "continuous_psnr_db")}) for cid, status, m in rows}


def test_two_concurrent_ablate_drivers_one_fails_at_once_and_done_cells_equal_a_single_writer(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SWEEP)
    single, shared = tmp_path / "single", tmp_path / "shared"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    cmd = lambda out: [sys.executable, "-m", "posthoc_vq.cli", "ablate", str(spec), "--out", str(out), "--no-progress"]  # noqa: E731
    a = subprocess.Popen(cmd(shared), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    while not (shared / ".lock").exists() or not (shared / ".lock").read_text():
        time.sleep(0.05)
    b = subprocess.run(cmd(shared), capture_output=True, text=True, env=env, timeout=120)
    assert a.poll() is None, "the first driver finished before the second started: the test did not test the lock"
    assert b.returncode == 1 and f"pid {a.pid}" in b.stderr.replace("\n", " ")
    assert a.wait(300) == 0
    assert subprocess.run(cmd(single), capture_output=True, text=True, env=env, timeout=300).returncode == 0
    got, want = _sweep_metrics(shared), _sweep_metrics(single)
    assert len(got) == 4 and got == want


@pytest.mark.parametrize("damage", ["record []", "record truncated", "tensors truncated"])
def test_a_damaged_latent_cache_is_encoded_again_with_a_warning_naming_it(run_copy, damage):
    first = run_latents(run_copy, "val")
    tensors, record = Run.open(run_copy).latent_files("mu", "val")
    if damage == "record []":
        record.write_text("[]")
    elif damage == "record truncated":
        record.write_text(record.read_text()[:20])
    else:
        tensors.write_bytes(tensors.read_bytes()[:100])
    with pytest.warns(UserWarning, match=f"the latent cache {record.parent} is damaged .*; encoding the val split again"):
        again = run_latents(run_copy, "val")
    assert (again.values == first.values).all() and json.loads(record.read_text())["n"] == len(first.values)  # and replaced


def test_latent_cache_records_its_device_and_is_not_reused_on_another(run_copy):
    first = run_latents(run_copy, "val")
    tensors, record = Run.open(run_copy).latent_files("mu", "val")
    meta = json.loads(record.read_text())
    assert meta["device"] == "cpu"
    assert (run_latents(run_copy, "val").values == first.values).all()
    assert json.loads(record.read_text()) == meta  # reused as it is
    # a cache made elsewhere: pretend a GPU made it, with latents off in the last bits
    from posthoc_vq.io import save_tensors

    meta["sha256"] = save_tensors(tensors, {"latents": torch.from_numpy(first.values + 1e-3), "labels": torch.from_numpy(first.labels)})
    record.write_text(json.dumps(meta | {"device": "cuda", "device_name": "NVIDIA H200"}))
    again = run_latents(run_copy, "val")
    assert (again.values == first.values).all()  # encoded again on CPU, not the GPU cache
    assert json.loads(record.read_text())["device"] == "cpu"


def test_continuous_output_cache_is_reused_and_rebuilt_when_stale(run_copy):
    """decode(mu) is kept beside the latents for this model and these latents; a changed model or a damaged file decodes again."""
    from posthoc_vq.evaluation.reconstruction import decode
    from posthoc_vq.latents import run_continuous_output

    run = Run.open(run_copy)
    model, _ = run.load_model()
    latents = run_latents(run_copy, "test")
    fresh = decode(model, torch.from_numpy(latents.values))
    first = run_continuous_output(run_copy, "test", latents, model)
    torch.testing.assert_close(first, fresh, rtol=0, atol=0)
    cache = run_copy / "latents" / "decoded-mu-test.safetensors"
    stamp = cache.stat().st_mtime_ns
    torch.testing.assert_close(run_continuous_output(run_copy, "test", latents, model), fresh, rtol=0, atol=0)
    assert cache.stat().st_mtime_ns == stamp  # read, not written again
    data = bytearray(cache.read_bytes())
    data[-8] ^= 0xFF  # damaged: decoded again and replaced
    cache.write_bytes(bytes(data))
    torch.testing.assert_close(run_continuous_output(run_copy, "test", latents, model), fresh, rtol=0, atol=0)
    record = json.loads((run_copy / "latents" / "decoded-mu-test.json").read_text())
    record["model_sha256"] = "0" * 64  # made from another model file: not used
    (run_copy / "latents" / "decoded-mu-test.json").write_text(json.dumps(record))
    stamp = cache.stat().st_mtime_ns
    run_continuous_output(run_copy, "test", latents, model)
    assert cache.stat().st_mtime_ns != stamp
    assert json.loads((run_copy / "latents" / "decoded-mu-test.json").read_text())["model_sha256"] == run.verified_model_sha256()
