"""The photo datasets ``bsds500``, ``kodak`` and ``bsds500-kodak``, and the crop / orientation / RGB rules.

The real files are read from ``$POSTHOC_VQ_SHARED_DATA`` or ``<repo>/../shared/datasets``; the
tests fail (not skip) when they are absent. Damaged archives are small tars built here from a few
real members.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from posthoc_vq.data import DATASETS, load_dataset
from posthoc_vq.data.photos import (
    BSDS500_ARCHIVE,
    BSDS500_ARCHIVE_SHA256,
    BSDS500_MANIFEST_SHA256,
    BSDS500_SHAPE,
    KODAK_PORTRAIT,
    KODAK_SHA256,
    KODAK_SHAPE,
    MANIFEST_NAME,
    PHOTO_DATASETS,
    PHOTO_MULTIPLE,
    crop_to_multiple,
    load_bsds500,
    load_kodak,
    load_photo_sets,
    prepare_photo,
    to_rgb,
)
from posthoc_vq.errors import DatasetError
from posthoc_vq.io import sha256_file

KODAK_FILES = tuple(f"kodak/kodim{i:02d}.png" for i in range(1, 25))


@pytest.fixture(scope="module")
def root(shared_datasets) -> Path:
    """The real datasets folder holding bsds500/ and kodak/."""
    return shared_datasets(f"bsds500/{BSDS500_ARCHIVE}", f"bsds500/{MANIFEST_NAME}", "SHA256SUMS", *KODAK_FILES,
                           what="BSDS500 / Kodak photos")


@pytest.fixture(scope="module")
def sets(root):
    return load_photo_sets("bsds500-kodak", root, progress=False)


@pytest.fixture(scope="module")
def tar_members(root) -> dict[str, bytes]:
    with tarfile.open(root / "bsds500" / BSDS500_ARCHIVE) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def _pil(raw: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(raw)) as im:
        return np.asarray(im.convert("RGB"))


# --- the real data --------------------------------------------------------------------------------

def test_registry_shapes_dtypes_labels(root, sets):
    assert set(PHOTO_DATASETS) <= set(DATASETS)
    bsds = load_dataset("bsds500", root)
    assert [part.images.shape for part in (bsds.train, bsds.val, bsds.test)] == [(450, 320, 480, 3), (50, 320, 480, 3), (0, 320, 480, 3)]
    kodak = load_dataset("kodak", root)
    assert [part.images.shape for part in (kodak.train, kodak.val, kodak.test)] == [(0, 512, 768, 3), (0, 512, 768, 3), (24, 512, 768, 3)]
    for s in (bsds, kodak):
        assert s.num_classes == 1 and s.channels == 3
        for part in (s.train, s.val, s.test):
            assert part.images.dtype == np.uint8 and part.labels.dtype == np.int64
            assert not part.labels.any()
    # DatasetSplits.image_size is the train split's H (it assumes square images).
    assert (bsds.image_size, kodak.image_size) == (320, 512)
    np.testing.assert_array_equal(bsds.train.images, sets["train"].images.images)
    np.testing.assert_array_equal(bsds.val.images, sets["val"].images.images)
    np.testing.assert_array_equal(kodak.test.images, sets["test"].images.images)
    assert (len(sets["train"]), len(sets["val"]), len(sets["test"])) == (450, 50, 24)
    assert all(n.startswith("train/") for n in sets["train"].names) and all(n.startswith("val/") for n in sets["val"].names)


def test_photo_datasets_refuse_image_size_and_name_missing_data(root, tmp_path):
    with pytest.raises(DatasetError, match="native resolution.*leave image_size unset"):
        load_dataset("bsds500", root, image_size=64)
    with pytest.raises(DatasetError, match=str(tmp_path / "bsds500" / BSDS500_ARCHIVE)):
        load_dataset("bsds500-kodak", tmp_path)
    with pytest.raises(DatasetError, match=str(tmp_path / "kodak")):
        load_dataset("kodak", tmp_path)


def test_checksum_constants_match_sha256sums(root):
    listed = dict(reversed(line.split()) for line in (root / "SHA256SUMS").read_text().splitlines())
    assert listed[f"bsds500/{BSDS500_ARCHIVE}"] == BSDS500_ARCHIVE_SHA256
    assert listed[f"bsds500/{MANIFEST_NAME}"] == BSDS500_MANIFEST_SHA256 == sha256_file(root / "bsds500" / MANIFEST_NAME)
    assert {f"kodak/{k}": v for k, v in KODAK_SHA256.items()} == {k: v for k, v in listed.items() if k.startswith("kodak/")}


def test_crop_is_top_left_of_a_direct_pillow_decode(sets, tar_members):
    for split in ("train", "val"):
        photos = sets[split]
        landscape = next(i for i, n in enumerate(photos.names) if n not in photos.rotated)
        direct = _pil(tar_members[photos.names[landscape]])
        assert direct.shape == (321, 481, 3)
        np.testing.assert_array_equal(photos.images.images[landscape], direct[:320, :480])
        portrait = next(i for i, n in enumerate(photos.names) if n in photos.rotated)
        direct = _pil(tar_members[photos.names[portrait]])
        assert direct.shape == (481, 321, 3)
        np.testing.assert_array_equal(photos.images.images[portrait], np.rot90(direct, k=1)[:320, :480])


def test_orientation_record(root, sets, tar_members):
    manifest = [line.split("\t") for line in tar_members[MANIFEST_NAME].decode().splitlines()[1:]]
    portrait = {row[0] for row in manifest if int(row[4]) > int(row[3])}
    assert len(portrait) == 89
    assert set(sets["train"].rotated) | set(sets["val"].rotated) == portrait
    assert sets["test"].rotated == KODAK_PORTRAIT
    names = sets["test"].names
    assert names == tuple(sorted(KODAK_SHA256))
    kodim04 = _pil((root / "kodak" / "kodim04.png").read_bytes())
    assert kodim04.shape == (768, 512, 3)  # portrait 512x768 (WxH)
    np.testing.assert_array_equal(sets["test"].images.images[names.index("kodim04.png")], np.rot90(kodim04, k=1))
    kodim01 = _pil((root / "kodak" / "kodim01.png").read_bytes())
    np.testing.assert_array_equal(sets["test"].images.images[0], kodim01)


def test_kodak_damaged_or_missing_file_is_named(root, tmp_path):
    folder = tmp_path / "kodak"
    folder.mkdir()
    for name in KODAK_SHA256:
        if name != "kodim07.png":
            (folder / name).symlink_to(root / "kodak" / name)
    with pytest.raises(DatasetError, match=r"missing \S+kodim07\.png"):
        load_kodak(folder, progress=False)
    raw = bytearray((root / "kodak" / "kodim07.png").read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (folder / "kodim07.png").write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"kodim07\.png has sha256 \w+ but b77d3f00\w+ was expected"):
        load_kodak(folder, progress=False)


# --- small tars built from real members ------------------------------------------------------------

def _pick(sets) -> list[str]:
    """Two train members (one portrait) and one val member."""
    train = sets["train"]
    return [train.names[0], train.rotated[0], sets["val"].names[0]]


def _manifest(tar_members, names, extra_rows=()) -> bytes:
    lines = tar_members[MANIFEST_NAME].decode().splitlines()
    rows = [line for line in lines[1:] if line.split("\t")[0] in names]
    return "\n".join([lines[0], *rows, *extra_rows, ""]).encode()


def _write_tar(folder: Path, members: dict[str, bytes], *, beside: bytes | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / BSDS500_ARCHIVE
    with tarfile.open(archive, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    if beside is not None:
        (folder / MANIFEST_NAME).write_bytes(beside)
    return archive


def _small(tmp_path, sets, tar_members, *, change=None, extra_rows=()):
    names = _pick(sets)
    manifest = _manifest(tar_members, names, extra_rows)
    members = {MANIFEST_NAME: manifest, **{n: tar_members[n] for n in names}}
    if change:
        members.update(change)
    return _write_tar(tmp_path / "bsds500", members, beside=manifest), names


def test_small_tar_loads_like_the_full_one(tmp_path, sets, tar_members):
    archive, names = _small(tmp_path, sets, tar_members)
    got = load_bsds500(archive.parent, sha256=sha256_file(archive), progress=False)
    assert got["train"].names == tuple(sorted(names[:2])) and got["val"].names == (names[2],)
    assert got["train"].rotated == (names[1],)
    for split in ("train", "val"):
        for i, name in enumerate(got[split].names):
            np.testing.assert_array_equal(got[split].images.images[i], sets[split].images.images[sets[split].names.index(name)])
    (archive.parent / MANIFEST_NAME).unlink()  # the copy beside the tar is optional
    again = load_bsds500(archive.parent, sha256=sha256_file(archive), progress=False)
    np.testing.assert_array_equal(again["train"].images.images, got["train"].images.images)


def test_wrong_archive_checksum_names_the_tar(tmp_path, sets, tar_members):
    archive, _ = _small(tmp_path, sets, tar_members)
    with pytest.raises(DatasetError) as e:
        load_bsds500(archive.parent, progress=False)  # the default is the published tar's sha256
    assert str(archive) in str(e.value) and BSDS500_ARCHIVE_SHA256 in str(e.value)


def test_flipped_byte_in_a_member_is_named(tmp_path, sets, tar_members):
    name = _pick(sets)[1]
    raw = bytearray(tar_members[name])
    raw[len(raw) // 2] ^= 0x01
    archive, _ = _small(tmp_path, sets, tar_members, change={name: bytes(raw)})
    with pytest.raises(DatasetError, match=rf"{BSDS500_ARCHIVE}:{name} is damaged: .* sha256") as e:
        load_bsds500(archive.parent, sha256=sha256_file(archive), progress=False)
    assert str(e.value).count("\n") == 0


def test_truncated_tar_is_named(tmp_path, sets, tar_members):
    archive, _ = _small(tmp_path, sets, tar_members)
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match=rf"{archive} is corrupt or truncated"):
        load_bsds500(archive.parent, sha256=sha256_file(archive), progress=False)


def test_missing_member_and_differing_beside_manifest_are_named(tmp_path, sets, tar_members):
    row = "val/999999.jpg\tBSR/x.jpg\t10\t481\t321\t" + "0" * 64
    archive, _ = _small(tmp_path, sets, tar_members, extra_rows=[row])
    with pytest.raises(DatasetError, match=r"val/999999\.jpg is listed in MANIFEST\.tsv but missing"):
        load_bsds500(archive.parent, sha256=sha256_file(archive), progress=False)
    (archive.parent / MANIFEST_NAME).write_bytes(_manifest(tar_members, _pick(sets)[:2]))
    with pytest.raises(DatasetError, match=r"MANIFEST\.tsv differs from"):
        load_bsds500(archive.parent, sha256=sha256_file(archive), progress=False)


def _member_with_manifest_row(tmp_path, sets, tar_members, raw: bytes):
    """A small tar whose val member is replaced by ``raw`` (a 481x321 image), with a matching manifest row."""
    names = _pick(sets)
    target = names[2]
    manifest = _manifest(tar_members, names).decode().splitlines()
    manifest = [
        "\t".join([target, "x", str(len(raw)), "481", "321", hashlib.sha256(raw).hexdigest()]) if line.startswith(target) else line
        for line in manifest
    ]
    text = ("\n".join(manifest) + "\n").encode()
    members = {MANIFEST_NAME: text, **{n: tar_members[n] for n in names}, target: raw}
    archive = _write_tar(tmp_path / "bsds500", members, beside=text)
    return archive, target


def test_undecodable_member_is_named(tmp_path, sets, tar_members):
    archive, target = _member_with_manifest_row(tmp_path, sets, tar_members, b"not a jpeg at all")
    with pytest.raises(DatasetError, match=rf"{target} cannot be decoded"):
        load_bsds500(archive.parent, sha256=sha256_file(archive), progress=False)


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_grayscale_or_rgba_member_is_an_error(tmp_path, sets, tar_members, mode):
    buf = io.BytesIO()
    Image.new(mode, (481, 321)).save(buf, "JPEG" if mode == "L" else "PNG")
    archive, target = _member_with_manifest_row(tmp_path, sets, tar_members, buf.getvalue())
    with pytest.raises(DatasetError, match=rf"{target} is a '{mode}' image, not RGB"):
        load_bsds500(archive.parent, sha256=sha256_file(archive), progress=False)


# --- the rules as functions -----------------------------------------------------------------------

def test_crop_to_multiple_odd_sizes():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (17, 33, 3), dtype=np.uint8)
    out = crop_to_multiple(image)
    assert PHOTO_MULTIPLE == 8 and out.shape == (16, 32, 3)
    np.testing.assert_array_equal(out, image[:16, :32])
    assert crop_to_multiple(image, 16).shape == (16, 32, 3)
    assert crop_to_multiple(image[:8, :8]).shape == (8, 8, 3)
    assert crop_to_multiple(image[:, :, 0]).shape == (16, 32)
    assert crop_to_multiple(np.zeros((321, 481, 3), np.uint8)).shape == BSDS500_SHAPE
    assert prepare_photo(np.zeros((481, 321, 3), np.uint8))[0].shape == BSDS500_SHAPE
    assert prepare_photo(np.zeros((768, 512, 3), np.uint8))[0].shape == KODAK_SHAPE


def test_too_small_image_is_an_error():
    with pytest.raises(DatasetError, match=r"tiny\.png is 100x7 \(WxH\), smaller than one 8x8 token"):
        crop_to_multiple(np.zeros((7, 100, 3), np.uint8), source="tiny.png")
    with pytest.raises(DatasetError, match="smaller than one 8x8 token"):
        prepare_photo(np.zeros((100, 5, 3), np.uint8))  # rotated to 5x100, still too small


def test_to_rgb_grayscale_and_alpha(tmp_path):
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    path = tmp_path / "gray.png"
    Image.fromarray(gray).save(path)
    with Image.open(path) as im:
        assert im.mode == "L"
        rgb = to_rgb(im, str(path))
    assert rgb.shape == (9, 11, 3) and rgb.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], gray)
    np.testing.assert_array_equal(to_rgb(gray[:, :, None], "a"), rgb)

    rgba = np.dstack([rng.integers(0, 256, (9, 11, 3), dtype=np.uint8), np.full((9, 11), 255, np.uint8)])
    path = tmp_path / "opaque.png"
    Image.fromarray(rgba, "RGBA").save(path)
    with Image.open(path) as im:
        assert im.mode == "RGBA"
        np.testing.assert_array_equal(to_rgb(im, str(path)), rgba[:, :, :3])
    rgba[2, 3, 3] = 254
    path = tmp_path / "transparent.png"
    Image.fromarray(rgba, "RGBA").save(path)
    with Image.open(path) as im, pytest.raises(DatasetError, match=rf"{path} has transparent pixels \(1 with alpha < 255\)"):
        to_rgb(im, str(path))
    with pytest.raises(DatasetError, match="has dtype uint16"):
        to_rgb(gray.astype(np.uint16), "deep.png")
    keep = rgba[:, :, :3]
    assert to_rgb(keep, "rgb") is keep
