"""Trained quantizers (VQ, RVQ, FSQ): our wrappers against vector-quantize-pytorch and against hand computation."""

import copy
import math

import numpy as np
import pytest
import vector_quantize_pytorch as vqp
import torch

from typed_results import typed
from posthoc_vq.audit import audit
from posthoc_vq.config import VAEConfig, load_run_config
from posthoc_vq.errors import ConfigError
from posthoc_vq.evaluation import reconstruction
from posthoc_vq.evaluation.reconstruction import code_usage, image_quality, trained_quantizer_result
from posthoc_vq.io import load_tensors, save_tensors
from posthoc_vq.latents import to_tokens
from posthoc_vq.metrics.codebook import codebook_usage, usage_stats
from posthoc_vq.models import ConvVAE, SpatialVAE, build_vae, load_state_checked
from posthoc_vq.models import quantizers
from posthoc_vq import nearest as nearest_module
from posthoc_vq.models.quantizers import FSQ, RVQ, VQ, CodeUsage
from posthoc_vq.nearest import nearest_code


def config(**kw) -> VAEConfig:
    return VAEConfig(**{"image_size": 8, "in_channels": 1, "latent_dim": 4, "channels": [16, 32], **kw})


def vq(**kw) -> VQ:
    return VQ(config(quantizer="vq", codebook_size=8, **kw))


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model.quantizer=vq", "model.codebook_size=64", "model.fsq_levels=[8,5]"], r"model\.fsq_levels is set, but model\.quantizer is 'vq'"),
        (["model.quantizer=vq", "model.codebook_size=1"], r"model\.codebook_size: Input should be greater than or equal to 2"),
        (["model.quantizer=fsq", "model.fsq_levels=[8,1,5]"], r"model\.fsq_levels \[8, 1, 5\]: every level must be at least 2"),
        (["model.quantizer=vq", "model.codebook_size=64", "model.stages=2"], r"model\.stages is set, but model\.quantizer is 'vq' and only rvq uses it"),
        (["model.stages=2"], r"model\.stages is set, but model\.quantizer is 'none'"),
        (["model.quantizer=vq"], r"model\.quantizer 'vq' needs model\.codebook_size"),
        (["model.quantizer=rvq", "model.codebook_size=64"], r"model\.quantizer 'rvq' needs model\.stages"),
        (["model.quantizer=fsq"], r"model\.quantizer 'fsq' needs model\.fsq_levels"),
        (["model.quantizer=fsq", "model.fsq_levels=[8,5]", "model.codebook_size=64"], r"model\.codebook_size is set, but model\.quantizer is 'fsq'"),
        (["model.codebook_size=64"], r"model\.codebook_size is set, but model\.quantizer is 'none'"),
        (["model.quantizer=fsq", "model.fsq_levels=[]"], r"model\.fsq_levels: List should have at least 1 item"),
        (["model.quantizer=vq", "model.codebook_size=64", "model.ema_decay=1.0"], r"model\.ema_decay: Input should be less than 1"),
        (["model.quantizer=kmeans"], r"model\.quantizer: Input should be 'none', 'vq', 'rvq' or 'fsq'"),
    ],
)
def test_nonsense_quantizer_settings_are_config_errors_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_run_config("digits", overrides)


def test_valid_quantizer_settings_load():
    c = load_run_config("digits", ["model.quantizer=rvq", "model.codebook_size=16", "model.stages=2"]).model
    assert (c.quantizer, c.codebook_size, c.stages, c.commitment, c.ema_decay, c.dead_code_threshold, c.kmeans_init) == ("rvq", 16, 2, 0.25, 0.99, 0.25, True)
    assert load_run_config("digits").model.quantizer == "none"


# ----------------------------------------------------------------------------- bits, shapes, parameters


