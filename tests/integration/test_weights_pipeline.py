"""compress-weights -> packed file -> evaluation, compound table and ONNX export on a small digits run."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file, save_file
from skimage.metrics import peak_signal_noise_ratio

from posthoc_vq.cli import main
from posthoc_vq.config import WeightsConfig, load_run_config
from posthoc_vq.data import load_dataset
from posthoc_vq.errors import CheckpointError
from posthoc_vq.io import write_json
from posthoc_vq.models import build_vae
from posthoc_vq.quantize.weights import load_packed, packed_size, quantize_network
from posthoc_vq.train import load_model
from posthoc_vq.train.checkpoint import save_model


@pytest.fixture(scope="module")
def run(make_digits_run):
    return make_digits_run(epochs=6)


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """A run directory holding a randomly initialised model (zero training steps), as the study compared."""
    run_dir = tmp_path_factory.mktemp("runs") / "untrained"
    config = load_run_config("digits", ["model.latent_dim=4"])
    config.model.image_size, config.model.in_channels = 8, 1
    write_json(run_dir / "config.json", config.model_dump(mode="json"))
    save_model(run_dir, build_vae(config.model), {"trained_steps": 0, "epoch": 0})
    return run_dir


def cli(*args):
    return main([str(a) for a in args])


def test_packed_sizes_are_file_sizes_and_quality_matches_skimage(run, capsys):
    assert cli("compress-weights", run, "--bits", 4) == 0
    assert "int4-g32-sym" in capsys.readouterr().out
    record = json.loads((run / "weights" / "int4-g32-sym" / "weights.json").read_text())
    packed = run / "weights" / "int4-g32-sym" / "weights.safetensors"
    assert record["packed_file_bytes"] == packed.stat().st_size
    assert record["size_ratio"] == pytest.approx(packed.stat().st_size / (run / "model.safetensors").stat().st_size)
    # the codes really take 4 bits: their bytes are exactly ceil(numel / 2) per layer
    assert record["packed_breakdown_bytes"]["codes"] == sum(packed_size(e["numel"], 4) for e in record["layers"].values())
    assert all(e["max_error_over_scale"] <= 0.5 + 1e-6 for e in record["layers"].values())

    # the file alone rebuilds exactly the dequantized weights
    model, _ = load_model(run)
    loaded, header = load_packed(packed)
    expected = quantize_network(model, WeightsConfig(bits=4)).state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, expected[key]), key

    # independent recomputation of the reported quality change with skimage
    result = json.loads((run / "eval" / "weights-int4-g32-sym-test.json").read_text())
    x = torch.from_numpy(load_dataset("digits").test.images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        xf = model.decode(model.encode(x).mu).numpy()
        xq = loaded.decode(loaded.encode(x).mu).numpy()
    gt = x.numpy()
    change = [peak_signal_noise_ratio(gt[i], xq[i], data_range=1) - peak_signal_noise_ratio(gt[i], xf[i], data_range=1) for i in range(len(gt))]
    assert result["psnr_change_db"]["mean"] == pytest.approx(np.mean(change), abs=1e-4)
    assert result["penalty"]["psnr_db"]["mean"] == pytest.approx(np.mean([peak_signal_noise_ratio(xf[i], xq[i], data_range=1) for i in range(len(gt))]), abs=1e-4)


def test_int8_with_folded_batchnorm_and_a_codebook(run):
    assert cli("quantize", run, "--method", "kmeans", "--K", 16) == 0
    assert cli("compress-weights", run, "--bits", 8, "--fold-bn", "--skip", "first", "--codebook", "kmeans-K16-mu-train") == 0
    name = "int8-channel-sym-bnfold-skip-first"
    result = json.loads((run / "eval" / f"weights-{name}@kmeans-K16-mu-train-test.json").read_text())
    record = json.loads((run / "weights" / name / "weights.json").read_text())
    assert set(record["folded_bn"]) == {"encoder.1", "encoder.4", "decoder.0", "decoder.3"}
    assert "encoder.0" not in record["layers"]  # skipped: kept in float
    loaded, _ = load_packed(run / "weights" / name / "weights.safetensors")
    assert isinstance(loaded.decoder[0], torch.nn.Identity)
    assert abs(result["psnr_change_db"]["mean"]) < 0.1  # INT8 per channel barely moves the output
    cb = result["with_codebook"]
    assert cb["K"] == 16 and 0.9 <= cb["code_agreement"] <= 1.0 and abs(cb["psnr_change_db"]["mean"]) < 0.2


def _error(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())


def test_damaged_packed_files_give_clear_errors(run, tmp_path, capsys):
    assert cli("compress-weights", run, "--bits", 4, "--asymmetric", "--no-eval") == 0
    path = run / "weights" / "int4-g32-asym" / "weights.safetensors"
    good = path.read_bytes()
    try:
        path.write_bytes(good[: len(good) // 2])  # truncated: the recorded checksum no longer matches
        assert cli("compress-weights", run, "--bits", 4, "--no-eval", "--name", "other") == 0
        from posthoc_vq.quantize.compressed import open_compressed

        with pytest.raises(CheckpointError, match="corrupt or was modified") as err:
            open_compressed(run, "int4-g32-asym")
        assert str(path) in str(err.value)
        # without the checksum, a truncated file is still named
        with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
            load_packed(path)

        tensors = load_file(str(run / "weights" / "other" / "weights.safetensors"))
        from safetensors import safe_open

        with safe_open(str(run / "weights" / "other" / "weights.safetensors"), framework="pt") as f:
            header = f.metadata()
        layers = json.loads(header["layers"])
        bad_bits = {**header, "layers": json.dumps({k: {**v, "bits": 8} if k == "fc_mu.weight" else v for k, v in layers.items()})}
        save_file(tensors, str(tmp_path / "bits.safetensors"), metadata=bad_bits)
        with pytest.raises(CheckpointError, match=r"fc_mu.weight.*of 8 bits need") as err:
            load_packed(tmp_path / "bits.safetensors")
        assert "bits.safetensors" in str(err.value)
        odd_bits = {**header, "layers": json.dumps({k: {**v, "bits": 3} for k, v in layers.items()})}
        save_file(tensors, str(tmp_path / "bits3.safetensors"), metadata=odd_bits)
        with pytest.raises(CheckpointError, match="unsupported bit width 3"):
            load_packed(tmp_path / "bits3.safetensors")
        shape = layers["fc_mu.weight"]["shape"]
        bad_shape = {**header, "layers": json.dumps({k: {**v, "shape": [shape[1], shape[0]], "rows": shape[1], "cols": shape[0], "n_groups": 1} if k == "fc_mu.weight" else v for k, v in layers.items()})}
        save_file(tensors, str(tmp_path / "shape.safetensors"), metadata=bad_shape)
        with pytest.raises(CheckpointError, match="fc_mu.weight"):
            load_packed(tmp_path / "shape.safetensors")
        wrong_model = {**header, "model": json.dumps({**json.loads(header["model"]), "latent_dim": 9})}
        save_file(tensors, str(tmp_path / "model.safetensors"), metadata=wrong_model)
        with pytest.raises(CheckpointError, match="does not fit the architecture"):
            load_packed(tmp_path / "model.safetensors")
    finally:
        path.write_bytes(good)
    assert cli("compress-weights", run, "--bits", 4, "--skip", "nonexistent") == 2
    assert "'nonexistent' is not a quantizable layer" in _error(capsys)


def test_untrained_runs_are_refused(untrained, run, tmp_path, capsys):
    assert cli("compress-weights", untrained, "--bits", 8) == 2
    assert "zero training steps" in _error(capsys)
    assert cli("compress-table", run, untrained, "--out", tmp_path) == 2
    assert "zero training steps" in _error(capsys)
    assert cli("export", untrained) == 2


def test_compound_table_measures_every_cell_and_flags_unconverged(run, tmp_path):
    assert cli("compress-table", run, "--bits", "32,8,4", "--out", tmp_path) == 0
    rows = json.loads((tmp_path / "compression-test.json").read_text())["rows"]
    assert [r["bits"] for r in rows] == [32, 8, 4]
    assert rows[0]["file_bytes"] == (run / "model.safetensors").stat().st_size and rows[0]["compound_factor"] == 1.0
    assert rows[1]["file_bytes"] == (run / "weights" / "int8-channel-sym" / "weights.safetensors").stat().st_size
    assert rows[0]["file_bytes"] > rows[1]["file_bytes"] > rows[2]["file_bytes"]
    assert rows[2]["compound_factor"] == pytest.approx(rows[0]["file_bytes"] / rows[2]["file_bytes"])
    text = (tmp_path / "compression-test.md").read_text()
    assert "NO (flagged)" in text and "NOT CONVERGED" in text  # trained with early stopping off: never converged


def test_onnx_export_matches_pytorch(run, tmp_path):
    assert cli("export", run, "--format", "onnx", "--int8", "--calibration-size", 64, "--out", tmp_path) == 0
    model, _ = load_model(run)
    x = torch.from_numpy(load_dataset("digits").test.images[:37]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        mu, logvar = model.encode(x).mu, model.encode(x).logvar
        out = model.decode(mu)
    enc = ort.InferenceSession(str(tmp_path / "encoder.onnx"), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(tmp_path / "decoder.onnx"), providers=["CPUExecutionProvider"])
    got_mu, got_logvar = enc.run(None, {"x": x.numpy()})
    np.testing.assert_allclose(got_mu, mu.numpy(), atol=1e-5)
    np.testing.assert_allclose(got_logvar, logvar.numpy(), atol=1e-5)
    np.testing.assert_allclose(dec.run(None, {"z": mu.numpy()})[0], out.numpy(), atol=1e-5)
    int8 = onnx.load(str(tmp_path / "decoder-int8.onnx"))
    ops = {n.op_type for n in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    record = json.loads((tmp_path / "export.json").read_text())
    assert record["calibration"] == {"split": "train", "n_images": 64, "seed": 0}
    assert record["files"]["decoder_int8"]["bytes"] < record["files"]["decoder"]["bytes"]


def test_an_export_replaces_its_folder_as_one_unit_with_a_checksum_per_file(run, tmp_path):
    from posthoc_vq.io import sha256_file

    out = tmp_path / "onnx"
    assert cli("export", run, "--int8", "--calibration-size", 32, "--out", out) == 0
    (out / "decoder.onnx.pre.onnx").write_bytes(b"left by a killed quantization")
    assert cli("export", run, "--out", out) == 0  # fp32 after INT8: only the new export's files remain
    record = json.loads((out / "export.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", "encoder.onnx", "export.json"]
    assert set(record["files"]) == {"encoder", "decoder"}
    for f in record["files"].values():
        assert f["path"] == str(out / Path(f["path"]).name) and f["sha256"] == sha256_file(f["path"])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not an export")
    assert cli("export", run, "--out", tmp_path / "mine") == 2  # never replaces a folder of other files
    assert (tmp_path / "mine" / "notes.txt").exists()
