"""A trained-quantizer run (VQ, RVQ, FSQ) is a normal run: every command works on it, with exact bits per image."""

import json

import pytest
import torch

from posthoc_vq import cli
from posthoc_vq.config import load_run_config
from posthoc_vq.evaluation import evaluate_continuous
from posthoc_vq.results import Evaluation
from posthoc_vq.evaluation.weights import evaluate_weights
from posthoc_vq.experiments.job import evaluate_cell
from posthoc_vq.io import load_tensors, read_json
from posthoc_vq.quantize.compressed import compress_run
from posthoc_vq.config import WeightsConfig
from posthoc_vq.run import Run
from posthoc_vq.train import train
from posthoc_vq.codec.priors import PriorError, uniform_prior


KINDS = {
    "vq": (["model.quantizer=vq", "model.codebook_size=64"], 6.0),
    "rvq": (["model.quantizer=rvq", "model.codebook_size=16", "model.stages=2"], 8.0),
    "fsq": (["model.quantizer=fsq", "model.fsq_levels=[8,8,4,4]"], 10.0),
}


def run_cli(*argv: str) -> None:
    assert cli.main(list(argv)) == 0, argv


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_command_works_on_a_trained_quantizer_run(tmp_path, capsys, kind):
    overrides, bits = KINDS[kind]
    run = str(tmp_path / kind)
    sets = [a for o in overrides + ["train.epochs=2"] for a in ("--set", o)]
    run_cli("train", "--preset", "digits", *sets, "--out", run, "--no-progress")
    history = read_json(Run(run).history_json)
    assert all(row["train_codes_used"] > 0 and row["train_perplexity"] >= 1 for row in history)
    assert "train_codes_dead" in Run(run).history_csv.read_text().splitlines()[0]

    run_cli("evaluate", run)
    shown = " ".join(capsys.readouterr().out.split())
    assert f"trained {kind}" in shown and "continuous (mu)" not in shown  # its own output is quantized
    run_cli("evaluate", run, "--format", "json")
    printed = json.loads(capsys.readouterr().out)
    result = read_json(Run(run).eval_file("test"))
    assert printed["bits_per_image"] == result["bits_per_image"] == bits and result["bits_per_token"] == bits
    assert result["quantizer"]["kind"] == kind and result["tokens_per_image"] == 1
    assert cli._model_label(Evaluation.model_validate(result)) == f"trained {kind} ({bits:g} bits/image)"
    assert result["quantized"] == result["continuous"] and "pre_quantization" in result
    usage = result["usage"]["test"]
    assert usage["n_vectors"] == result["continuous"]["n_images"] and 0 < usage["used"] <= usage["n_codes"]
    assert {"entropy_bits", "perplexity", "dead", "per_class"} <= set(usage)
    assert "quantized_beats_continuous" not in {w["code"] for w in result["warnings"]}

    run_cli("compress-weights", run, "--bits", "8")
    run_cli("compress-weights", run, "--bits", "4")
    int8 = read_json(Run(run).eval_file("test", weights="int8-channel-sym"))
    assert int8["penalty"]["psnr_db"]["mean"] > 30.0, "the INT8 model's output is close to the fp32 model's"
    assert abs(int8["psnr_change_db"]["mean"]) < 0.5
    packed = load_tensors(Run(run).weights_files("int8-channel-sym")[0])
    books = {k: v for k, v in packed.items() if "_codebook." in k}  # codebooks and EMA statistics stay float (fsq: none; its projections are Linear layers)
    assert all(v.dtype in (torch.float32, torch.bool) for v in books.values()) and (kind == "fsq") == (not books)

    run_cli("export", run, "--int8", "--calibration-size", "64")
    export = read_json(Run(run).export_dir / "export.json")
    assert export["quantizer"]["kind"] == kind and export["quantizer"]["in_graph"] == "decoder"
    assert export["files"]["encoder"]["max_abs_diff_vs_torch"] < 1e-4 and export["files"]["decoder"]["max_abs_diff_vs_torch"] < 1e-4

    run_cli("report", run, "--out", str(tmp_path / "report"), "--no-progress")
    assert (tmp_path / "report" / "report.html").exists()
    run_cli("table", run)
    table = (Run(run).report_dir / "codebooks-test.md").read_text()
    assert f"trained {kind}" in table and f"{bits:g} (trained {kind})" in table and "(fp32)" not in table

    if kind == "vq":  # a sweep cell without a post-hoc codebook reports the trained quantizer's rate
        for w in (32, 8):
            cell = {"cell_id": f"c{w}", "quantize": None, "weights": {"bits": w}}
            metrics = evaluate_cell(Run(run).root, cell, Evaluation.model_validate(result), "test", None)["metrics"]
            assert metrics["bits_per_image"] == bits
            # and its real bytes: the trained quantizer's own bitstreams, header included, and all images in one file
            assert metrics["real_bpp_empirical"] == result["rate"]["priors"]["empirical"]["real_bpp"]["mean"] > metrics["nominal_bpp"] == bits / 64
            assert metrics["container_bpp_empirical"] == result["rate"]["priors"]["empirical"]["container_bpp"] < metrics["real_bpp_empirical"]


