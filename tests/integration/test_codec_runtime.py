"""The exported codec and its torch-free runtime: the same codes and (within 1e-4) the same images as RunCodec,
an INT8 decoder close to fp32, foreign files refused, and decoding with torch blocked."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from posthoc_vq.codec.bitstream import BitstreamError
from posthoc_vq.codec.runtime import CodecRuntime, stage_sum_latents
from posthoc_vq.config import QuantizeConfig, load_run_config
from posthoc_vq.errors import CheckpointError, NotFoundError
from posthoc_vq.evaluation.bitstreams import open_codec
from posthoc_vq.evaluation.reconstruction import split_images
from posthoc_vq.export.codec import export_codec
from posthoc_vq.latents import load_run_splits
from posthoc_vq.quantize.codebooks import fit_codebook_for_run
from posthoc_vq.train import train

TOL = 1e-4
EXPECTED_FILES = {"codec.json", "codebook.safetensors", "decoder.onnx", "decoder-int8.onnx", "prior-uniform.safetensors", "prior-empirical.safetensors"}


def psnr_db(a, b):
    mse = ((a.astype(np.float64) - b) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(1 / np.maximum(mse, 1e-12))


@pytest.fixture(scope="module")
def codecs(make_codec_runs):
    """A one-vector digits run (D=8) and a spatial one (4 x 2 x 2 tokens), each with a kmeans and a residual codebook, exported."""
    out = {}
    for family, run in make_codec_runs(epochs=3).items():
        for cfg in (QuantizeConfig(method="kmeans", K=32), QuantizeConfig(method="residual", K=16, n_stages=3)):
            name = fit_codebook_for_run(run, cfg)[0]
            manifest = export_codec(run, name, calibration_size=128)
            out[family, cfg.method] = (run, name, manifest)
    return out


@pytest.mark.parametrize("key", [("conv", "kmeans"), ("conv", "residual"), ("spatial", "kmeans"), ("spatial", "residual")])
def test_runtime_decodes_what_run_codec_decodes(codecs, key):
    run, name, manifest = codecs[key]
    folder = run / "export" / f"codec-{name}"
    files = {p.name for p in folder.iterdir()}
    assert files == EXPECTED_FILES | ({"prior-context.safetensors"} if key[0] == "spatial" else set())  # no candidate or temp file left
    assert json.loads((folder / "codec.json").read_text()) == json.loads(json.dumps(manifest))
    codec = open_codec(run, name)
    assert manifest["model_sha256"] == codec.model_sha256 and manifest["codebook_sha256"] == codec.codebook_sha256
    assert tuple(manifest["grid"]) == codec.grid and manifest["decoders"]["fp32"]["max_abs_diff_vs_torch"] < TOL
    assert manifest["int8"]["chosen"] == manifest["decoders"]["int8"]["format"] in ("qdq", "qoperator")
    assert {"qdq", "qoperator", "fp32"} <= set(manifest["int8"])
    rt, rt8 = CodecRuntime(folder, threads=1), CodecRuntime(folder, int8=True, threads=1)
    assert set(rt.priors) == set(codec.priors())

    x = split_images(load_run_splits(run), "test")
    codes = codec.codes(x)
    np.testing.assert_array_equal(rt.latents(codes), stage_sum_latents(rt.stages, codes, codec.latent_shape))
    reference = codec.images(codes).numpy()
    for prior in codec.priors():
        data = codec.compress(x, prior, container=True)[0]
        header, got_codes, images = rt.decompress(data)
        assert header.n_images == len(x) and header.prior_kind == prior
        np.testing.assert_array_equal(got_codes, codes)
        assert images.dtype == np.float32 and images.shape == reference.shape
        assert np.abs(images - reference).max() < TOL, (key, prior)
        _, ref_codes, ref_images = codec.decompress(data)
        np.testing.assert_array_equal(got_codes, ref_codes)
        assert np.abs(images - ref_images.numpy()).max() < TOL
    # one file per image, decoded together in batches
    files = codec.compress(x[:5], "empirical")
    decoded = rt.decompress_files(files)
    assert np.abs(np.concatenate([d.images for d in decoded]) - reference[:5]).max() < TOL
    np.testing.assert_array_equal(np.concatenate([d.codes for d in decoded]), codes[:5])
    # INT8: loose, but close
    int8 = rt8.decode_codes(codes)
    assert psnr_db(reference, int8).mean() > 30, psnr_db(reference, int8).mean()


def test_decompress_to_png_matches_the_cli_rounding(codecs, tmp_path):
    run, name, _ = codecs["spatial", "kmeans"]
    codec = open_codec(run, name)
    x = split_images(load_run_splits(run), "test")[:4]
    (tmp_path / "batch.phvq").write_bytes(codec.compress(x, "context", container=True)[0])
    (tmp_path / "one.phvq").write_bytes(codec.compress(x[:1], "empirical")[0])
    rt = CodecRuntime(run / "export" / f"codec-{name}")
    record = rt.decompress_to_png([tmp_path / "batch.phvq", tmp_path / "one.phvq"], tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"batch-{i:05d}.png" for i in range(4)] + ["one.png"]
    assert record["n_images"] == 5 and record["format"] == "png"
    reference = codec.images(codec.codes(x)).numpy()
    png = np.asarray(Image.open(tmp_path / "out" / "batch-00002.png"))
    expected = np.rint(np.clip(reference[2, 0], 0, 1) * 255).astype(np.uint8)
    assert np.abs(png.astype(int) - expected).max() <= 1  # rounding of values within 1e-4 of the same number
    rt.decompress_to_png([tmp_path / "one.phvq"], tmp_path / "npy", pillow=False)
    assert np.abs(np.load(tmp_path / "npy" / "one.npy") - reference[0]).max() < TOL


def test_files_for_another_model_or_codebook_and_damaged_exports_are_refused(codecs, tmp_path):
    conv, conv_name, manifest = codecs["conv", "kmeans"]
    _, residual_name, _ = codecs["conv", "residual"]
    spatial, spatial_name, _ = codecs["spatial", "kmeans"]
    rt = CodecRuntime(conv / "export" / f"codec-{conv_name}")
    x = split_images(load_run_splits(conv), "test")[:3]
    other = open_codec(conv, residual_name).compress(x, container=True)[0]
    with pytest.raises(BitstreamError, match="made with another codebook") as err:
        rt.decompress(other)
    assert manifest["codebook_sha256"] in str(err.value) and open_codec(conv, residual_name).codebook_sha256 in str(err.value)
    foreign = open_codec(spatial, spatial_name).compress(split_images(load_run_splits(spatial), "test")[:2], container=True)[0]
    with pytest.raises(BitstreamError, match="made for another model") as err:
        rt.decompress(foreign)
    assert manifest["model_sha256"] in str(err.value) and open_codec(spatial, spatial_name).model_sha256 in str(err.value)
    with pytest.raises(BitstreamError, match="checksum mismatch"):
        rt.decompress(open_codec(conv, conv_name).compress(x, container=True)[0][:-3])

    # a modified file in the export, a missing manifest, and an export without INT8
    bad = tmp_path / "bad"
    export_codec(conv, conv_name, bad, int8=False)
    assert "decoder-int8.onnx" not in {p.name for p in bad.iterdir()}
    with pytest.raises(NotFoundError, match="no int8 decoder"):
        CodecRuntime(bad, int8=True)
    data = bytearray((bad / "codebook.safetensors").read_bytes())
    data[-1] ^= 1
    (bad / "codebook.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="codebook.safetensors: sha256"):
        CodecRuntime(bad)
    with pytest.raises(NotFoundError, match="no codec manifest"):
        CodecRuntime(tmp_path)


def test_the_runtime_decodes_with_torch_blocked(codecs, tmp_path):
    run, name, _ = codecs["spatial", "residual"]
    codec = open_codec(run, name)
    x = split_images(load_run_splits(run), "test")[:6]
    (tmp_path / "f.phvq").write_bytes(codec.compress(x, "context", container=True)[0])
    np.save(tmp_path / "reference.npy", codec.images(codec.codes(x)).numpy())
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # `import torch` raises ImportError from here on
        sys.modules["PIL"] = None    # and Pillow too: the .npy fallback
        import numpy as np
        from posthoc_vq.codec.runtime import CodecRuntime
        rt = CodecRuntime({str(run / "export" / f"codec-{name}")!r}, threads=1)
        header, codes, images = rt.decompress(open({str(tmp_path / "f.phvq")!r}, "rb").read())
        ref = np.load({str(tmp_path / "reference.npy")!r})
        assert np.abs(images - ref).max() < {TOL}, np.abs(images - ref).max()
        record = rt.decompress_to_png([{str(tmp_path / "f.phvq")!r}], {str(tmp_path / "out")!r})
        assert record["format"] == "npy" and record["n_images"] == 6, record
        loaded = [m for m in sys.modules if (m == "torch" or m.startswith("torch.")) and sys.modules[m] is not None]
        assert not loaded, loaded
        print("decoded", images.shape)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "decoded (6, 1, 8, 8)" in proc.stdout
    assert len(list((tmp_path / "out").glob("f-*.npy"))) == 6


def test_a_trained_quantizer_run_exports_its_own_codebook(tmp_path):
    """The model's own RVQ as a codec: its decoder alone in the graph (decode_unquantized), as RunCodec decodes it."""
    run = tmp_path / "rvq"
    config = load_run_config("digits", ["model.quantizer=rvq", "model.codebook_size=16", "model.stages=2", "model.family=spatial", "model.latent_dim=4",
                                        "model.channels=[16,32]", "train.epochs=2", "train.early_stopping=false"])
    train(config, run, progress=False)
    manifest = export_codec(run, "trained", int8=False)
    assert manifest["codebook_sha256"] == manifest["model_sha256"] and manifest["grid"] == [2, 2, 2]
    codec = open_codec(run, "trained")
    x = split_images(load_run_splits(run), "test")[:64]
    data = codec.compress(x, "context", container=True)[0]
    _, codes, images = CodecRuntime(run / "export" / "codec-trained").decompress(data)
    _, ref_codes, ref_images = codec.decompress(data)
    np.testing.assert_array_equal(codes, ref_codes)
    assert np.abs(images - ref_images.numpy()).max() < TOL