@pytest.mark.parametrize(
    "kw,bits",
    [
        (dict(quantizer="vq", codebook_size=64), 6.0),
        (dict(quantizer="rvq", codebook_size=16, stages=3), 12.0),
        (dict(quantizer="fsq", fsq_levels=[8, 5, 5, 5]), math.log2(1000)),
        (dict(quantizer="fsq", fsq_levels=[8, 8, 4, 4]), 10.0),
        (dict(quantizer="fsq", fsq_levels=[8] * 12 + [4, 4]), 40.0),
    ],
)
def test_bits_per_image_are_exact_for_vectors_and_grids(kw, bits):
    vector = build_vae(config(**kw))
    assert vector.quantizer.bits_per_vector == bits
    grid = build_vae(config(family="spatial", channels=[16], **kw))  # 8x8 -> 4x4 grid: 16 tokens
    torch.manual_seed(0)
    x = torch.rand(5, 1, 8, 8)
    z = grid.eval().encode(x).mu
    r = trained_quantizer_result(grid, x, z, np.arange(5) % 2, "test", image_quality(x, grid.decode(z).detach()))
    assert r["tokens_per_image"] == 16 and r["bits_per_image"] == 16 * bits and r["bits_per_token"] == bits
    assert r["usage"]["test"]["n_vectors"] == 5 * 16


def test_quantized_models_have_no_logvar_head_and_count_their_codebook():
    cont, q = build_vae(config()), build_vae(config(quantizer="vq", codebook_size=8))
    assert isinstance(q, ConvVAE) and q.fc_logvar is None and not any("logvar" in k for k in q.state_dict())
    head = sum(p.numel() for p in cont.fc_logvar.parameters())
    assert q.num_parameters() == cont.num_parameters() - head + 8 * 4  # the K x D codebook, learned by EMA
    assert q.encode(torch.rand(2, 1, 8, 8)).logvar is None
    sq = build_vae(config(family="spatial", channels=[16], quantizer="rvq", codebook_size=8, stages=2))
    assert isinstance(sq, SpatialVAE) and sq.conv_logvar is None and sq.quantizer.codebook_numel() == 2 * 8 * 4


def test_codes_follow_the_token_order_of_latents():
    torch.manual_seed(0)
    model = build_vae(config(family="spatial", channels=[16], quantizer="vq", codebook_size=8, kmeans_init=False)).eval()
    z = torch.randn(3, 4, 4, 4)
    out = model.quantize(z)
    assert out.codes.shape == (3, 16) and out.codes.dtype == torch.int64
    expected = nearest_code(torch.from_numpy(to_tokens(z.numpy())), model.quantizer.codebook).view(3, 16)
    assert torch.equal(out.codes, expected)
    assert torch.equal(out.z_q[1, :, 2, 3], model.quantizer.codebook[out.codes[1, 2 * 4 + 3]])


# ----------------------------------------------------------------------------- against the library and by hand


def test_nearest_code_in_blocks_equals_brute_force(monkeypatch):
    torch.manual_seed(12)
    x, codebook = torch.randn(1000, 6), torch.randn(37, 6)
    reference = torch.cdist(x.double(), codebook.double()).argmin(1)
    assert torch.equal(nearest_code(x, codebook), reference)
    monkeypatch.setattr(nearest_module, "DISTANCE_BLOCK", 37 * 64)  # blocks of 64 rows
    assert torch.equal(nearest_code(x, codebook), reference)


def test_nearest_code_over_tiles_of_a_wide_codebook_equals_faiss_and_keeps_ties_lowest(monkeypatch):
    """Above DISTANCE_BLOCK / MIN_BLOCK_ROWS codes the codes are tiled too (running minimum): the labels of faiss's exact search,
    and a duplicated code in a later tile never takes a row from its first copy."""
    import faiss

    torch.manual_seed(13)
    x, codebook = torch.randn(3000, 8), torch.randn(1000, 8)
    codebook[900] = codebook[5]  # a tie across tiles
    x[:10] = codebook[5] + 1e-3 * torch.randn(10, 8)
    monkeypatch.setattr(nearest_module, "DISTANCE_BLOCK", 64 * 128)  # 8 rows per block < MIN_BLOCK_ROWS: tiles of 64 codes
    monkeypatch.setattr(nearest_module, "MIN_BLOCK_ROWS", 128)
    index = faiss.IndexFlatL2(8)
    index.add(codebook.numpy())
    expected = torch.from_numpy(index.search(x.numpy(), 1)[1][:, 0])
    got = nearest_code(x, codebook)
    assert torch.equal(got[10:], expected[10:])
    assert set(got[:10].tolist()) == {5} and set(expected[:10].tolist()) <= {5, 900}  # the same code either way; ours: the lowest


