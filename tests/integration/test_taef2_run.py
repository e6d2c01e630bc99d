"""taef2, a real pretrained autoencoder, imported as a run: every command works on it.

The run uses a few real photographs (BSDS500 train/val, Kodak test) centre-cropped to 176x184 so each command
takes seconds; the study (examples/taef2_kodak_study.py) runs the same commands on the full sets.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from posthoc_vq.cli import main
from posthoc_vq.run import Run

sys.path.insert(0, str(Path(__file__).parent))
import taef2_reference as reference  # noqa: E402

WEIGHTS = Path(__file__).resolve().parents[2].parent / "shared" / "models" / "taef2"


@pytest.fixture(scope="module")
def weights():
    if not (WEIGHTS / "taef2_encoder.pth").is_file():
        pytest.fail(f"the taef2 weights are not at {WEIGHTS}; they come with ../shared (models/taef2)")
    return WEIGHTS


@pytest.fixture(scope="module")
def data_dir(shared_datasets):
    return str(shared_datasets("bsds500/photos-train.tar", "kodak/kodim01.png", what="BSDS500 and Kodak photographs"))


@pytest.fixture(scope="module")
def run(tmp_path_factory, weights, data_dir):
    out = tmp_path_factory.mktemp("taef2") / "run"
    sets = ["--set", "data.max_train_images=6", "--set", "data.max_val_images=2", "--set", "data.max_test_images=2", "--set", "data.crop=[176,184]",
            "--set", "train.epochs=1"]
    assert main(["-q", "import", "taef2", "--weights", str(weights), "--out", str(out), "--data-dir", data_dir, *sets]) == 0
    return out


def cli(*argv: str) -> int:
    return main(["-q", *argv])


def test_import_makes_an_ordinary_run(run, weights):
    r = Run.open(run)
    record = r.model_record()
    assert record["trained_steps"] is None and record["epoch"] is None
    assert record["pretrained"]["licence"] == "MIT" and record["pretrained"]["files"]["encoder"]["sha256"] == \
        "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6"
    assert r.verified_model_sha256() == record["sha256"]
    assert "Ollin Boer Bohan" in r.model_licence_file.read_text()
    assert r.history() is None and r.summary() is None
    model, _ = r.load_model()
    state = torch.load(weights / "taef2_decoder.pth", map_location="cpu", weights_only=True)
    assert torch.equal(model.decoder.state_dict()["19.weight"], state["19.weight"].float())  # float16 -> float32, exact
    assert record["num_parameters"] == 1_338_528 + 1_338_499


def test_module_matches_an_independent_implementation_on_kodak(weights, data_dir):
    """Acceptance: the round trip on a full-size Kodak image matches the functional reference (tests/integration/taef2_reference.py)."""
    from posthoc_vq.autoencoders.taef2 import load_taef2

    model = load_taef2(weights)
    a = np.asarray(Image.open(Path(data_dir) / "kodak" / "kodim23.png").convert("RGB"))
    x = torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255
    enc, dec = reference.load_state(weights, "encoder"), reference.load_state(weights, "decoder")
    with torch.no_grad():
        ours = model.decode(model.encode(x).mu)
        ref = reference.decode(dec, reference.encode(enc, x)).clamp(0, 1)

    def psnr(y):
        return float(-10 * torch.log10(((y - x) ** 2).mean()))

    assert abs(psnr(ours) - psnr(ref)) < 0.1
    assert float((ours - ref).abs().max()) < 1e-4
    assert 28 < psnr(ours) < 40  # a real autoencoder, not an identity or a broken one


def test_evaluate_continuous_is_not_called_untrained(run, data_dir):
    assert cli("evaluate", str(run), "--data-dir", data_dir) == 0
    result = json.loads(Run.open(run).eval_file("test").read_text())
    codes = {w["code"] for w in result["warnings"]}
    assert "untrained" not in codes and "not_converged" not in codes
    assert result["training"]["stop_reason"] == "pretrained" and result["model"]["pretrained"]["name"] == "taef2"
    assert result["data"]["preparation"]["resize"] == "never" and result["data"]["crop"] == [176, 184]
    q = result["continuous"]
    assert q["n_images"] == 2 and 0.5 < q["ms_ssim"]["mean"] <= 1.0 and q["psnr_db"]["mean"] > 20


@pytest.fixture(scope="module")
def codebook(run, data_dir):
    assert cli("quantize", str(run), "--K", "32", "--name", "k32", "--data-dir", data_dir) == 0
    return "k32"


def test_quantize_fits_tokens_of_the_latent_grid(run, codebook):
    record = json.loads(Run.open(run).codebook_files(codebook)[1].read_text())
    assert record["n_fit_tokens"] == 6 * (176 // 8) * (184 // 8) and record["tokens_per_image"] == 22 * 23  # one 32-vector per 8x8 block of each train crop


def test_evaluate_codebook_has_a_real_rate(run, codebook, data_dir):
    assert cli("evaluate", str(run), "--codebook", codebook, "--data-dir", data_dir) == 0
    result = json.loads(Run.open(run).eval_file("test", codebook=codebook).read_text())
    rate = result["rate"]
    assert rate["pixels_per_image"] == 176 * 184 and rate["nominal_bpp"] == pytest.approx(5 / 64)
    assert rate["priors"]["empirical"]["real_bpp"]["mean"] > rate["priors"]["empirical"]["ideal_bpp"]["mean"]
    assert result["quantized"]["psnr_db"]["mean"] < result["continuous"]["psnr_db"]["mean"]


def test_compress_decompress_round_trip(run, codebook, data_dir, tmp_path):
    out = tmp_path / "bits"
    assert cli("compress", str(run), "--codebook", codebook, "--split", "test", "--per-image", "--out", str(out), "--data-dir", data_dir) == 0
    files = sorted(out.glob("*.phvq"))
    assert len(files) == 2
    assert cli("decompress", *map(str, files), "--run", str(run), "--out", str(tmp_path / "png")) == 0
    from posthoc_vq.evaluation.bitstreams import open_codec

    codec = open_codec(run, codebook)
    _, codes, images = codec.decompress(files[0].read_bytes())
    assert codes.shape == (1, 22, 23, 1) and images.shape == (1, 3, 176, 184)
    png = np.asarray(Image.open(tmp_path / "png" / f"{files[0].stem}.png"))
    alone = np.rint(images[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.int16)
    assert np.abs(png.astype(np.int16) - alone).max() <= 1  # decoded in a batch of 2 there, of 1 here: float rounding moves a level at most


def test_compress_user_photos_of_any_size(run, codebook, tmp_path):
    """A fully convolutional model takes any size: each image is cropped to multiples of 8 (top-left), grayscale is
    replicated to RGB; a transparent RGBA image and one smaller than a token are refused before any work."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (37, 45, 3), dtype=np.uint8)).save(tmp_path / "odd.png")
    Image.fromarray(rng.integers(0, 256, (16, 24), dtype=np.uint8)).save(tmp_path / "gray.png")
    assert cli("compress", str(run), str(tmp_path / "odd.png"), str(tmp_path / "gray.png"), "--codebook", codebook, "--out", str(tmp_path / "b")) == 0
    assert cli("decompress", str(tmp_path / "b" / "odd.phvq"), str(tmp_path / "b" / "gray.phvq"), "--run", str(run), "--out", str(tmp_path / "p")) == 0
    assert Image.open(tmp_path / "p" / "odd.png").size == (40, 32) and Image.open(tmp_path / "p" / "gray.png").size == (24, 16)
    rgba = rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    rgba[0, 0, 3] = 10
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    Image.fromarray(rng.integers(0, 256, (5, 40, 3), dtype=np.uint8)).save(tmp_path / "tiny.png")
    for bad in ("alpha.png", "tiny.png"):
        assert cli("compress", str(run), str(tmp_path / bad), "--codebook", codebook, "--out", str(tmp_path / "c")) == 2
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())


