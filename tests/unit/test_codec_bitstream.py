"""The codec's pure layer: numpy safetensors, priors, the bitstream format, bad files and a fuzz test."""

import time
import zlib

import numpy as np
import pytest
import safetensors.numpy

from posthoc_vq.codec import bitstream as bs
from posthoc_vq.codec import tensorfile
from posthoc_vq.codec.bitstream import BitstreamError, Header
from posthoc_vq.codec.priors import PriorError, context_prior, empirical_prior, uniform_prior
from posthoc_vq.errors import EXIT_USAGE, exit_code

K = 64


def markov_grid(n=300, h=6, w=6, m=1, seed=0):
    """Codes whose left neighbour predicts them: a code is near its left neighbour's code most of the time."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, K, (n, h, w, m))
    for c in range(1, w):
        near = rng.random((n, h, m)) < 0.8
        codes[:, :, c][near] = (codes[:, :, c - 1][near] + rng.integers(-1, 2, near.sum())) % K
    return codes


def groups_for(m=1):
    return np.tile(np.arange(K) // 4, (m, 1))  # 16 groups of neighbouring codes


def header(prior, n=1, container=False, shape=(1, 24, 24), grid=(6, 6, 1)):
    return Header("ab" * 32, "cd" * 32, prior.kind, prior.sha256[:16], shape, grid, n, container)


# ---------------------------------------------------------------------- tensorfile
def test_tensorfile_is_read_by_safetensors_and_reads_its_files(tmp_path):
    arrays = {"probs": np.random.default_rng(0).random((2, 3, 5)), "groups": np.arange(10, dtype=np.int32).reshape(2, 5)}
    sha = tensorfile.save(tmp_path / "a.safetensors", arrays, {"kind": "context"})
    ref = safetensors.numpy.load_file(tmp_path / "a.safetensors")
    assert set(ref) == set(arrays) and all(np.array_equal(ref[k], arrays[k]) for k in arrays)
    safetensors.numpy.save_file({"x": np.arange(6, dtype=np.float32).reshape(2, 3)}, tmp_path / "b.safetensors", metadata={"m": "1"})
    got, meta, _ = tensorfile.load(tmp_path / "b.safetensors")
    assert np.array_equal(got["x"], np.arange(6, dtype=np.float32).reshape(2, 3)) and meta == {"m": "1"}
    assert tensorfile.save(tmp_path / "c.safetensors", arrays, {"kind": "context"}) == sha  # deterministic bytes
    data = (tmp_path / "a.safetensors").read_bytes()
    with pytest.raises(tensorfile.TensorFileError, match="does not fit the file"):
        tensorfile.decode(data[:-3], "a")


# ---------------------------------------------------------------------- priors
@pytest.mark.parametrize("kind", ["uniform", "empirical", "context"])
@pytest.mark.parametrize("m", [1, 3])
def test_prior_round_trip_and_rate_within_one_percent_of_ideal(kind, m):
    codes = markov_grid(m=m)
    prior = {"uniform": lambda: uniform_prior(K, m), "empirical": lambda: empirical_prior(codes, K),
             "context": lambda: context_prior(codes, K, groups_for(m))}[kind]()
    words = prior.encode(codes)
    assert np.array_equal(prior.decode(words, *codes.shape[:3]), codes)
    ideal = prior.ideal_bits(codes).sum()
    assert ideal <= 32 * len(words) <= ideal * 1.01 + 64  # ANS: within 1% of -log2 p, plus its final state
    if kind == "uniform":
        assert ideal == pytest.approx(codes.size * np.log2(K))


def test_empirical_prior_is_counts_plus_floor_and_codes_unseen_codes():
    codes = np.array([0, 0, 0, 1, 2, 2]).reshape(6, 1, 1, 1)
    prior = empirical_prior(codes, 5, floor=0.5)
    np.testing.assert_allclose(prior.probs[0, 0], np.array([3.5, 1.5, 2.5, 0.5, 0.5]) / 8.5)
    unseen = np.array([4, 3, 4]).reshape(3, 1, 1, 1)
    assert np.array_equal(prior.decode(prior.encode(unseen), 3, 1, 1), unseen)


def test_context_prior_beats_empirical_on_correlated_grids_and_matches_counts():
    fit, test = markov_grid(seed=0), markov_grid(seed=1)
    emp, ctx = empirical_prior(fit, K), context_prior(fit, K, groups_for())
    assert ctx.ideal_bits(test).sum() < 0.8 * emp.ideal_bits(test).sum()
    # the first code of a row has no left neighbour and (row 0) no upper one: context (none, none)
    none = ctx.n_groups
    assert ctx.contexts(test)[0, 0, 0, 0] == none * (none + 1) + none
    # independent count of one context's distribution, smoothed as documented
    alpha = float(ctx.info["alpha"])
    base = np.bincount(fit.reshape(-1), minlength=K) + 0.5
    base = base / base.sum()
    left = np.full(fit.shape, none)
    left[:, :, 1:] = fit[:, :, :-1] // 4
    up = np.full(fit.shape, none)
    up[:, 1:] = fit[:, :-1] // 4
    sel = (left == 3) & (up == 5)
    counts = np.bincount(fit[sel], minlength=K)
    np.testing.assert_allclose(ctx.probs[0, 3 * (none + 1) + 5], (counts + alpha * base) / (counts.sum() + alpha), rtol=1e-12)


def test_context_prior_refuses_one_vector_latents():
    with pytest.raises(PriorError, match="token grid"):
        context_prior(np.zeros((10, 1, 1, 1), dtype=int), K, groups_for())


def test_prior_file_round_trip_and_identity():
    codes = markov_grid()
    prior = context_prior(codes, K, groups_for())
    from posthoc_vq.codec.priors import Prior

    again = Prior.from_bytes(prior.to_bytes())
    assert again.sha256 == prior.sha256 and np.array_equal(again.probs, prior.probs) and np.array_equal(again.groups, prior.groups)
    with pytest.raises(PriorError):
        Prior.from_bytes(prior.to_bytes()[:-10], "prior-context")


# ---------------------------------------------------------------------- format
def test_file_round_trip_header_and_documented_layout():
    codes = markov_grid(n=5)
    prior = empirical_prior(codes, K)
    h = header(prior, 5, True)
    data = bs.write(h, codes, prior)
    assert data[:4] == b"PHVQ" and data[4] == bs.FORMAT_VERSION and data[5] == 1
    assert data[6:38] == bytes.fromhex("ab" * 32) and data[38:70] == bytes.fromhex("cd" * 32) and data[70] == 1
    assert int.from_bytes(data[-4:], "little") == zlib.crc32(data[:-4])
    got_header, got = bs.read(data, prior)
    assert got_header == h and np.array_equal(got, codes)
    _, payload = bs.read_header(data)
    assert len(data) - len(payload) == bs.overhead_bytes((1, 24, 24), (6, 6, 1), len(payload), 5)


def test_uvarint_and_word_packing_round_trip():
    for v in [0, 1, 127, 128, 300, 2**21, 2**32 - 1]:
        enc = bs._uvarint(v)
        assert bs._read_uvarint(enc, 0, "x") == (v, len(enc))
    for words in [np.array([], np.uint32), np.array([5], np.uint32), np.array([1, 0], np.uint32), np.array([0x01020304, 0xFF], np.uint32)]:
        packed = bs.pack_words(words)
        assert len(packed) >= 4 * len(words) - 3 and np.array_equal(bs.unpack_words(packed)[: len(words)], words)


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:50], "truncated"),
    (lambda d: d[:-1], "checksum mismatch"),
    (lambda d: d[:20] + bytes([d[20] ^ 1]) + d[21:], "checksum mismatch"),
    (lambda d: b"GIF8" + d[4:], "not a posthoc-vq bitstream"),
    (lambda d: d[:4] + bytes([9]) + d[5:], "format version 9"),
    (lambda d: b"", "not a posthoc-vq bitstream"),
])
def test_damaged_files_are_one_line_errors(damage, message):
    codes = markov_grid(n=2)
    prior = empirical_prior(codes, K)
    data = bs.write(header(prior, 2, True), codes, prior)
    with pytest.raises(BitstreamError, match=message) as err:
        bs.read(damage(data), prior, "x.phvq")
    assert "\n" not in str(err.value) and exit_code(err.value) == EXIT_USAGE


def test_a_file_made_with_another_prior_is_refused():
    codes = markov_grid(n=2)
    a, b = empirical_prior(codes, K), uniform_prior(K)
    data = bs.write(header(a, 2, True), codes, a)
    with pytest.raises(BitstreamError, match="made with the empirical prior"):
        bs.read(data, b)


def test_a_flipped_payload_under_a_recomputed_crc_never_passes_for_the_original_codes():
    """Past the CRC (forged), a flipped payload bit is refused by the decoder or decodes to other codes, never to the same ones."""
    codes = markov_grid(n=3)
    prior = empirical_prior(codes, K)
    data = bytearray(bs.write(header(prior, 3, True), codes, prior))
    _, payload = bs.read_header(bytes(data))
    start = len(data) - 4 - len(payload)
    data[start + 2] ^= 0x40
    data[-4:] = zlib.crc32(bytes(data[:-4])).to_bytes(4, "little")
    try:
        _, got = bs.read(bytes(data), prior)
    except BitstreamError:
        return
    assert not np.array_equal(got, codes)  # ANS cannot always tell a flip: then the codes differ (the CRC is what catches it)


def test_fuzz_random_and_bit_flipped_files_raise_bitstream_errors_quickly():
    rng = np.random.default_rng(0)
    codes = markov_grid(n=4)
    priors = [empirical_prior(codes, K), context_prior(codes, K, groups_for())]
    valid = [bs.write(header(p, 4, True), codes, p) for p in priors]
    tic = time.perf_counter()
    outcomes = {"error": 0, "ok": 0}
    for i in range(3000):
        prior, data = priors[i % 2], bytearray(valid[i % 2])
        kind = i % 3
        if kind == 0:
            data = bytearray(rng.bytes(int(rng.integers(0, 300))))
            if i % 6 == 0:
                data[:4] = b"PHVQ"
        elif kind == 1:
            for _ in range(int(rng.integers(1, 4))):
                pos = int(rng.integers(0, len(data)))
                data[pos] ^= 1 << int(rng.integers(0, 8))
        else:
            data = data[: int(rng.integers(0, len(data)))]
        try:
            bs.read(bytes(data), prior, "fuzz")
            outcomes["ok"] += 1
        except BitstreamError:
            outcomes["error"] += 1
    assert outcomes["ok"] == 0 and outcomes["error"] == 3000
    assert time.perf_counter() - tic < 60


def test_the_two_step_argmin_is_argmin_ties_included():
    import torch

    from posthoc_vq.nearest import argmin_rows, nearest_code

    g = torch.Generator().manual_seed(0)
    for k in (16, 96, 128, 1024, 1000):
        d = torch.randn(500, k, generator=g)
        d[::7, 5] = d[::7, k - 3] = d[::7].min(1).values - 1  # exact ties: the lowest column wins
        d[::11] = 0.0  # a row of equal values
        assert torch.equal(argmin_rows(d.clone()), d.argmin(1))
    x, book = torch.randn(3000, 8, generator=g), torch.randn(1024, 8, generator=g)
    assert torch.equal(nearest_code(x, book), torch.cdist(x.double(), book.double()).argmin(1))