def test_vq_eval_lookup_equals_the_library_and_changes_no_state():
    torch.manual_seed(0)
    q = vq(kmeans_init=False)
    grid = torch.randn(2, 4, 5, 10)
    x = grid.flatten(2).transpose(1, 2)  # (B, T, C) tokens
    q.train()(grid)  # one EMA step, so the codebook is not the initial one
    lib_q, lib_codes, _ = q.vq.eval()(x)
    q.eval()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    z_q, codes, _ = q._lookup(x)
    assert torch.equal(codes, lib_codes)
    torch.testing.assert_close(z_q, lib_q, rtol=0, atol=1e-6)
    fresh = vq(kmeans_init=True).eval()  # never initialised: the library's eval forward would run k-means on these inputs
    fresh_before = {k: v.clone() for k, v in fresh.state_dict().items()}
    fresh(torch.randn(6, 4))
    for model, state in ((q, before), (fresh, fresh_before)):
        after = model.state_dict()
        assert all(torch.equal(state[k], after[k]) for k in state)


def test_rvq_eval_lookup_equals_the_library():
    torch.manual_seed(1)
    q = RVQ(config(quantizer="rvq", codebook_size=8, stages=3, kmeans_init=False))
    grid = torch.randn(3, 4, 5, 8)
    x = grid.flatten(2).transpose(1, 2)
    q.train()(grid)
    lib_q, lib_codes, _ = q.rvq.eval()(x)
    z_q, codes, _ = q.eval()._lookup(x)
    assert torch.equal(codes, lib_codes)
    torch.testing.assert_close(z_q, lib_q, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["vq", "rvq"])
def test_training_steps_equal_the_library_forward(kind):
    """k-means init, EMA updates and dead-code restarts (which draw from torch's generator) as the library does them."""
    torch.manual_seed(11)
    ours = vq(dead_code_threshold=0.5) if kind == "vq" else RVQ(config(quantizer="rvq", codebook_size=8, stages=2, dead_code_threshold=0.5))
    lib = copy.deepcopy(ours.vq if kind == "vq" else ours.rvq).train()
    share = 2 * 3 * 5 / 8  # vectors per batch / K: our threshold is relative to it, the library's absolute
    for book in (m for m in lib.modules() if type(m).__name__ == "Codebook"):
        book.threshold_ema_dead_code, book.reset_cluster_size = 0.5 * share, share
    restarts = 0
    for step in range(6):
        grid = torch.randn(2, 4, 3, 5) + step * 0.3  # drifting inputs: some codes go dead and are restarted
        tokens = grid.flatten(2).transpose(1, 2)  # (B, T, C)
        torch.manual_seed(100 + step)
        out = ours.train()(grid)
        torch.manual_seed(100 + step)
        lib_q, lib_codes, lib_loss = lib(tokens)
        assert torch.equal(out.codes, lib_codes)
        torch.testing.assert_close(out.z_q.flatten(2).transpose(1, 2), lib_q, rtol=0, atol=1e-5)
        torch.testing.assert_close(out.aux_loss, lib_loss.sum() * 3 * 5 * 4, rtol=1e-5, atol=1e-7)  # library: a mean over values
        mine, theirs = (ours.vq if kind == "vq" else ours.rvq).state_dict(), lib.state_dict()
        for key in theirs:
            torch.testing.assert_close(mine[key], theirs[key], rtol=1e-5, atol=1e-6, msg=key)
        restarts += int((theirs[next(k for k in theirs if k.endswith("cluster_size"))] == share).sum())
    assert restarts > 0, "the comparison covered dead-code restarts"


@pytest.mark.parametrize("kind", ["vq", "rvq"])
def test_straight_through_gradient_is_the_identity(kind):
    torch.manual_seed(2)
    q = vq() if kind == "vq" else RVQ(config(quantizer="rvq", codebook_size=8, stages=3))
    z = torch.randn(16, 4, requires_grad=True)
    q.train()(z).z_q.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))
    if kind == "rvq":  # the reason for the wrapper's own straight-through step: the library's sums M identity gradients
        x = torch.randn(16, 1, 4, requires_grad=True)
        q.rvq(x)[0].sum().backward()
        assert torch.allclose(x.grad, torch.full_like(x, 3.0))