def test_spatial_trained_vq_quantizes_every_grid_position(tmp_path):
    overrides = ["model.family=spatial", "model.channels=[16]", "model.latent_dim=4", "model.quantizer=vq", "model.codebook_size=16", "train.epochs=2"]
    train(load_run_config("digits", overrides), tmp_path / "grid", progress=False)
    result = evaluate_continuous(tmp_path / "grid").to_json()
    assert result["latent_shape"] == [4, 4, 4] and result["tokens_per_image"] == 16
    assert result["bits_per_image"] == 16 * 4.0 and result["usage"]["test"]["n_vectors"] == 16 * result["continuous"]["n_images"]
    name, _ = compress_run(tmp_path / "grid", WeightsConfig(bits=8))
    assert evaluate_weights(tmp_path / "grid", name).penalty.psnr_db.mean > 30.0


def test_resumed_vq_training_reproduces_an_uninterrupted_run(tmp_path):
    overrides = ["model.channels=[16,32]", "model.latent_dim=8", "model.quantizer=vq", "model.codebook_size=32", "train.early_stopping=false"]
    train(load_run_config("digits", overrides + ["train.epochs=3"]), tmp_path / "straight", progress=False)
    train(load_run_config("digits", overrides + ["train.epochs=1"]), tmp_path / "resumed", progress=False)
    train(load_run_config("digits", overrides + ["train.epochs=3"]), tmp_path / "resumed", resume=True, progress=False)
    a, b = (load_tensors(Run(tmp_path / n).checkpoint_dirs()[-1] / "model.safetensors") for n in ("straight", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any("embed_avg" in k for k in a)  # the EMA state is part of what was compared


@pytest.mark.parametrize("levels, bits", [([8, 8, 8, 8, 8, 8, 4], 20.0), ([8] * 12 + [4, 4], 40.0)])
def test_an_fsq_too_wide_to_list_is_evaluated_and_coded_where_a_table_fits(tmp_path, levels, bits):
    # 2**20 codes: no context prior (the codes cannot be listed as vectors), but uniform and empirical bitstreams;
    # 2**40 codes: no probability table at all, and the result says the rate is nominal only
    overrides = ["model.channels=[8,16]", "model.latent_dim=16", "model.quantizer=fsq", f"model.fsq_levels={levels}", "train.epochs=1"]
    train(load_run_config("digits", overrides), tmp_path / "fsq", progress=False)
    result = evaluate_continuous(tmp_path / "fsq").to_json()
    rate = result["rate"]
    assert result["bits_per_image"] == bits and rate["nominal_bits_per_image"] == pytest.approx(bits)
    if bits == 20.0:
        assert set(rate["priors"]) == {"uniform", "empirical"} and "not_coded" not in rate
        header = rate["priors"]["uniform"]["header_bytes_mean"]
        assert rate["priors"]["uniform"]["real_bytes_mean"] * 8 == pytest.approx(header * 8 + bits, abs=8)  # whole bytes of 20 bits
    else:
        assert rate["priors"] == {} and "too many for a probability table" in rate["not_coded"]
        with pytest.raises(PriorError, match=r"2\^40\) are too many for a probability table"):
            uniform_prior(2**40)
