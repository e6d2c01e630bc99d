"""compress -> decompress on trained runs: exact codes, the evaluation's images, real bytes, and clear errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from posthoc_vq.cli import main
from posthoc_vq.codec import bitstream as bs
from posthoc_vq.codec.bitstream import BitstreamError
from posthoc_vq.codec.standard import DEFAULT_QUALITIES
from posthoc_vq.config import QuantizeConfig, load_run_config
from posthoc_vq.errors import NotFoundError
from posthoc_vq.evaluation.bitstreams import ImageShapeError, decompress_files, open_codec
from posthoc_vq.evaluation.reconstruction import decode, split_images
from posthoc_vq.latents import from_tokens, load_run_splits, run_latents
from posthoc_vq.quantize.codebooks import fit_codebook_for_run
from posthoc_vq.quantize.latent.base import predict_codes
from posthoc_vq.train import train



@pytest.fixture(scope="module")
def runs(make_codec_runs):
    """A one-vector digits run (D=8) and a spatial one (4 x 2 x 2 tokens), with their codebooks."""
    out = {}
    for family, run in make_codec_runs(epochs=6).items():
        names = [fit_codebook_for_run(run, QuantizeConfig(method="kmeans", K=32))[0],
                 fit_codebook_for_run(run, QuantizeConfig(method="residual", K=16, n_stages=3))[0],
                 fit_codebook_for_run(run, QuantizeConfig(method="random-prior", K=32))[0]]
        if family == "conv":
            names.append(fit_codebook_for_run(run, QuantizeConfig(method="geodesic", K=16, n_neighbors=10))[0])
        out[family] = (run, names)
    return out


def evaluation_images(run, codec):
    """What `evaluate --codebook` decodes: test latents -> predict -> inverse_transform -> decode in batches of 1000."""
    splits = load_run_splits(run)
    latents = run_latents(run, "test", "mu", splits=splits, model=codec.model)
    codes = predict_codes(codec.codebook, latents.tokens(), latents.token_labels())
    z = from_tokens(codec.codebook.inverse_transform(codes), latents.latent_shape)
    return codes, decode(codec.model, torch.from_numpy(z))


@pytest.mark.parametrize("family", ["conv", "spatial"])
def test_decompress_gives_the_codes_and_the_images_of_evaluate(runs, family, tmp_path):
    run, names = runs[family]
    x = split_images(load_run_splits(run), "test")
    for name in names:
        codec = open_codec(run, name)
        ref_codes, ref_images = evaluation_images(run, codec)
        priors = codec.priors()
        assert set(priors) == ({"uniform", "empirical", "context"} if family == "spatial" else {"uniform", "empirical"})
        for prior in priors:
            for container in (False, True):
                files = codec.compress(x, prior, container)
                assert len(files) == (1 if container else len(x))
                decoded = decompress_files(run, files)
                codes = np.concatenate([c for _, c, _ in decoded])
                images = torch.cat([i for _, _, i in decoded])
                assert np.array_equal(codes.reshape(len(ref_codes), -1).squeeze(-1) if ref_codes.ndim == 1 else codes.reshape(ref_codes.shape), ref_codes), (name, prior)
                assert torch.equal(images, ref_images), (name, prior, container)


def test_evaluate_reports_real_bytes_per_image_and_they_match_the_files(runs, tmp_path):
    run, names = runs["spatial"]
    name = names[0]
    assert main(["evaluate", str(run), "--codebook", name]) == 0
    result = json.loads((run / "eval" / f"{name}-test.json").read_text())
    rate = result["rate"]
    assert rate["nominal_bits_per_image"] == pytest.approx(result["bits_per_image"]) == pytest.approx(4 * 5)
    assert main(["compress", str(run), "--codebook", name, "--split", "test", "--per-image", "--prior", "context", "--out", str(tmp_path / "c")]) == 0
    sizes = np.array([p.stat().st_size for p in sorted((tmp_path / "c").glob("*.phvq"))])
    np.testing.assert_array_equal(sizes * 8, rate["priors"]["context"]["per_image_bits"]["real"])
    assert rate["priors"]["context"]["real_bpp"]["mean"] == pytest.approx(sizes.mean() * 8 / 64)
    for kind, r in rate["priors"].items():
        ideal, real = np.array(r["per_image_bits"]["ideal"]), np.array(r["per_image_bits"]["real"])
        payload = real - 8 * r["header_bytes_mean"]
        assert (payload >= ideal - 1e-9).all() and (payload <= ideal + 8 * 8).all()  # ANS: the ideal plus its final state
    assert rate["priors"]["uniform"]["ideal_bpp"]["mean"] == pytest.approx(rate["nominal_bpp"])


def test_cli_round_trip_png_and_errors(runs, tmp_path, capsys):
    run, names = runs["conv"]
    name = names[0]
    assert main(["compress", str(run), "--codebook", name, "--split", "test", "--out", str(tmp_path / "c")]) == 0
    assert main(["decompress", str(tmp_path / "c" / "test.phvq"), "--run", str(run), "--out", str(tmp_path / "d")]) == 0
    pngs = sorted((tmp_path / "d").glob("test-*.png"))
    codec = open_codec(run, name)
    _, ref_images = evaluation_images(run, codec)
    assert len(pngs) == len(ref_images)
    first = np.asarray(Image.open(pngs[0]))
    np.testing.assert_array_equal(first, np.rint(ref_images[0, 0].clamp(0, 1).numpy() * 255).astype(np.uint8))
    # image files in, one file each; a wrong-size image is refused before any work
    assert main(["compress", str(run), str(pngs[0]), str(pngs[1]), "--codebook", name, "--out", str(tmp_path / "e")]) == 0
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["test-00000.phvq", "test-00001.phvq"]
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "big.png")
    capsys.readouterr()
    assert main(["compress", str(run), str(pngs[0]), str(tmp_path / "big.png"), "--codebook", name, "--out", str(tmp_path / "f")]) == 2
    assert "big.png: 3 channel(s) of 16x16 pixels, but this model takes 1 channel(s) of 8x8" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()
    with pytest.raises(ImageShapeError):
        codec.compress(torch.zeros(2, 3, 8, 8))
    # damaged and foreign files: one line, exit 2
    data = (tmp_path / "c" / "test.phvq").read_bytes()
    for bad, message in [(data[:-7], "checksum mismatch"), (b"hello world, not a bitstream", "not a posthoc-vq bitstream")]:
        (tmp_path / "bad.phvq").write_bytes(bad)
        assert main(["decompress", str(tmp_path / "bad.phvq"), "--run", str(run), "--out", str(tmp_path / "g")]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_files_for_another_model_or_codebook_are_refused(runs):
    (conv, conv_names), (spatial, spatial_names) = runs["conv"], runs["spatial"]
    conv_codec, other = open_codec(conv, conv_names[0]), open_codec(conv, conv_names[2])
    x = split_images(load_run_splits(conv), "test")[:3]
    data = conv_codec.compress(x, container=True)[0]
    with pytest.raises(BitstreamError, match="made with another codebook"):
        other.read(data)
    with pytest.raises(BitstreamError, match="does not have"):
        decompress_files(spatial, [data])
    header, payload = bs.read_header(data)
    forged = bs.write(bs.Header("00" * 32, *[getattr(header, f) for f in ("codebook_sha256", "prior_kind", "prior_id", "image_shape", "grid", "n_images", "container")]),
                      conv_codec.read(data)[1], conv_codec.prior("empirical"))
    with pytest.raises(BitstreamError, match="made for another model"):
        conv_codec.read(forged)


@pytest.mark.parametrize("quantizer", [["model.quantizer=vq", "model.codebook_size=32"], ["model.quantizer=rvq", "model.codebook_size=16", "model.stages=2"],
                                       ["model.quantizer=fsq", "model.fsq_levels=[4,4,2]"]])
def test_trained_quantizer_runs_are_coded_by_the_same_code(tmp_path, quantizer):
    """A trained VQ / RVQ / FSQ run's own codes as bitstreams: decompressed images are the model's own output (what evaluate measures)."""
    run = tmp_path / "run"
    config = load_run_config("digits", quantizer + ["model.family=spatial", "model.latent_dim=4", "model.channels=[16,32]", "train.epochs=3", "train.early_stopping=false"])
    train(config, run, progress=False)
    codec = open_codec(run, "trained")
    assert (run / "priors" / "trained" / "prior-context.safetensors").is_file()
    x = split_images(load_run_splits(run), "test")
    mu = torch.from_numpy(run_latents(run, "test", "mu", model=codec.model).values)
    ref = decode(codec.model, mu)  # model.decode quantizes z_e: the model's own output, what evaluate measures
    with torch.no_grad():
        out = codec.model.quantize(mu)
    for prior in ("empirical", "context"):
        data = codec.compress(x, prior, container=True)[0]
        (header, codes, images), = decompress_files(run, [data])
        assert header.codebook_sha256 == header.model_sha256 == codec.model_sha256
        assert np.array_equal(codes.reshape(out.codes.shape), out.codes.numpy())
        assert torch.equal(images, ref)
    assert main(["evaluate", str(run)]) == 0  # a trained run's evaluation holds its own codes' real rate
    rate = json.loads((run / "eval" / "continuous-test.json").read_text())["rate"]
    assert rate["nominal_bits_per_image"] == pytest.approx(codec.model.quantizer.bits_per_vector * 4)
    data = codec.compress(x[:1], "context")[0]
    assert rate["priors"]["context"]["per_image_bits"]["real"][0] == 8 * len(data)
    with pytest.raises(NotFoundError, match="no trained quantizer"):
        open_codec(runs_without_quantizer(tmp_path), "trained")


def runs_without_quantizer(tmp_path):
    run = tmp_path / "plain"
    train(load_run_config("digits", ["model.latent_dim=4", "model.channels=[16,32]", "train.epochs=1", "train.early_stopping=false"]), run, progress=False)
    return run


def test_codecs_command_compares_coded_codebooks_with_standard_codecs(runs, tmp_path, capsys):
    """`posthoc-vq codecs RUN`: standard codecs' real file sizes, the run's coded evaluations as curves, BD rows with reasons."""
    run, names = runs["spatial"]
    for name in names[:2]:
        assert main(["evaluate", str(run), "--codebook", name]) == 0
    out = tmp_path / "codecs"
    assert main(["codecs", str(run), "--codecs", "jpeg,webp", "--qualities", "webp=5,0,60", "--n-boot", "50", "--out", str(out), "--format", "json"]) == 0
    result = json.loads((out / "codecs-test.json").read_text())
    assert result["standard"]["webp"]["qualities"] == [0, 5, 60]  # the ladder given, sorted; jpeg keeps its default
    assert result["standard"]["jpeg"]["qualities"] == list(DEFAULT_QUALITIES["jpeg"])
    assert main(["codecs", str(run), "--codecs", "jpeg", "--qualities", "jpeg=1,high", "--out", str(out)]) == 2
    assert "--qualities 'jpeg=1,high': expected CODEC=Q,Q,..." in capsys.readouterr().err
    assert main(["codecs", str(run), "--codecs", "jpeg", "--qualities", "avif=10", "--out", str(out)]) == 2  # not among the codecs measured
    assert "qualities given for 'avif'" in capsys.readouterr().err
    assert (out / "codecs-test.png").stat().st_size > 10_000 and "BD-rate" in (out / "codecs-test.md").read_text()
    x = split_images(load_run_splits(run), "test")
    assert result["n_images"] == len(x) and set(result["standard"]) == {"jpeg", "webp"}
    # a standard codec's bpp is its files' bytes: re-encode one image at one quality and compare
    from posthoc_vq.codec.standard import encode
    from posthoc_vq.evaluation.standard_codecs import to_uint8

    q0 = result["ladder"]["codecs"]["jpeg"]["points"][0]["quality"]
    assert result["ladder"]["codecs"]["jpeg"]["per_image"]["bpp"][0][0] == len(encode(to_uint8(x[:1])[0], "jpeg", q0)) * 8 / 64
    # the run's codebooks: kmeans and residual, one point each, with real rates from their evaluations
    assert set(result["posthoc"]) == {"kmeans", "residual"}
    ev = json.loads((run / "eval" / f"{names[0]}-test.json").read_text())
    assert result["posthoc"]["kmeans"]["bpp"][0] == pytest.approx(ev["rate"]["priors"]["context"]["real_bpp"]["mean"])
    single = [r for r in result["bd"] if r["test"] == "post-hoc kmeans"]
    assert single and all(not r["comparable"] and "single operating point" in r["reason"] for r in single)
    pair = [r for r in result["bd"] if r["test"] == "webp" and r["anchor"] == "jpeg"]
    assert pair and all((r["bd_rate_percent"] is None) == (not r["comparable"]) for r in pair)


def test_table_shows_real_bpp_and_the_figure_can_use_it(runs, tmp_path):
    run, names = runs["spatial"]
    assert main(["evaluate", str(run)]) == 0 and main(["evaluate", str(run), "--codebook", names[0]]) == 0
    assert main(["table", str(run), "--x", "real-bpp", "--out", str(tmp_path), "--format", "json"]) == 0
    from posthoc_vq.report.codebook_table import load_results, rate_distortion_series, tidy_rows

    cont, books = load_results(run)
    rows = {r["codebook"]: r for r in tidy_rows(cont, books)}
    ev = json.loads((run / "eval" / f"{names[0]}-test.json").read_text())
    assert rows[names[0]]["bpp_real_context"] == ev["rate"]["priors"]["context"]["real_bpp"]["mean"]
    assert rows[names[0]]["bpp_nominal"] == pytest.approx(20 / 64)
    series = rate_distortion_series(books, x="real-bpp")
    point = next(s for s in series if names[0] in s["codebooks"])
    assert point["x"][point["codebooks"].index(names[0])] == min(rows[names[0]]["bpp_real_context"], rows[names[0]]["bpp_real_empirical"])
    assert (tmp_path / "rate-distortion-test.png").exists()