@pytest.mark.parametrize("kw", [dict(quantizer="vq", codebook_size=8), dict(quantizer="rvq", codebook_size=8, stages=2), dict(quantizer="fsq", fsq_levels=[5, 5, 5, 5])])
def test_gradient_of_the_reconstruction_reaches_the_encoder(kw):
    torch.manual_seed(3)
    model = build_vae(config(commitment=0.0, **kw)).train()
    x = torch.rand(32, 1, 8, 8)
    losses = model.loss(x, model(x))
    assert losses.commitment.item() == 0.0 and losses.kl.item() == 0.0
    losses.recon.backward()
    assert model.encoder[0].weight.grad.abs().sum() > 0 and model.fc_mu.weight.grad.abs().sum() > 0


def test_commitment_is_a_per_image_sum_equal_to_the_library_loss_rescaled():
    torch.manual_seed(4)
    q = vq(kmeans_init=False, commitment=0.5, dead_code_threshold=0.0)
    z = torch.randn(10, 4)
    codebook = q.codebook.clone()
    out = q.train()(z)
    hand = 0.5 * (z - codebook[nearest_code(z, codebook)]).pow(2).sum() / 10
    torch.testing.assert_close(out.aux_loss, hand, rtol=1e-5, atol=0)
    assert torch.allclose(q.eval()(z).aux_loss, 0.5 * (z - q.codebook[nearest_code(z, q.codebook)]).pow(2).sum() / 10)