def test_table_report_and_geometry(run, codebook, data_dir, tmp_path):
    assert cli("table", str(run)) == 0
    assert cli("report", str(run)) == 0
    report = (Run.open(run).report_dir / "report.md").read_text()
    assert codebook in report and "untrained" not in report.lower()
    assert cli("geometry", str(run), "--split", "test", "--data-dir", data_dir) == 0
    geometry = json.loads(Run.open(run).geometry_file("test").read_text())
    assert geometry["latent_shape"] == [32, 22, 23]


def test_compress_weights_int8_int4(run, data_dir):
    for bits in ("8", "4"):
        assert cli("compress-weights", str(run), "--bits", bits, "--name", f"w{bits}", "--data-dir", data_dir) == 0
    r = Run.open(run)
    w8, w4 = (json.loads(r.eval_file("test", weights=f"w{b}").read_text()) for b in (8, 4))
    assert w4["size"]["packed_file_bytes"] < w8["size"]["packed_file_bytes"] < w8["size"]["fp32_file_bytes"]
    assert w8["penalty"]["psnr_db"]["mean"] > w4["penalty"]["psnr_db"]["mean"]  # INT8 is closer to the fp32 output


def test_export_onnx_any_size(run, data_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    assert cli("export", str(run), "--out", str(tmp_path / "onnx"), "--data-dir", data_dir) == 0
    record = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert record["files"]["decoder"]["max_abs_diff_vs_torch"] < 1e-3
    import onnxruntime as ort

    from posthoc_vq.autoencoders.taef2 import load_taef2

    sess = ort.InferenceSession(str(tmp_path / "onnx" / "decoder.onnx"), providers=["CPUExecutionProvider"])
    z = torch.randn(1, 32, 5, 7)
    got = sess.run(None, {"z": z.numpy()})[0]  # a grid the export never saw: the H, W axes are dynamic
    with torch.no_grad():
        want = load_taef2(WEIGHTS).decode(z).numpy()
    assert got.shape == (1, 3, 40, 56) and np.abs(got - want).max() < 1e-3


def test_finetune_decoder_on_bsds500(run, codebook, data_dir, tmp_path):
    out = tmp_path / "ft"
    assert cli("finetune", str(run), "--codebook", codebook, "--epochs", "1", "--out", str(out), "--data-dir", data_dir) == 0
    ft = Run.open(out)
    assert ft.summary()["epochs"] == 1
    base, _ = Run.open(run).load_model()
    tuned, _ = ft.load_model()
    assert torch.equal(base.encoder.state_dict()["0.weight"], tuned.encoder.state_dict()["0.weight"])  # the encoder is frozen
    assert not torch.equal(base.decoder.state_dict()["19.weight"], tuned.decoder.state_dict()["19.weight"])


def test_bad_weights_name_the_first_mismatching_key(tmp_path, weights):
    from posthoc_vq.autoencoders.taef2 import PretrainedWeightsError, load_taef2_weights

    state = torch.load(weights / "taef2_encoder.pth", map_location="cpu", weights_only=True)
    state["1.conv.0.weight"] = state["1.conv.0.weight"][:32]
    torch.save(state, tmp_path / "taef2_encoder.pth")
    with pytest.raises(PretrainedWeightsError, match=r"1\.conv\.0\.weight.*shape"):
        load_taef2_weights(tmp_path, "encoder")
    del state["1.conv.0.weight"]
    torch.save(state, tmp_path / "taef2_encoder.pth")
    with pytest.raises(PretrainedWeightsError, match=r"1\.conv\.0\.weight.*missing"):
        load_taef2_weights(tmp_path, "encoder")
    (tmp_path / "taef2_encoder.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match="taef2_encoder.pth"):
        load_taef2_weights(tmp_path, "encoder")
    assert main(["-q", "import", "taef2", "--weights", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r" / "config.json").exists()
