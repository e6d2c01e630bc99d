"""The standard codecs (posthoc_vq.codec.standard) and their rate-distortion ladders (posthoc_vq.evaluation.standard_codecs).

Images are 32x32 RGB and 28x28 grayscale crops of scikit-image's bundled photographs (no network, no
dataset files) at positions drawn from a numpy seed, and smooth random images.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio

from posthoc_vq.codec import standard
from posthoc_vq.codec.standard import CODECS, DEFAULT_QUALITIES, QUALITY_RANGE, available_codecs, decode, encode
from posthoc_vq.errors import ConfigError, MissingExtraError
from posthoc_vq.evaluation.standard_codecs import codec_ladder, to_uint8


@pytest.fixture(params=CODECS)
def codec(request) -> str:
    if request.param == "jxl":
        pytest.importorskip("imagecodecs", reason="JPEG XL needs the 'codecs' extra (imagecodecs)")
    return request.param


def photo_crops(n: int, size: int, gray: bool, seed: int = 0) -> np.ndarray:
    """(n, size, size[, 3]) uint8 crops of bundled photographs at seeded positions."""
    rng = np.random.default_rng(seed)
    photos = [skdata.camera(), skdata.coins()] if gray else [skdata.astronaut(), skdata.chelsea(), skdata.coffee()]
    crops = []
    for i in range(n):
        photo = photos[i % len(photos)]
        y, x = rng.integers(0, photo.shape[0] - size), rng.integers(0, photo.shape[1] - size)
        crops.append(photo[y : y + size, x : x + size])
    return np.stack(crops).astype(np.uint8)


def smooth_images(n: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """(n, size, size, channels) uint8 smooth random images (Gaussian-filtered noise, stretched to 10..245)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = gaussian_filter(rng.normal(size=(size, size, channels)), sigma=(4, 4, 0))
        img = (img - img.min()) / (img.max() - img.min())
        out.append(np.round(10 + 235 * img))
    return np.stack(out).astype(np.uint8)