def test_ema_update_equals_a_hand_computed_step():
    torch.manual_seed(5)
    decay, K, eps = 0.9, 8, 1e-5
    q = vq(kmeans_init=False, ema_decay=decay, dead_code_threshold=0.0)
    book = q.vq._codebook
    size0, avg0 = torch.rand(1, K) * 5 + 1, torch.randn(1, K, 4)
    book.cluster_size.copy_(size0)
    book.embed_avg.copy_(avg0)
    book.embed.copy_(avg0 / size0[..., None])
    x = torch.randn(64, 4)
    codes = nearest_code(x, book.embed[0])
    q.train()(x)
    n = torch.bincount(codes, minlength=K).float()
    s = torch.zeros(K, 4).index_add_(0, codes, x)
    size1 = decay * size0[0] + (1 - decay) * n
    avg1 = decay * avg0[0] + (1 - decay) * s
    smoothed = (size1 + eps) / (size1.sum() + K * eps) * size1.sum()  # the library's Laplace smoothing of cluster sizes
    torch.testing.assert_close(book.cluster_size[0], size1, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(book.embed_avg[0], avg1, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(q.codebook, avg1 / smoothed[:, None], rtol=1e-5, atol=1e-6)


def test_dead_codes_are_restarted_from_the_batch():
    """A code whose EMA cluster size falls below a fraction (0.25) of the uniform share (32 vectors / 8 codes = 4) restarts at that share."""
    torch.manual_seed(6)
    q = vq(kmeans_init=False, dead_code_threshold=0.25)
    book = q.vq._codebook
    embed = torch.randn(1, 8, 4)
    embed[0, 3] = 100.0  # far from every input: never chosen, so its cluster size only decays
    book.embed.copy_(embed)
    book.cluster_size.fill_(50.0)
    book.cluster_size[0, 3] = 0.5
    book.embed_avg.copy_(embed * 50.0)
    x = torch.randn(32, 4)
    out = q.train()(x)
    assert 3 not in out.codes
    restarted = q.codebook[3]
    assert torch.isclose(x, restarted).all(1).any(), "the dead code is replaced by one of the batch's vectors"
    assert book.cluster_size[0, 3].item() == 4.0
    assert book.cluster_size[0, alive := [k for k in range(8) if k != 3]].min() > 1.0
    assert not torch.isclose(q.codebook[alive], torch.full((7, 4), 100.0)).any()


def _fsq_by_hand(z: np.ndarray, levels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """FSQ (Mentzer et al. 2023): bound each dim with tanh to (L - 1) / 2 (shifted by 1/2 for even L), round, scale to [-1, 1];
    a level of 2 uses the symmetric variant floor((L - 1)(tanh z + 1) / 2 + 1/2). Returns values and mixed-radix indices."""
    L = np.array(levels, dtype=np.float64)
    if 2 in levels:
        digits = np.floor((L - 1) * (np.tanh(z) + 1) / 2 + 0.5)
        values = digits * 2 / (L - 1) - 1
    else:
        half_l = (L - 1) * (1 + 1e-3) / 2
        offset = np.where(L % 2 == 0, 0.5, 0.0)
        rounded = np.round(np.tanh(z + np.arctanh(offset / half_l)) * half_l - offset)
        values = rounded / (L // 2)
        digits = rounded + L // 2
    basis = np.cumprod([1] + levels[:-1])
    return values, (digits * basis).sum(-1).astype(np.int64)


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [4, 3], [2, 3, 4]])
def test_fsq_codes_equal_hand_computed_rounding_and_the_library(levels):
    torch.manual_seed(7)
    q = FSQ(config(quantizer="fsq", fsq_levels=levels, latent_dim=len(levels))).eval()  # D = len(levels): no projection
    z = torch.randn(200, len(levels)) * 2
    out = q(z)
    values, index = _fsq_by_hand(z.double().numpy(), levels)
    np.testing.assert_allclose(out.z_q.numpy(), values, atol=1e-6)
    assert np.array_equal(out.codes.numpy(), index) and out.aux_loss.item() == 0.0
    assert out.codes.min() >= 0 and out.codes.max() < math.prod(levels)
    lib = vqp.FSQ(levels=levels, dim=len(levels), preserve_symmetry=2 in levels)
    lib_out, lib_idx = lib(z[:, None, :])
    assert torch.equal(out.z_q, lib_out[:, 0]) and torch.equal(out.codes, lib_idx[:, 0].long())


def test_fsq_gradient_is_the_derivative_of_the_bound():
    levels = [8, 5]
    q = FSQ(config(quantizer="fsq", fsq_levels=levels, latent_dim=2)).train()
    z = torch.randn(50, 2, dtype=torch.float32, requires_grad=True)
    q(z).z_q.sum().backward()
    L = torch.tensor(levels, dtype=torch.float32)
    half_l, offset = (L - 1) * (1 + 1e-3) / 2, torch.where(L % 2 == 0, 0.5, 0.0)
    t = torch.tanh(z.detach() + torch.atanh(offset / half_l))
    torch.testing.assert_close(z.grad, (1 - t**2) * half_l / (L // 2), rtol=1e-5, atol=1e-6)


def test_fsq_with_a_projection_equals_the_library_forward():
    torch.manual_seed(8)
    q = FSQ(config(quantizer="fsq", fsq_levels=[8, 8, 4, 4], latent_dim=16)).eval()
    z = torch.randn(30, 16)
    assert torch.equal(q(z).z_q, q.fsq(z[:, None, :])[0][:, 0])
    assert q.bits_per_vector == 10.0 and q.n_codes == 1024


# ----------------------------------------------------------------------------- state, usage, audit


@pytest.mark.parametrize("kw", [dict(quantizer="vq", codebook_size=8), dict(quantizer="rvq", codebook_size=8, stages=2), dict(quantizer="fsq", fsq_levels=[8, 8, 4, 4])])
def test_state_dict_round_trips_through_safetensors_exactly(tmp_path, kw):
    torch.manual_seed(9)
    model = build_vae(config(**kw)).train()
    fresh_shapes = {k: (v.shape, v.dtype) for k, v in model.state_dict().items()}
    for _ in range(3):
        model(torch.rand(16, 1, 8, 8))  # k-means init and EMA steps change the buffers, not their shapes
    state = model.state_dict()
    assert {k: (v.shape, v.dtype) for k, v in state.items()} == fresh_shapes
    save_tensors(tmp_path / "m.safetensors", state)
    other = build_vae(config(**kw))
    load_state_checked(other, load_tensors(tmp_path / "m.safetensors"), tmp_path / "m.safetensors")
    assert all(torch.equal(state[k], v) for k, v in other.state_dict().items())
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model.eval().decode(model.encode(x).mu), other.eval().decode(other.encode(x).mu))
    if kw["quantizer"] != "fsq":
        assert any(k.endswith("initted") and bool(v) for k, v in state.items())


def test_decode_quantizes_and_decode_unquantized_does_not():
    torch.manual_seed(10)
    model = build_vae(config(quantizer="vq", codebook_size=8, kmeans_init=False)).eval()
    z = torch.randn(5, 4)
    with torch.no_grad():
        z_q = model.quantize(z).z_q
        assert torch.equal(model.decode(z), model.decode_unquantized(z_q))
        assert not torch.allclose(model.decode(z), model.decode_unquantized(z))
        out = model(torch.rand(3, 1, 8, 8))
        assert torch.equal(out.reconstruction, model.decode(out.mu))


@pytest.mark.parametrize("n_codes,stages", [(16, 1), (16, 3), (70_000, 1)])
def test_epoch_code_usage_equals_the_usage_metric(n_codes, stages):
    rng = np.random.default_rng(0)
    usage = CodeUsage(n_codes, stages)
    batches = [rng.integers(0, min(n_codes, 40), size=(9, 5, stages)) for _ in range(4)]
    for b in batches:
        usage.update(torch.from_numpy(b if stages > 1 else b[..., 0]))
    codes = np.concatenate([b.reshape(-1, stages) for b in batches])
    per_stage = [usage_stats(codes[:, m], n_codes) for m in range(stages)]
    got = usage.stats()
    assert got["codes_used"] == sum(s["used"] for s in per_stage) and got["codes_dead"] == sum(s["dead"] for s in per_stage)
    assert math.isclose(got["code_entropy_bits"], np.mean([s["entropy_bits"] for s in per_stage]), rel_tol=1e-12)
    assert math.isclose(got["perplexity"], math.exp(np.mean([s["entropy_nats"] for s in per_stage])), rel_tol=1e-12)


def test_usage_of_huge_codebooks_equals_dense_usage(monkeypatch):
    rng = np.random.default_rng(1)
    codes, labels = rng.integers(0, 50, size=300) * 7, rng.integers(0, 3, size=300)
    dense = codebook_usage(codes, 400, labels)
    monkeypatch.setattr(reconstruction, "MAX_BINCOUNT_CODES", 10)  # force the sparse path on a small codebook
    sparse = code_usage(codes, 400, labels)
    assert sparse.keys() == dense.keys()
    assert sparse["per_class"] == dense["per_class"]
    for key in dense.keys() - {"per_class"}:
        assert sparse[key] == pytest.approx(dense[key], rel=1e-12), key
    huge = code_usage(codes, 2**40, labels)
    assert huge["dead"] == 2**40 - len(np.unique(codes)) and huge["max_entropy_bits"] == 40.0


def _result(**over):
    block = lambda psnr, rng=(0.0, 1.0): {"psnr_db": {"mean": psnr}, "output_range": list(rng)}  # noqa: E731
    r = {"model": {"trained_steps": 10}, "training": {"converged": True, "epochs": 5}, "quantizer": {"kind": "vq", "trained": True},
         "continuous": block(20.0), "quantized": block(20.0), "pre_quantization": block(26.0)}
    return r | over


def test_audit_of_a_trained_quantizer_ignores_pre_quantization_and_flags_the_rest():
    assert audit(typed(_result())) == []  # z_e through the decoder scores 6 dB higher: informational, not 'quantized beats continuous'
    codes = lambda r: [w.code for w in audit(typed(r))]  # noqa: E731
    out_of_range = {"psnr_db": {"mean": 20.0}, "output_range": [-0.2, 1.0]}
    assert codes(_result(continuous=out_of_range, quantized=out_of_range)) == ["output_range", "output_range"]
    assert codes(_result(model={"trained_steps": 0})) == ["untrained"]
    assert codes(_result(training={"converged": False, "epochs": 3})) == ["not_converged"]
