"""Compute accounting: training, latent encoding and codebook fits record wall seconds, optimizer steps and
images seen; resumed training accumulates them; evaluations sum what their model and codebook cost."""

import json

import pytest

from posthoc_vq.cli import main
from posthoc_vq.config import load_run_config
from posthoc_vq.data import load_dataset
from posthoc_vq.records import model_compute, total_compute
from posthoc_vq.train import train

DIGITS = load_dataset("digits")
N_TRAIN, N_VAL = len(DIGITS.train), len(DIGITS.val)  # 1,294 and 144
STEPS_PER_EPOCH = -(-N_TRAIN // 64)  # digits preset: batch size 64


def cli(*args):
    return main([str(a) for a in args])


def read(path):
    return json.loads(path.read_text())


def test_training_compute_counts_every_epoch_and_accumulates_over_resumes(tmp_path):
    def config(epochs):
        return load_run_config("digits", ["model.latent_dim=4", "model.channels=[8,16]", f"train.epochs={epochs}", "train.early_stopping=false"])

    run = tmp_path / "run"
    first = train(config(2), run, progress=False)
    s1 = read(run / "train_summary.json")
    assert s1["compute"] == {"wall_seconds": s1["seconds"], "optimizer_steps": 2 * STEPS_PER_EPOCH, "images_seen": 2 * N_TRAIN}
    assert s1["images_seen"] == first.images_seen == 2 * N_TRAIN and first.compute == s1["compute"]

    train(config(3), run, resume=True, progress=False)  # one more epoch, in a second invocation
    s2 = read(run / "train_summary.json")
    assert s2["compute"]["optimizer_steps"] == s2["steps"] == 3 * STEPS_PER_EPOCH
    assert s2["compute"]["images_seen"] == 3 * N_TRAIN
    assert s2["compute"]["wall_seconds"] == pytest.approx(sum(row["seconds"] for row in read(run / "history.json")))
    assert s2["compute"]["wall_seconds"] > s1["compute"]["wall_seconds"]


@pytest.fixture(scope="module")
def run(make_digits_run):
    return make_digits_run(epochs=3, name="compute")


def test_latent_cache_and_codebook_records_hold_their_compute_and_evaluations_sum_it(run):
    assert cli("quantize", run, "--method", "kmeans", "--K", 8, "--fit-on", "train+val") == 0
    encoded = {s: read(run / "latents" / f"mu-{s}.json")["compute"] for s in ("train", "val")}
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        assert encoded[split]["images_seen"] == n and encoded[split]["optimizer_steps"] == 0 and encoded[split]["wall_seconds"] > 0

    record = read(run / "codebooks" / "kmeans-K8-mu-train_val" / "codebook.json")
    assert record["compute"] == {"wall_seconds": record["fit_seconds"], "optimizer_steps": 0, "images_seen": N_TRAIN + N_VAL, "vectors_fitted": record["n_fit"]}
    enc = record["encoding_compute"]  # the union's encoding: both splits
    assert enc["images_seen"] == N_TRAIN + N_VAL and enc["optimizer_steps"] == 0
    assert enc["wall_seconds"] == pytest.approx(encoded["train"]["wall_seconds"] + encoded["val"]["wall_seconds"])

    # a second codebook reads the cached latents and records what encoding them cost, not zero
    assert cli("quantize", run, "--method", "kmeans", "--K", 4, "--fit-on", "train+val") == 0
    assert read(run / "codebooks" / "kmeans-K4-mu-train_val" / "codebook.json")["encoding_compute"] == enc

    assert cli("evaluate", run, "--codebook", "kmeans-K8-mu-train_val") == 0
    c = read(run / "eval" / "kmeans-K8-mu-train_val-test.json")["compute"]
    training = read(run / "train_summary.json")["compute"]
    assert c["training"] == training and c["latent_encoding"] == enc and c["codebook_fit"] == record["compute"] and "finetune" not in c
    assert c["complete"] and c["missing"] == []
    assert c["total"]["optimizer_steps"] == training["optimizer_steps"]
    assert c["total"]["images_seen"] == training["images_seen"] + 2 * (N_TRAIN + N_VAL)
    assert c["total"]["wall_seconds"] == pytest.approx(training["wall_seconds"] + enc["wall_seconds"] + record["fit_seconds"])

    assert cli("evaluate", run) == 0
    cont = read(run / "eval" / "continuous-test.json")["compute"]
    assert cont["training"] == training and cont["total"] == {k: training[k] for k in ("wall_seconds", "optimizer_steps", "images_seen")}


def test_unknown_parts_are_named_not_counted_as_zero():
    step = {"wall_seconds": 2.0, "optimizer_steps": 10, "images_seen": 640}
    c = total_compute({"training": step, "latent_encoding": None, "codebook_fit": {"wall_seconds": 0.5, "optimizer_steps": 0, "images_seen": 64}})
    assert c["total"] == {"wall_seconds": 2.5, "optimizer_steps": 10, "images_seen": 704}
    assert not c["complete"] and c["missing"] == ["latent_encoding"]
    # a fine-tuned run's model cost its source's training and its own fine-tune; an old run's training is unknown
    finetuned = {"compute": step, "upstream": {"training": step, "latent_encoding": None, "codebook_fit": None}}
    assert model_compute(finetuned) == {"training": step, "finetune": step}
    assert model_compute({"converged": True}) == {"training": None} and model_compute(None) == {"training": None}
