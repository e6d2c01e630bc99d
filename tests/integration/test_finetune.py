"""posthoc-vq finetune: a decoder fine-tuned on a codebook's quantized latents beats the post-hoc source on
test PSNR, the source run is left byte-identical, a fine-tune resumes exactly, and bad input is a clear error."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from posthoc_vq.cli import main
from posthoc_vq.config import load_run_config
from posthoc_vq.data import load_dataset
from posthoc_vq.errors import CheckpointError, ConfigError
from posthoc_vq.io import load_tensors
from posthoc_vq.quantize.latent.kmeans import KMeans
from posthoc_vq.quantize.latent.store import save_codebook
from posthoc_vq.train import finetune, train

CODEBOOK = "kmeans-K16-mu-train"
N_TRAIN = len(load_dataset("digits").train)  # 1,294
STEPS_PER_EPOCH = -(-N_TRAIN // 64)  # digits preset: batch size 64


def cli(*args):
    return main([str(a) for a in args])


def file_hashes(root):
    """sha256 of every file under a folder (hidden ones such as .lock included), by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def read(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def source(make_digits_run):
    """A digits run (8 epochs) with a K=16 k-means codebook, evaluated."""
    run = make_digits_run(epochs=8, name="source")
    assert cli("quantize", run, "--method", "kmeans", "--K", 16) == 0
    assert cli("evaluate", run, "--codebook", CODEBOOK) == 0
    return run


def test_finetuned_decoder_beats_the_post_hoc_codebook_and_leaves_the_source_untouched(source, tmp_path, capsys):
    before = file_hashes(source)
    out = tmp_path / "ft"
    assert cli("finetune", source, "--codebook", CODEBOOK, "--out", out, "--epochs", 5, "--no-progress") == 0
    printed = capsys.readouterr().out
    assert "compute" in printed and "steps" in printed and "images" in printed
    assert file_hashes(source) == before  # not one byte of the source run changed, nothing was added

    assert cli("evaluate", out, "--codebook", CODEBOOK) == 0
    src, new = read(source / "eval" / f"{CODEBOOK}-test.json"), read(out / "eval" / f"{CODEBOOK}-test.json")
    print(f"test PSNR through {CODEBOOK}: source {src['quantized']['psnr_db']['mean']:.3f} dB, fine-tuned {new['quantized']['psnr_db']['mean']:.3f} dB")
    assert new["quantized"]["psnr_db"]["mean"] > src["quantized"]["psnr_db"]["mean"]

    # part decoder: the codebook is the source's, vector for vector, and says where it came from
    cb = out / "codebooks" / CODEBOOK
    assert (cb / "codebook.safetensors").read_bytes() == (source / "codebooks" / CODEBOOK / "codebook.safetensors").read_bytes()
    record = read(cb / "codebook.json")
    assert record["part"] == "decoder" and record["fine_tuned_from"]["run"] == str(source) and record["run"] == str(out)

    # the encoder (and its BatchNorm statistics) is the source's bit for bit; the decoder moved
    old, tuned = load_tensors(source / "model.safetensors"), load_tensors(out / "model.safetensors")
    encoder = [k for k in old if k.startswith(("encoder.", "fc_mu.", "fc_logvar."))]
    assert encoder and all(torch.equal(old[k], tuned[k]) for k in encoder)
    assert any(not torch.equal(old[k], tuned[k]) for k in old if k.startswith(("fc_dec.", "decoder.")))

    # the run's records: summary as a training run's, plus its compute and what came before it
    summary, model, src_summary = read(out / "train_summary.json"), read(out / "model.json"), read(source / "train_summary.json")
    assert {"converged", "stop_reason", "epochs", "best_epoch", "steps"} <= set(summary) and summary["epochs"] == 5
    assert summary["compute"]["images_seen"] == 5 * N_TRAIN and summary["compute"]["optimizer_steps"] == summary["steps"] == 5 * STEPS_PER_EPOCH
    assert summary["upstream"]["training"] == src_summary["compute"]
    assert summary["upstream"]["codebook_fit"] == read(source / "codebooks" / CODEBOOK / "codebook.json")["compute"]
    assert summary["best_val_loss"] < summary["val_loss_before"]
    assert model["finetune"]["part"] == "decoder" and model["finetune"]["codebook"] == CODEBOOK and model["epoch"] == summary["best_epoch"]
    assert model["trained_steps"] == read(source / "model.json")["trained_steps"] + model["finetune"]["steps"]
    assert read(out / "finetune.json")["source_model_sha256"] == read(source / "model.json")["sha256"]
    assert read(out / "config.json") == read(source / "config.json")

    # the evaluation's compute block: training + fine-tune + encoding + fit, and their total
    c = new["compute"]
    assert c["complete"] and c["training"] == src_summary["compute"] and c["finetune"] == summary["compute"]
    assert c["latent_encoding"] == record["encoding_compute"] and c["codebook_fit"] == record["compute"]
    parts = [c[k] for k in ("training", "finetune", "latent_encoding", "codebook_fit")]
    assert c["total"]["optimizer_steps"] == sum(p["optimizer_steps"] for p in parts)
    assert c["total"]["images_seen"] == sum(p["images_seen"] for p in parts)
    assert c["total"]["wall_seconds"] == pytest.approx(sum(p["wall_seconds"] for p in parts))
    assert cli("evaluate", out) == 0  # the continuous model evaluates like any run's, with its training + fine-tune compute
    cont = read(out / "eval" / "continuous-test.json")["compute"]
    assert cont["training"] == src_summary["compute"] and cont["finetune"] == summary["compute"]


@pytest.fixture(scope="module")
def spatial_source(tmp_path_factory):
    """A digits run with a 4 x 2 x 2 latent grid and a residual codebook (2 stages of K=8) on its tokens."""
    run = tmp_path_factory.mktemp("runs") / "spatial"
    overrides = ["model.family=spatial", "model.latent_dim=4", "model.channels=[16,32]", "train.epochs=4", "train.early_stopping=false"]
    train(load_run_config("digits", overrides), run, progress=False)
    assert cli("quantize", run, "--method", "residual", "--K", 8, "--n-stages", 2) == 0
    return run


def test_codebook_fine_tune_of_a_latent_grid_trains_the_vectors_and_resumes_exactly(spatial_source, tmp_path):
    name, part = "residual-M2-K8-mu-train", "decoder+codebook"
    full = finetune(spatial_source, name, tmp_path / "full", epochs=3, part=part, patience=10, progress=False)
    first = finetune(spatial_source, name, tmp_path / "cut", epochs=1, part=part, patience=10, progress=False)
    resumed = finetune(spatial_source, name, tmp_path / "cut", epochs=3, part=part, patience=10, resume=True, progress=False)
    for f in ("model.safetensors", f"codebooks/{name}/codebook.safetensors"):
        assert (tmp_path / "cut" / f).read_bytes() == (tmp_path / "full" / f).read_bytes(), f
    assert resumed.steps == full.steps == 3 * STEPS_PER_EPOCH and resumed.images_seen == full.images_seen == 3 * N_TRAIN
    assert resumed.seconds > first.seconds and read(tmp_path / "cut" / "train_summary.json")["compute"] == resumed.compute

    # every stage's vectors moved; the record says from where and what was trained
    trained = load_tensors(tmp_path / "full" / "codebooks" / name / "codebook.safetensors")["codebooks"]
    original = load_tensors(spatial_source / "codebooks" / name / "codebook.safetensors")["codebooks"]
    assert trained.shape == original.shape == (2, 8, 4) and all(not torch.equal(trained[m], original[m]) for m in range(2))
    record = read(tmp_path / "full" / "codebooks" / name / "codebook.json")
    assert record["part"] == part and record["fine_tuned_from"]["sha256"] == read(spatial_source / "codebooks" / name / "codebook.json")["sha256"]
    assert cli("evaluate", tmp_path / "full", "--codebook", name) == 0
    result = read(tmp_path / "full" / "eval" / f"{name}-test.json")
    assert result["tokens_per_image"] == 4 and result["bits_per_image"] == 4 * 2 * 3

    with pytest.raises(ConfigError, match=r"different source or settings \(part: decoder\+codebook -> decoder\)"):
        finetune(spatial_source, name, tmp_path / "cut", epochs=4, part="decoder", resume=True, progress=False)


def test_bad_input_is_a_clear_error_before_any_work(source, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    other = KMeans(4, random_state=0).fit(np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32))  # D=3, the run's latents are 8
    save_codebook(copy / "codebooks" / "kmeans-D3", other, {"name": "kmeans-D3"})
    with pytest.raises(CheckpointError, match=r"latent dimension D=3 but the model's latent_dim is 8"):
        finetune(copy, "kmeans-D3", tmp_path / "a", progress=False)
    assert cli("finetune", copy, "--codebook", "kmeans-D3", "--out", tmp_path / "a") == 1  # a CheckpointError: failed work
    assert "D=3" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match=rf"no codebook 'nope' .*available: kmeans-D3, {CODEBOOK}"):
        finetune(copy, "nope", tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        finetune(source, CODEBOOK, copy, progress=False)
    with pytest.raises(ConfigError, match="inside the source run"):
        finetune(source, CODEBOOK, source / "ft", progress=False)
    with pytest.raises(ConfigError, match="unknown part 'encoder'"):
        finetune(source, CODEBOOK, tmp_path / "a", part="encoder", progress=False)
    with pytest.raises(SystemExit) as exit_:
        cli("finetune", source, "--codebook", CODEBOOK, "--out", tmp_path / "a", "--part", "encoder")
    assert exit_.value.code == 2 and "invalid choice: 'encoder'" in capsys.readouterr().err
    assert cli("quantize", copy, "--method", "geodesic", "--K", 16, "--n-neighbors", 10) == 0
    with pytest.raises(ConfigError, match="its vectors cannot be trained; use --part decoder"):
        finetune(copy, "geodesic-K16-mu-train-k10", tmp_path / "a", part="decoder+codebook", progress=False)
    assert not (tmp_path / "a").exists() and not (source / "ft").exists()
