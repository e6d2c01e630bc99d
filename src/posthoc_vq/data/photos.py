"""Real photographs at native resolution: ``bsds500``, ``kodak`` and ``bsds500-kodak``.

Expected files (``<data_dir>`` is ``--data-dir`` / ``$POSTHOC_VQ_DATA``, e.g. ``../shared/datasets``)::

    <data_dir>/bsds500/photos-train.tar   uncompressed tar: MANIFEST.tsv, train/<id>.jpg (450), val/<id>.jpg (50)
    <data_dir>/bsds500/MANIFEST.tsv       optional copy of the tar's MANIFEST.tsv (must then be identical)
    <data_dir>/kodak/kodim01.png .. kodim24.png

Rules
-----
* **Native resolution.** Images are never resized. The one crop rule, used everywhere
  (datasets, the codec's compression of user images, the standard codecs), is
  :func:`crop_to_multiple`: keep the top-left ``floor(H/m)*m x floor(W/m)*m`` pixels, with
  ``m =`` :data:`PHOTO_MULTIPLE` ``= 8``, the downsampling factor of taef2 and most
  latent-diffusion VAEs. An image smaller than one 8x8 token after the crop is a
  :class:`~posthoc_vq.errors.DatasetError`.
* **One orientation**, so that every split is one ``(N, H, W, 3)`` uint8 array: a portrait image
  (``H > W``) is turned to landscape with ``np.rot90(image, k=1)`` **before** the crop, i.e. rotated
  90 degrees counter-clockwise as displayed (the original top-right corner becomes the top-left
  corner; Pillow's ``Image.Transpose.ROTATE_90``). Each loaded :class:`PhotoSet` records which images
  were turned in :attr:`PhotoSet.rotated` (the orientation record). After rotation and crop every
  BSDS500 image is 320x480 (H x W; the originals are 481x321 or 321x481) and every Kodak image
  512x768 (no crop needed). :func:`prepare_photo` applies both rules.
* **RGB only.** These datasets are RGB by construction, so a grayscale, palette or RGBA file in
  them is an error (the file is damaged or another file). :func:`to_rgb` is the rule for *user*
  images elsewhere: grayscale is replicated to three channels, an alpha channel is an error unless
  fully opaque (then dropped).
* **Checksums.** The tar's sha256 is checked against :data:`BSDS500_ARCHIVE_SHA256` (as listed in
  ``SHA256SUMS`` and ``bsds500/SOURCE.md``), then every image member against the sha256 (and byte
  count, width and height) of its row of the tar's ``MANIFEST.tsv``; the manifest and the members
  must list the same files. A ``MANIFEST.tsv`` beside the tar must equal the one inside. Each Kodak
  PNG is checked against :data:`KODAK_SHA256` (``SHA256SUMS``, ``kodak/SOURCE.md``). Every
  failure is a DatasetError naming the file or member and saying what to do.
* **Order and labels.** Images are in sorted member (file) name order. There are no classes:
  labels are all 0 and ``num_classes`` is 1.
* **No cache.** Decoding all 500 BSDS500 JPEGs with Pillow takes well under a second, so the
  decoded arrays are not cached (unlike :mod:`posthoc_vq.data.cifar_jpeg`).

Splits (``val_fraction`` and ``split_seed`` are ignored: the splits are fixed)
-----------------------------------------------------------------------------
* ``bsds500``: train = the tar's 450 ``train/`` images, val = its 50 ``val/`` images (the tar's
  own split, not a random carve), test = empty ``(0, 320, 480, 3)``. BSDS500 must **never** be a
  test set: BSDS500 train+val is BSDS300 and its test split holds BSD68/CBSD68, and BSD100 is
  BSDS500 val, so it overlaps the usual denoising and super-resolution benchmarks.
* ``kodak``: train and val empty ``(0, 512, 768, 3)``, test = the 24 Kodak images.
* ``bsds500-kodak``: train and val from ``bsds500``, test = Kodak: the pairing of the
  pretrained-autoencoder study (fit on BSDS500, test on Kodak, which shares no image with BSDS500).
  Its train/val images are 320x480 and its test images 512x768.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from posthoc_vq.data.progress import make_progress
from posthoc_vq.data.splits import DatasetSplits, ImageSet
from posthoc_vq.errors import DatasetError
from posthoc_vq.io import sha256_file

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

#: Crop multiple: the downsampling factor of taef2 and most latent-diffusion VAEs.
PHOTO_MULTIPLE = 8

BSDS500 = "bsds500"
KODAK = "kodak"
BSDS500_KODAK = "bsds500-kodak"
PHOTO_DATASETS: tuple[str, ...] = (BSDS500, KODAK, BSDS500_KODAK)

BSDS500_ARCHIVE = "photos-train.tar"
#: sha256 of ``photos-train.tar`` (``SHA256SUMS`` and ``bsds500/SOURCE.md``).
BSDS500_ARCHIVE_SHA256 = "cf7288f39ec1b0cf65111aede1c77877df9fedde3c8720bb474e704dd86af1b8"
MANIFEST_NAME = "MANIFEST.tsv"
#: sha256 of the published ``MANIFEST.tsv`` (inside the tar and beside it).
BSDS500_MANIFEST_SHA256 = "6b44184740b35975a35057814d09ff762d3e617596dc93c38681ba05394efd62"
MANIFEST_COLUMNS: tuple[str, ...] = ("name", "bsds500_path", "bytes", "width", "height", "sha256")
BSDS500_SPLITS: tuple[str, ...] = ("train", "val")
#: Images per split of the published tar.
BSDS500_COUNTS: dict[str, int] = {"train": 450, "val": 50}
#: ``(H, W, C)`` after rotation to landscape and the /8 crop.
BSDS500_SHAPE: tuple[int, int, int] = (320, 480, 3)
KODAK_SHAPE: tuple[int, int, int] = (512, 768, 3)
#: The six portrait Kodak images (rotated to landscape on load).
KODAK_PORTRAIT: tuple[str, ...] = ("kodim04.png", "kodim09.png", "kodim10.png", "kodim17.png", "kodim18.png", "kodim19.png")
#: sha256 of each Kodak PNG (``SHA256SUMS`` and ``kodak/SOURCE.md``).
KODAK_SHA256: dict[str, str] = {
    "kodim01.png": "a56e27cbf5f843c048b6af1d6e090760e9c92fadba88b7dee0205918a37523bd",
    "kodim02.png": "4f4b74a79237e311d72cad958237b5f7088d8bce1c82305ebefe1a70e3022dfd",
    "kodim03.png": "e25ca1ff2f0c0cb5fdfd5f9b0a0bb21ac4c3de3c84a67f35b09a85d3306249db",
    "kodim04.png": "e3b946107c5d3441c022f678d0c3caf1e224d81b1604ba840a4f88e562de61aa",
    "kodim05.png": "10349e963c5c813d327852f82c1795fa4148d69fedffc4c589bee458e3ac3d53",
    "kodim06.png": "363510303b715d4cbc384e1ce227e466b613a09e1b71ae985882bf8e7fbd9b18",
    "kodim07.png": "b77d3f006f42414bb242222e0482e750c0fb9e5ee8d4bed2f6f11c5605fe54a4",
    "kodim08.png": "ba23983c76b4832ee0e8af0592664756841a16779acd69f792e268fb6d13d6e7",
    "kodim09.png": "6a4361c2fc194feb4edaa9f9a4a0620fb9943e460ac7fdf037fb0f6dd6607a7d",
    "kodim10.png": "9dfb70f5867c29ff9ed6313683f19b3d867849e40fbc0c4c54a4a89df341cf23",
    "kodim11.png": "7936814b58b5387fce2e4e2488b4ec830dadd95fa9520f358ddb30990b50f2b6",
    "kodim12.png": "d78c37c2f04f23761ed2367dd77e2db584ddd4c3950833fecf89f199a8126980",
    "kodim13.png": "bc34a3ce58dea09dce1704c997171602de90cb34d0c8503a988b77f473d39b08",
    "kodim14.png": "55a94550ff18f3246c4074fd32b77b0c74447c26b6ad274d564d999c0450ba6e",
    "kodim15.png": "7538cbb80cb9103606c48b806eae57d56c885c7f90b9b3be70a41160f9cbb683",
    "kodim16.png": "a89c7268ccd4718ba424a99fc4643c572cf692ca6eae887185ceb4e9f11d2e54",
    "kodim17.png": "37afcc89fbdcb76d9518e04b2fc011027e2f4cd14b3b2f83cefd721641a47c5b",
    "kodim18.png": "1a9258c365988961d87a0598725b609139c303ad48a5aad6c503c3b1a87849aa",
    "kodim19.png": "b7450b264b1b0a411390d8931b112c27905a992520fc90569dc4b920aa32bbdc",
    "kodim20.png": "3b46c71e3b92a563820ba32936be8330c586c41f938efd94be938386aae4328a",
    "kodim21.png": "ac958597c82073f6bb65129c68f72b651db5b9efd82e11547d07350214bc268b",
    "kodim22.png": "1cee58eb1f2d9c7ebb254d208a03c783ce6cf2c4d8c2cf45e235dd23b4ce1b29",
    "kodim23.png": "e3111a2fd4da24af15d6459ef9eacfe54106b38e27b4a21821b75c3f5d2d5baf",
    "kodim24.png": "1071c68372cc5a01435c2c225a5cf7d4bb803846ec08bb6b3d6721b156d7cb96",
}
#: Messages for ``posthoc-vq data download <name>``: these datasets have no scriptable download.
#: how photo datasets are prepared, as recorded in every evaluation result of a run on one (``data.preparation``)
PREPARATION: dict[str, str] = {
    "resize": "never",
    "orientation": "portrait images turned to landscape, np.rot90(k=1) (90 degrees counter-clockwise), before the crop",
    "crop": f"top-left floor(H/{PHOTO_MULTIPLE})*{PHOTO_MULTIPLE} x floor(W/{PHOTO_MULTIPLE})*{PHOTO_MULTIPLE} pixels",
}

PHOTO_NO_DOWNLOAD: dict[str, str] = {
    BSDS500: (
        "dataset 'bsds500' has no scriptable download; put photos-train.tar (sha256 "
        f"{BSDS500_ARCHIVE_SHA256}, see bsds500/SOURCE.md) in DATA_DIR/bsds500/ and pass --data-dir DATA_DIR"
    ),
    KODAK: "dataset 'kodak' has no scriptable download; put kodim01.png .. kodim24.png in DATA_DIR/kodak/ and pass --data-dir DATA_DIR",
    BSDS500_KODAK: "dataset 'bsds500-kodak' is bsds500 + kodak; put both in DATA_DIR/bsds500/ and DATA_DIR/kodak/ and pass --data-dir DATA_DIR",
}

_BSDS_FIX = f"replace it with the published {BSDS500_ARCHIVE} (sha256 {BSDS500_ARCHIVE_SHA256}; see bsds500/SOURCE.md)"
_KODAK_FIX = "replace it with the original Kodak PNG (see kodak/SOURCE.md and SHA256SUMS)"
_USER_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")


def crop_to_multiple(image: np.ndarray, multiple: int = PHOTO_MULTIPLE, *, source: str = "image") -> np.ndarray:
    """Keep the top-left ``floor(H/multiple)*multiple x floor(W/multiple)*multiple`` pixels.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` or ``(H, W, C)``, any dtype (uint8 in practice).
    multiple : int
        Both output sides are multiples of it (default :data:`PHOTO_MULTIPLE` = 8).
    source : str
        Names the image in the error message.

    Returns
    -------
    np.ndarray
        ``image[:H', :W']``, a view (no copy).

    Raises
    ------
    DatasetError
        If a side is shorter than ``multiple`` (the image holds no whole token).
    """
    if image.ndim not in (2, 3):
        raise ValueError(f"{source}: expected an (H, W) or (H, W, C) array, got shape {image.shape}")
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    h, w = image.shape[:2]
    hc, wc = h // multiple * multiple, w // multiple * multiple
    if hc == 0 or wc == 0:
        raise DatasetError(
            f"{source} is {w}x{h} (WxH), smaller than one {multiple}x{multiple} token; "
            f"use an image at least {multiple} px on each side"
        )
    return image[:hc, :wc]


def to_landscape(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """Turn a portrait ``(H, W, ...)`` image (``H > W``) to landscape with ``np.rot90(image, k=1)``.

    That is 90 degrees counter-clockwise as displayed: ``out[i, j] = image[j, W - 1 - i]``.

    Returns
    -------
    image, rotated : np.ndarray, bool
        The (possibly rotated, as a view) image and whether it was rotated.
    """
    if image.shape[0] > image.shape[1]:
        return np.rot90(image, k=1), True
    return image, False


def prepare_photo(image: np.ndarray, *, multiple: int = PHOTO_MULTIPLE, source: str = "image") -> tuple[np.ndarray, bool]:
    """Apply the orientation rule, then the crop rule: :func:`to_landscape`, then :func:`crop_to_multiple`.

    Returns
    -------
    image, rotated : np.ndarray, bool
        A view of shape ``(H', W', ...)`` with ``H' <= W'`` multiples of ``multiple``, and whether it was rotated.
    """
    image, rotated = to_landscape(image)
    return crop_to_multiple(image, multiple, source=source), rotated


def to_rgb(image: np.ndarray | Image.Image, source: str) -> np.ndarray:
    """A user image as ``(H, W, 3)`` uint8 RGB (for images outside the datasets, e.g. ones to compress).

    * Grayscale (an ``(H, W)`` or ``(H, W, 1)`` array; PIL modes ``'1'``, ``'L'``) is replicated
      to three equal channels.
    * An alpha channel (``(H, W, 4)`` RGBA or ``(H, W, 2)`` grayscale+alpha arrays; PIL modes
      ``'RGBA'``, ``'LA'``, ``'PA'``, a ``'P'`` palette with transparency) is a DatasetError unless
      every alpha value is 255 (fully opaque); it is then dropped. Compositing onto a background
      would be a guess, so it is not done.
    * ``(H, W, 3)`` arrays and ``'RGB'`` images pass through (an RGB uint8 array is returned as is,
      without a copy). A ``'P'`` palette image without transparency is converted to RGB.
    * Anything else (non-uint8 arrays, 16-bit or float PIL modes, CMYK, YCbCr, ...) is a
      DatasetError: convert the image to 8-bit RGB first.

    The datasets of this module do not use it: their images are RGB by construction, and a
    grayscale or RGBA file in them is an error.

    Parameters
    ----------
    image : np.ndarray or PIL.Image.Image
        The image.
    source : str
        Names the image in error messages (e.g. its path).

    Raises
    ------
    DatasetError
        Naming ``source``, for a transparent or unsupported image.
    """
    if isinstance(image, Image.Image):
        if image.mode not in _USER_MODES:
            raise DatasetError(
                f"{source} is a PIL {image.mode!r} image, which is not supported; "
                f"convert it to 8-bit RGB (or grayscale) first"
            )
        if image.mode == "1":
            image = image.convert("L")
        elif image.mode == "PA" or (image.mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
        elif image.mode == "P":
            image = image.convert("RGB")
        image = np.asarray(image)
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise DatasetError(f"{source} has dtype {array.dtype}, not uint8; convert it to 8-bit RGB first")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise DatasetError(
            f"{source} has shape {array.shape}; expected (H, W) grayscale or (H, W, C) with C in 1..4 "
            f"(gray, gray+alpha, RGB, RGBA)"
        )
    channels = array.shape[2]
    if channels in (2, 4):
        alpha = array[:, :, -1]
        if not (alpha == 255).all():
            raise DatasetError(
                f"{source} has transparent pixels ({int((alpha != 255).sum())} with alpha < 255); "
                f"flatten it onto a background (or save it without alpha) first"
            )
        array = array[:, :, :-1]
    if array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    return array


@dataclass(frozen=True)
class PhotoSet:
    """One split of photographs with its file names and orientation record.

    Attributes
    ----------
    images : ImageSet
        ``(N, H, W, 3)`` uint8 images (landscape, cropped) and ``(N,)`` zero labels.
    names : tuple of str
        Member or file name of each image, in order (e.g. ``'train/100007.jpg'``, ``'kodim04.png'``).
    rotated : tuple of str
        The orientation record: names of the images that were portrait and turned to landscape.
    """

    images: ImageSet
    names: tuple[str, ...]
    rotated: tuple[str, ...]

    def __len__(self) -> int:
        """Return the number of images."""
        return len(self.images)


def empty_photo_set(shape: tuple[int, int, int]) -> PhotoSet:
    """An empty split, images ``(0, *shape)`` uint8."""
    return PhotoSet(ImageSet(np.empty((0, *shape), dtype=np.uint8), np.empty((0,), dtype=np.int64)), (), ())


def _decode_photo(
    raw: bytes, source: str, shape: tuple[int, int, int], fix: str, size: tuple[int, int] | None = None
) -> tuple[np.ndarray, bool]:
    """Decode an RGB photo (of ``size`` = (W, H) when given) to ``shape`` after :func:`prepare_photo`.

    Any problem is a DatasetError naming ``source``.
    """
    try:
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            mode, pixels = im.mode, np.asarray(im)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"{source} cannot be decoded ({exc}); the file is damaged: {fix}") from exc
    if mode != "RGB":
        raise DatasetError(f"{source} is a {mode!r} image, not RGB, but this dataset is RGB only; the file is damaged or another file: {fix}")
    if size is not None and (pixels.shape[1], pixels.shape[0]) != size:
        raise DatasetError(
            f"{source} is {pixels.shape[1]}x{pixels.shape[0]} (WxH) but {MANIFEST_NAME} gives {size[0]}x{size[1]}; "
            f"the file is another image: {fix}"
        )
    out, rotated = prepare_photo(pixels, source=source)
    if out.shape != shape:
        raise DatasetError(
            f"{source} is {pixels.shape[1]}x{pixels.shape[0]} (WxH), giving {out.shape[0]}x{out.shape[1]} (HxW) after "
            f"rotation and crop, not {shape[0]}x{shape[1]}; the file is another image: {fix}"
        )
    return out, rotated


def _decode_all(
    entries: list[tuple[str, bytes, tuple[int, int] | None]], shape: tuple[int, int, int], where: str, fix: str, bar: Progress, task: TaskID
) -> PhotoSet:
    """Decode ``(name, bytes, (W, H) or None)`` entries into one PhotoSet, advancing ``task`` per image."""
    images = np.empty((len(entries), *shape), dtype=np.uint8)
    rotated = []
    for i, (name, raw, size) in enumerate(entries):
        images[i], turned = _decode_photo(raw, f"{where}{name}", shape, fix, size)
        if turned:
            rotated.append(name)
        bar.advance(task)
    labels = np.zeros(len(entries), dtype=np.int64)
    return PhotoSet(ImageSet(images, labels), tuple(entry[0] for entry in entries), tuple(rotated))


@dataclass(frozen=True)
class ManifestRow:
    """One row of ``MANIFEST.tsv``."""

    name: str
    bsds500_path: str
    bytes: int
    width: int
    height: int
    sha256: str


def read_manifest(text: str, source: str) -> dict[str, ManifestRow]:
    """Parse ``MANIFEST.tsv`` (tab-separated, header :data:`MANIFEST_COLUMNS`) into ``name -> row``.

    Raises
    ------
    DatasetError
        Naming ``source`` and the line, for a wrong header, a malformed or duplicate row.
    """
    lines = text.splitlines()
    if not lines or tuple(lines[0].split("\t")) != MANIFEST_COLUMNS:
        raise DatasetError(f"{source} does not start with the header {' '.join(MANIFEST_COLUMNS)} (tab-separated); {_BSDS_FIX}")
    rows: dict[str, ManifestRow] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            if len(fields) != len(MANIFEST_COLUMNS):
                raise ValueError(f"{len(fields)} fields, expected {len(MANIFEST_COLUMNS)}")
            row = ManifestRow(fields[0], fields[1], int(fields[2]), int(fields[3]), int(fields[4]), fields[5].lower())
            if len(row.sha256) != 64 or any(c not in "0123456789abcdef" for c in row.sha256):
                raise ValueError(f"{fields[5]!r} is not a sha256")
        except ValueError as exc:
            raise DatasetError(f"{source} line {number} is malformed ({exc}); {_BSDS_FIX}") from exc
        if row.name in rows:
            raise DatasetError(f"{source} line {number} repeats {row.name!r}; {_BSDS_FIX}")
        rows[row.name] = row
    return rows


def _read_tar(archive: Path) -> tuple[bytes | None, dict[str, bytes]]:
    """``(MANIFEST.tsv bytes or None, {image member name: bytes})`` in one pass over the tar."""
    manifest, members = None, {}
    try:
        with tarfile.open(archive, "r:") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if member.isdir():
                    continue
                parts = name.split("/")
                if not member.isfile():
                    raise DatasetError(f"{archive}:{member.name} is not a regular file; {_BSDS_FIX}")
                if name == MANIFEST_NAME:
                    manifest = tar.extractfile(member).read()
                    continue
                if len(parts) != 2 or parts[0] not in BSDS500_SPLITS or not parts[1].lower().endswith((".jpg", ".jpeg")):
                    raise DatasetError(f"{archive}:{member.name} does not fit the layout <train|val>/<id>.jpg; {_BSDS_FIX}")
                if name in members:
                    raise DatasetError(f"{archive}:{member.name} occurs twice; {_BSDS_FIX}")
                members[name] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(f"{archive} is corrupt or truncated ({type(exc).__name__}: {exc}); {_BSDS_FIX}") from exc
    return manifest, members


def load_bsds500(
    folder: Path,
    *,
    sha256: str = BSDS500_ARCHIVE_SHA256,
    shape: tuple[int, int, int] = BSDS500_SHAPE,
    progress: bool = True,
) -> dict[str, PhotoSet]:
    """Load the BSDS500 photos of ``folder / 'photos-train.tar'``, checked and decoded.

    Parameters
    ----------
    folder : Path
        The ``bsds500/`` folder itself (holding ``photos-train.tar`` and, optionally, ``MANIFEST.tsv``).
    sha256 : str
        Expected sha256 of the tar (default: the published tar's); tests pass that of the tars they build.
    shape : tuple of int
        Expected ``(H, W, C)`` of every image after rotation and crop.
    progress : bool
        Draw a progress bar on stderr while decoding.

    Returns
    -------
    dict
        ``{'train': PhotoSet, 'val': PhotoSet}`` in sorted member-name order; for the published tar
        450 and 50 images of ``(320, 480, 3)``, 89 of them rotated.

    Raises
    ------
    DatasetError
        Naming the tar, the manifest or the member: a missing tar, another sha256, a corrupt or
        truncated tar, a manifest that is absent, malformed or disagrees with the members (missing,
        extra, wrong size or sha256), an undecodable, non-RGB or wrongly sized image.
    """
    archive = folder / BSDS500_ARCHIVE
    if not archive.is_file():
        raise DatasetError(
            f"dataset {BSDS500!r} not found: missing {archive}. Put the published {BSDS500_ARCHIVE} "
            f"(sha256 {sha256}) there, or point --data-dir / $POSTHOC_VQ_DATA at a folder that contains {BSDS500}/"
        )
    actual = sha256_file(archive)
    if actual != sha256:
        raise DatasetError(f"{archive} has sha256 {actual} but {sha256} was expected: it is damaged or another file; {_BSDS_FIX}")
    manifest_raw, members = _read_tar(archive)
    if manifest_raw is None:
        raise DatasetError(f"{archive} has no {MANIFEST_NAME} at its root; {_BSDS_FIX}")
    beside = folder / MANIFEST_NAME
    if beside.is_file() and beside.read_bytes() != manifest_raw:
        raise DatasetError(
            f"{beside} differs from {archive}:{MANIFEST_NAME}; one of them is damaged: delete {beside} "
            f"(the copy inside the tar is the one checked by the tar's sha256) or restore it"
        )
    rows = read_manifest(manifest_raw.decode("utf-8", errors="replace"), f"{archive}:{MANIFEST_NAME}")
    missing = sorted(set(rows) - set(members))
    if missing:
        raise DatasetError(f"{archive}:{missing[0]} is listed in {MANIFEST_NAME} but missing from the tar ({len(missing)} missing); {_BSDS_FIX}")
    extra = sorted(set(members) - set(rows))
    if extra:
        raise DatasetError(f"{archive}:{extra[0]} is not listed in {MANIFEST_NAME} ({len(extra)} unlisted); {_BSDS_FIX}")
    for name in sorted(members):
        raw, row = members[name], rows[name]
        digest = hashlib.sha256(raw).hexdigest()
        if len(raw) != row.bytes or digest != row.sha256:
            raise DatasetError(
                f"{archive}:{name} is damaged: {len(raw)} bytes with sha256 {digest}, but {MANIFEST_NAME} "
                f"gives {row.bytes} bytes with sha256 {row.sha256}; {_BSDS_FIX}"
            )
    out = {}
    with make_progress(enabled=progress) as bar:
        task = bar.add_task(f"decoding {BSDS500}", total=len(members))
        for split in BSDS500_SPLITS:
            entries = [
                (name, members[name], (rows[name].width, rows[name].height)) for name in sorted(members) if name.startswith(f"{split}/")
            ]
            out[split] = _decode_all(entries, shape, f"{archive}:", _BSDS_FIX, bar, task)
    return out


def load_kodak(
    folder: Path,
    *,
    sha256s: Mapping[str, str] | None = None,
    shape: tuple[int, int, int] = KODAK_SHAPE,
    progress: bool = True,
) -> PhotoSet:
    """Load the 24 Kodak PNGs of ``folder``, checked and decoded.

    Parameters
    ----------
    folder : Path
        The ``kodak/`` folder itself (``kodim01.png`` .. ``kodim24.png``; other files are ignored).
    sha256s : mapping or None
        ``file name -> sha256`` of the files to load (default :data:`KODAK_SHA256`, all 24).
    shape : tuple of int
        Expected ``(H, W, C)`` of every image after rotation and crop.
    progress : bool
        Draw a progress bar on stderr while decoding.

    Returns
    -------
    PhotoSet
        Images ``(24, 512, 768, 3)`` uint8 in file-name order; ``rotated`` is :data:`KODAK_PORTRAIT`.

    Raises
    ------
    DatasetError
        Naming the file: missing, another sha256, undecodable, not RGB or wrongly sized.
    """
    sha256s = KODAK_SHA256 if sha256s is None else sha256s
    if not folder.is_dir():
        raise DatasetError(
            f"dataset {KODAK!r} not found: missing {folder}. Put kodim01.png .. kodim24.png there, "
            f"or point --data-dir / $POSTHOC_VQ_DATA at a folder that contains {KODAK}/"
        )
    entries = []
    for name in sorted(sha256s):
        path = folder / name
        if not path.is_file():
            raise DatasetError(f"dataset {KODAK!r} is incomplete: missing {path}; put the original {name} there (see kodak/SOURCE.md)")
        raw = path.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        if digest != sha256s[name]:
            raise DatasetError(f"{path} has sha256 {digest} but {sha256s[name]} was expected: it is damaged or another file; {_KODAK_FIX}")
        entries.append((name, raw, None))
    with make_progress(enabled=progress) as bar:
        task = bar.add_task(f"decoding {KODAK}", total=len(entries))
        return _decode_all(entries, shape, f"{folder}/", _KODAK_FIX, bar, task)


def load_photo_sets(name: str, data_dir: Path, *, progress: bool = True) -> dict[str, PhotoSet]:
    """The train, val and test :class:`PhotoSet` of a photo dataset (empty splits included).

    Parameters
    ----------
    name : str
        One of :data:`PHOTO_DATASETS`.
    data_dir : Path
        Root data folder holding ``bsds500/`` and/or ``kodak/``.
    progress : bool
        Draw progress bars on stderr while decoding.

    Returns
    -------
    dict
        ``{'train', 'val', 'test'} -> PhotoSet`` (see the module docstring for the splits).
    """
    if name not in PHOTO_DATASETS:
        raise DatasetError(f"unknown photo dataset {name!r}; choose one of: {', '.join(PHOTO_DATASETS)}")
    if name == KODAK:
        empty = empty_photo_set(KODAK_SHAPE)
        return {"train": empty, "val": empty, "test": load_kodak(data_dir / KODAK, progress=progress)}
    bsds = load_bsds500(data_dir / BSDS500, progress=progress)
    test = load_kodak(data_dir / KODAK, progress=progress) if name == BSDS500_KODAK else empty_photo_set(BSDS500_SHAPE)
    return {"train": bsds["train"], "val": bsds["val"], "test": test}


def load_photo_dataset(name: str, data_dir: Path, *, progress: bool = True) -> DatasetSplits:
    """:func:`load_photo_sets` as a :class:`DatasetSplits` (``num_classes`` 1, all labels 0)."""
    sets = load_photo_sets(name, data_dir, progress=progress)
    return DatasetSplits(name, sets["train"].images, sets["val"].images, sets["test"].images, 1)