def as_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, C, H, W) float in [0, 1] from (N, H, W) or (N, H, W, 3) uint8."""
    t = torch.from_numpy(images).float() / 255.0
    return t[:, None] if t.ndim == 3 else t.permute(0, 3, 1, 2)


RGB = photo_crops(6, 32, gray=False)
GRAY = photo_crops(6, 28, gray=True)


# --- encode / decode -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("gray", [False, True], ids=["rgb", "gray"])
def test_round_trip_shape_and_dtype(codec, gray):
    image = (GRAY if gray else RGB)[0]
    for quality in DEFAULT_QUALITIES[codec][:: len(DEFAULT_QUALITIES[codec]) - 1]:  # lowest and highest
        data = encode(image, codec, quality)
        assert isinstance(data, bytes) and len(data) > 0
        out = decode(data, codec, channels=1 if gray else None)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert out.flags["C_CONTIGUOUS"]
        # close to the input, not some other image
        assert np.abs(out.astype(float) - image).mean() < 40
    # asking for the other layout converts it
    data = encode(image, codec, DEFAULT_QUALITIES[codec][-1])
    assert decode(data, codec, channels=3).shape == (*image.shape[:2], 3)
    assert decode(data, codec, channels=1).shape == image.shape[:2]


def test_grayscale_stored_natively_except_webp(codec):
    image = GRAY[1]
    out = decode(encode(image, codec, 50), codec)  # as the file stores it
    if codec == "webp":
        assert out.shape == (*image.shape, 3)  # WebP has no grayscale: RGB, and channels=1 is needed
        np.testing.assert_array_equal(decode(encode(image, codec, 50), codec, channels=1), out[:, :, 1])
    else:
        assert out.shape == image.shape


def test_bytes_are_the_file(codec, tmp_path):
    for image in (RGB[2], GRAY[2]):
        data = encode(image, codec, 50)
        path = tmp_path / f"image.{codec}"
        path.write_bytes(data)
        assert os.path.getsize(path) == len(data)
        if codec == "jxl":
            imagecodecs = pytest.importorskip("imagecodecs")
            from_file = np.asarray(imagecodecs.imread(str(path)))
            assert imagecodecs.jpegxl_check(path.read_bytes())
        else:
            with Image.open(path) as pil:
                assert pil.format == standard._PIL_FORMAT[codec]
                from_file = np.asarray(pil)
        np.testing.assert_array_equal(from_file, decode(data, codec))


def test_jpeg_file_is_4_2_0_and_optimized():
    from PIL import JpegImagePlugin

    with Image.open(io.BytesIO(encode(RGB[0], "jpeg", 75))) as pil:
        assert JpegImagePlugin.get_sampling(pil) == 2  # 4:2:0
        assert not pil.info.get("progressive")
    with Image.open(io.BytesIO(encode(GRAY[0], "jpeg", 75))) as pil:
        assert pil.mode == "L" and pil.layers == 1
    # optimize=True: smaller than the same file with the standard Huffman tables
    plain = io.BytesIO()
    Image.fromarray(RGB[0]).save(plain, "JPEG", quality=75, subsampling="4:2:0")
    assert len(encode(RGB[0], "jpeg", 75)) < len(plain.getvalue())


def test_deterministic(codec):
    for image in (RGB[3], GRAY[3]):
        for quality in (DEFAULT_QUALITIES[codec][1], DEFAULT_QUALITIES[codec][-2]):
            assert encode(image, codec, quality) == encode(image.copy(), codec, quality)


def test_higher_quality_more_bytes_on_one_image(codec):
    sizes = [len(encode(RGB[4], codec, q)) for q in DEFAULT_QUALITIES[codec]]
    assert sizes[-1] > sizes[0]


# --- errors ------------------------------------------------------------------------------------------------------


def test_unknown_codec():
    with pytest.raises(ConfigError, match=r"unknown standard codec 'png': use one of jpeg, webp, avif, jxl"):
        encode(RGB[0], "png", 50)
    with pytest.raises(ConfigError, match=r"unknown standard codec 'JPEG'"):
        decode(b"", "JPEG")


@pytest.mark.parametrize("codec_name, quality", [("jpeg", 0), ("jpeg", 101), ("webp", -1), ("avif", 101), ("jxl", 101), ("jxl", -5)])
def test_quality_out_of_range(codec_name, quality):
    lo, hi = QUALITY_RANGE[codec_name]
    with pytest.raises(ConfigError, match=rf"^{codec_name} quality must be an integer from {lo} to {hi}, got {quality}$"):
        encode(RGB[0], codec_name, quality)


@pytest.mark.parametrize("quality", [50.0, "50", True, None])
def test_quality_must_be_an_integer(quality):
    with pytest.raises(ConfigError, match="webp quality must be an integer from 0 to 100"):
        encode(RGB[0], "webp", quality)


def test_numpy_integer_quality_accepted():
    assert encode(RGB[0], "webp", np.int64(50)) == encode(RGB[0], "webp", 50)


def test_bad_images():
    with pytest.raises(TypeError, match="uint8"):
        encode(RGB[0].astype(np.float32), "jpeg", 50)
    with pytest.raises(ValueError, match=r"\(H, W\) grayscale or \(H, W, 3\) RGB"):
        encode(np.zeros((8, 8, 4), np.uint8), "jpeg", 50)
    with pytest.raises(ValueError, match="not a decodable webp file"):
        decode(encode(RGB[0], "jpeg", 50), "webp")  # a JPEG file is not WebP
    with pytest.raises(ConfigError, match="channels must be None, 1 or 3"):
        decode(encode(RGB[0], "jpeg", 50), "jpeg", channels=2)


def test_jxl_without_imagecodecs_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "imagecodecs", None)  # import imagecodecs now fails as if absent
    with pytest.raises(MissingExtraError, match=r"JPEG XL needs the 'codecs' extra: pip install 'posthoc-vq\[codecs\]'"):
        encode(RGB[0], "jxl", 50)
    with pytest.raises(MissingExtraError, match="'codecs' extra"):
        decode(b"\xff\x0a", "jxl")
    assert available_codecs() == ("jpeg", "webp", "avif")
    with pytest.raises(MissingExtraError, match="'codecs' extra"):
        codec_ladder(as_tensor(RGB[:1]), ["jxl"])
    assert list(codec_ladder(as_tensor(RGB[:1]), qualities={"jpeg": [50]})["codecs"]) == ["jpeg", "webp", "avif"]  # default: what is available


def test_available_codecs_lists_jxl_with_imagecodecs():
    pytest.importorskip("imagecodecs")
    assert available_codecs() == CODECS


def test_default_ladders_are_in_range_and_ascending():
    for codec_name in CODECS:
        ladder = DEFAULT_QUALITIES[codec_name]
        lo, hi = QUALITY_RANGE[codec_name]
        assert len(ladder) == 8 and list(ladder) == sorted(set(ladder)) and lo <= ladder[0] and ladder[-1] <= hi


def test_codec_module_does_not_import_torch():
    code = "import sys, posthoc_vq.codec.standard; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- ladders -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gray", [False, True], ids=["rgb", "gray"])
def test_ladder_rate_and_psnr_increase_with_quality(codec, gray):
    images = GRAY if gray else RGB
    result = codec_ladder(as_tensor(images), [codec])
    points = result["codecs"][codec]["points"]
    assert [p["quality"] for p in points] == list(DEFAULT_QUALITIES[codec])
    bpp = np.array([p["bpp"]["mean"] for p in points])
    psnr = np.array([p["psnr_db"]["mean"] for p in points])
    ssim = np.array([p["ssim"]["mean"] for p in points])
    assert np.all(np.diff(bpp) > 0), bpp
    assert np.all(np.diff(psnr) >= 0), psnr
    assert np.all(np.diff(ssim) >= -1e-3), ssim
    assert psnr[-1] - psnr[0] > 10  # the ladder spans low to high quality
    assert 0 < bpp[0] < 4 and bpp[-1] > 1.5 * bpp[0]


def test_jpeg_highest_quality_on_smooth_images():
    images = smooth_images(5, 32, 3)
    result = codec_ladder(as_tensor(images), ["jpeg"])
    top = result["codecs"]["jpeg"]["points"][-1]
    assert top["quality"] == max(DEFAULT_QUALITIES["jpeg"])
    assert top["psnr_db"]["mean"] > 35
    assert min(result["codecs"]["jpeg"]["per_image"]["psnr_db"][i][-1] for i in range(5)) > 35


def test_ladder_values_match_independent_measurement(codec):
    """bpp is the file's bits per pixel and PSNR is scikit-image's, image by image, on the decoded pixels."""
    for images in (RGB[:3], GRAY[:3]):
        qualities = [DEFAULT_QUALITIES[codec][1], DEFAULT_QUALITIES[codec][5]]
        result = codec_ladder(as_tensor(images), [codec], {codec: qualities})
        entry = result["codecs"][codec]
        h, w = images.shape[1:3]
        assert np.array(entry["per_image"]["bpp"]).shape == (3, 2)
        for j, q in enumerate(qualities):
            files = [encode(img, codec, q) for img in images]
            assert entry["points"][j]["bytes_total"] == sum(len(f) for f in files)
            for i, (img, f) in enumerate(zip(images, files)):
                out = decode(f, codec, channels=1 if images.ndim == 3 else None)
                assert entry["per_image"]["bpp"][i][j] == pytest.approx(len(f) * 8 / (h * w), abs=1e-9)
                expected = peak_signal_noise_ratio(img / 255.0, out / 255.0, data_range=1)
                assert entry["per_image"]["psnr_db"][i][j] == pytest.approx(expected, abs=1e-4)
            assert entry["points"][j]["psnr_db"]["mean"] == pytest.approx(np.mean([r[j] for r in entry["per_image"]["psnr_db"]]), abs=1e-5)
            assert entry["points"][j]["bpp"]["mean"] == pytest.approx(sum(len(f) for f in files) * 8 / (h * w) / len(images))


def test_ladder_result_layout_and_progress():
    import json

    calls = []
    result = codec_ladder(as_tensor(RGB[:4]), ["webp", "jpeg"], {"jpeg": [90, 30, 30]}, progress=lambda *a: calls.append(a))
    json.dumps(result, allow_nan=False)  # strict JSON
    assert result["n_images"] == 4 and result["image_shape"] == [3, 32, 32]
    assert list(result["codecs"]) == ["webp", "jpeg"]
    assert [p["quality"] for p in result["codecs"]["jpeg"]["points"]] == [30, 90]  # sorted, duplicates dropped
    jpeg = result["codecs"]["jpeg"]
    assert jpeg["settings"]["optimize"] is True and jpeg["settings"]["subsampling"] == "4:2:0"
    assert result["codecs"]["webp"]["settings"]["method"] == 6
    for point in jpeg["points"]:
        assert set(point) == {"quality", "bpp", "bytes_total", "psnr_db", "ssim", "encode_seconds", "decode_seconds"}
        assert point["bpp"]["n"] == 4 and point["encode_seconds"] > 0 and point["decode_seconds"] > 0
    for key in ("bpp", "psnr_db", "ssim"):
        assert np.array(jpeg["per_image"][key]).shape == (4, 2)
    assert "header" in result["note"] and result["input_8bit_max_error"] == 0.0
    total = 4 * (8 + 2)
    assert calls[0] == ("standard codecs", 0, total) and calls[-1] == ("standard codecs", total, total)
    assert all(c[0] == "standard codecs" and c[2] == total for c in calls)
    assert [c[1] for c in calls] == sorted(c[1] for c in calls)


def test_ladder_ground_truth_is_the_8bit_image():
    x = as_tensor(RGB[:2]) + 0.4 / 255  # not on the 8-bit grid: the codecs see round(x * 255)
    result = codec_ladder(x, ["jpeg"], {"jpeg": [80]})
    reference = codec_ladder(as_tensor(RGB[:2]), ["jpeg"], {"jpeg": [80]})
    assert result["input_8bit_max_error"] == pytest.approx(0.4 / 255, rel=1e-4)
    assert result["codecs"]["jpeg"]["per_image"]["psnr_db"] == reference["codecs"]["jpeg"]["per_image"]["psnr_db"]
    np.testing.assert_array_equal(to_uint8(x), RGB[:2])


def test_ladder_errors():
    x = as_tensor(RGB[:1])
    with pytest.raises(ConfigError, match="unknown standard codec 'gif'"):
        codec_ladder(x, ["jpeg", "gif"])
    with pytest.raises(ConfigError, match="avif quality must be an integer from 0 to 100, got 120"):
        codec_ladder(x, ["avif"], {"avif": [50, 120]})
    with pytest.raises(ConfigError, match="qualities given for 'webp', which is not among the codecs measured"):
        codec_ladder(x, ["jpeg"], {"webp": [50]})
    with pytest.raises(ConfigError, match="non-empty list"):
        codec_ladder(x, ["jpeg"], {"jpeg": []})
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) with C 1 or 3"):
        codec_ladder(torch.rand(1, 2, 8, 8), ["jpeg"])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        codec_ladder(x + 1.0, ["jpeg"])
