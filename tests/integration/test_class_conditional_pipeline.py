"""train -> quantize --method class-conditional -> evaluate (pixels, samples, perceptual, packed weights)
-> finetune on digits; the class labels reach every step, and their absence is a clear error."""

import json
import math

import numpy as np
import pytest
import torch

import posthoc_vq
from posthoc_vq.autoencoders import FunctionAutoencoder
from posthoc_vq.cli import main
from posthoc_vq.io import load_tensors
from posthoc_vq.latents import load_run_splits, run_latents
from posthoc_vq.evaluation.perceptual import train_feature_net
from posthoc_vq.quantize.codebooks import open_codebook
from posthoc_vq.quantize.latent.base import ClassLabelError
from posthoc_vq.run import CHECKPOINT_MODEL, Run
from posthoc_vq.train import load_model

NAME = "class-conditional-K32-mu-train"
K_C = 3  # floor(32 / 10 digit classes)


def cli(*args):
    return main([str(a) for a in args])


def read(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def run(make_digits_run):
    """A digits run (8 epochs) with a class-conditional codebook of budget K = 32."""
    run = make_digits_run(epochs=8, name="class-conditional")
    assert cli("quantize", run, "--method", "class-conditional", "--K", 32) == 0
    return run


def test_quantize_records_classes_and_codes_per_class(run, capsys):
    record = read(run / "codebooks" / NAME / "codebook.json")
    assert record["method"] == "class-conditional" and record["quantize"]["K"] == 32
    assert record["state"]["classes"] == list(range(10)) and record["state"]["codes_per_class"] == K_C and record["n_codes"] == 10 * K_C
    assert record["bits_per_image"] == pytest.approx(math.log2(10) + math.log2(K_C))
    assert record["fit_usage"]["per_class"]["purity"] == 1.0  # a code is only ever used by its own class
    assert sum(c["n_vectors"] for c in record["fit_usage"]["per_class"]["classes"].values()) == record["n_fit"] == len(load_run_splits(run).train)


def test_evaluate_bits_and_quality_and_codes_within_classes(run):
    assert cli("evaluate", run, "--codebook", NAME) == 0
    result = read(run / "eval" / f"{NAME}-test.json")
    assert result["method"] == "class-conditional" and result["K"] == 10 * K_C
    assert result["bits_per_image"] == pytest.approx(math.log2(10) + math.log2(K_C))  # the label is counted
    quantized, continuous = result["quantized"]["psnr_db"]["mean"], result["continuous"]["psnr_db"]["mean"]
    assert math.isfinite(quantized) and quantized < continuous
    # independent recomputation: each test latent coded by the nearest vector of its own class's block
    codebook, _ = open_codebook(run, NAME)
    latents = run_latents(run, "test", "mu")
    d = ((latents.values[:, None, :].astype(np.float64) - codebook.codebook_[None].astype(np.float64)) ** 2).sum(-1)  # (N, 30)
    own = (np.arange(10 * K_C)[None, :] // K_C) == latents.labels[:, None]
    codes = np.where(own, d, np.inf).argmin(1)
    assert (codes == codebook.predict(latents.values, latents.labels)).mean() > 0.999  # float32 ties aside
    assert result["latent_mse"] == pytest.approx(float(np.mean((latents.values - codebook.codebook_[codes]) ** 2)), rel=1e-3)
    assert result["usage"]["test"]["per_class"]["purity"] == 1.0


def test_report_samples_are_written_with_the_labels(run):
    assert cli("evaluate", run, "--codebook", NAME) == 0  # writes eval/samples-<codebook>-test.safetensors
    samples = load_tensors(run / "eval" / f"samples-{NAME}-test.safetensors")
    counts = samples["class_counts"].numpy()  # (K, classes): each code counts vectors of one class only
    assert counts.shape == (10 * K_C, 10) and ((counts > 0).sum(1) <= 1).all()
    assert samples["interpolation"].shape[0] == 9 and samples["reconstruction"].shape[0] == 8


def test_cli_errors_name_the_classes_and_the_fix(run, capsys):
    assert cli("quantize", run, "--method", "class-conditional", "--K", 40, "--name", "cc40") == 0
    assert "cc40: K=40 (4 per class x 10 classes)" in " ".join(capsys.readouterr().out.split())
    assert cli("quantize", run, "--method", "class-conditional", "--K", 5) == 2
    assert "K=5 codes cannot be split over the 10 classes of the fit set" in " ".join(capsys.readouterr().err.split())
    counts = np.bincount(load_run_splits(run).train.labels)
    K = 10 * (int(counts.min()) + 1)  # K_c one more than the smallest class holds
    assert cli("quantize", run, "--method", "class-conditional", "--K", K) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"class {int(counts.argmin())} has {int(counts.min())} vectors, fewer than its K_c" in err and f"lower K to at most {10 * int(counts.min())}" in err


def test_library_api_needs_labels_and_matches_the_cli(run):
    model, _ = load_model(run)
    ae = FunctionAutoencoder(lambda x: model.encode(x).mu, model.decode, output_range=(0, 1))
    splits = load_run_splits(run)
    with pytest.raises(ClassLabelError, match=r"call fit_codebook\(model, data, labels=labels, \.\.\.\)"):
        posthoc_vq.fit_codebook(ae, splits.train.to_tensor(), method="class-conditional", K=32)
    fit = posthoc_vq.fit_codebook(ae, splits.train, method="class-conditional", K=32, fit_on="train")  # an ImageSet brings its labels
    saved, _ = open_codebook(run, NAME)
    np.testing.assert_array_equal(fit.codebook.codebook_, saved.codebook_)
    with pytest.raises(ClassLabelError, match=r"call evaluate\(model, codebook, data, labels=labels, \.\.\.\)"):
        posthoc_vq.evaluate(ae, fit, splits.test.to_tensor())
    result = posthoc_vq.evaluate(ae, fit, splits.test.to_tensor(), labels=splits.test.labels, split="test").to_json()
    assert cli("evaluate", run, "--codebook", NAME) == 0
    assert result["quantized"] == read(run / "eval" / f"{NAME}-test.json")["quantized"]


def test_perceptual_metrics_with_interpolation(run, tmp_path):
    train_feature_net("digits", tmp_path / "features", epochs=3, progress=False)
    assert cli("evaluate", run, "--codebook", NAME, "--metrics", "fd,interp", "--features", tmp_path / "features", "--pairs", 10, "--samples", 200) == 0
    r = read(run / "eval" / f"perceptual-{NAME}-test.json")
    assert {"reconstruction", "codes_empirical", "codes_uniform"} <= set(r["sets"])  # codes drawn without labels: a code names its class
    assert all(math.isfinite(s["fd"]) for s in r["sets"].values())
    assert {"linear", "linear_quantized"} <= set(r["interpolation"])


def test_packed_weights_with_the_codebook(run):
    assert cli("compress-weights", run, "--bits", 8, "--codebook", NAME) == 0
    result = read(run / "eval" / f"weights-int8-channel-sym@{NAME}-test.json")
    cb = result["with_codebook"]
    assert cb["method"] == "class-conditional" and 0.8 <= cb["code_agreement"] <= 1.0 and math.isfinite(cb["quantized"]["psnr_db"]["mean"])


def test_finetune_trains_the_class_codebooks_and_keeps_codes_in_their_class(run, tmp_path):
    out = tmp_path / "ft"
    assert cli("finetune", run, "--codebook", NAME, "--out", out, "--epochs", 1, "--part", "decoder+codebook", "--no-progress") == 0
    tuned, record = open_codebook(out, NAME)
    source, _ = open_codebook(run, NAME)
    assert tuned.classes_.tolist() == list(range(10)) and tuned.codes_per_class_ == K_C and tuned.n_codes == 10 * K_C
    assert record["fit_usage"]["per_class"]["purity"] == 1.0 and record["part"] == "decoder+codebook"
    ckpt = Run(out).latest_checkpoint()
    vectors = load_tensors(ckpt / CHECKPOINT_MODEL)["vectors"].numpy()  # the vectors after epoch 1: trained, same layout
    assert vectors.shape == source.codebook_.shape and not np.array_equal(vectors, source.codebook_)
    kept = vectors if read(out / "train_summary.json")["best_epoch"] == 1 else source.codebook_
    np.testing.assert_array_equal(tuned.codebook_, kept)
    assert cli("evaluate", out, "--codebook", NAME) == 0
    assert read(out / "eval" / f"{NAME}-test.json")["bits_per_image"] == pytest.approx(math.log2(10) + math.log2(K_C))
    assert torch.isfinite(torch.tensor(read(out / "eval" / f"{NAME}-test.json")["quantized"]["psnr_db"]["mean"]))
