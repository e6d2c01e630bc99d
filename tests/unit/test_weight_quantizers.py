"""INT8/INT4 quantizers: exact packing, error bound, per-channel axes, groups, BatchNorm folding."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from posthoc_vq.errors import CheckpointError
from posthoc_vq.quantize.weights import IntQuantizer, fold_batchnorm, pack, packed_size, unpack
from posthoc_vq.quantize.weights.qtensor import matrix_view
from posthoc_vq.quantize.weights.quantizer import fp16_scale_up

SHAPES = [(1,), (2,), (3,), (7,), (31,), (33,), (5, 7), (2, 3, 5), (1, 1, 3, 3), (3, 5, 4, 4), (129, 3)]


def _numpy_pack4(codes: np.ndarray) -> np.ndarray:
    """Independent reference: low nibble first, zero-padded."""
    nib = (codes.reshape(-1).astype(np.int64) & 0xF).astype(np.uint8)
    if len(nib) % 2:
        nib = np.append(nib, np.uint8(0))
    return nib[0::2] | (nib[1::2] << 4)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bits,signed", [(4, True), (4, False), (8, True), (8, False)])
def test_pack_unpack_is_exact_for_every_shape(shape, bits, signed):
    g = torch.Generator().manual_seed(sum(shape) + bits)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    codes = torch.randint(lo, hi + 1, shape, generator=g)
    codes.view(-1)[0] = lo  # both ends of the range are present
    codes.view(-1)[-1] = hi
    data = pack(codes, bits, signed)
    assert data.dtype == torch.uint8 and data.numel() == packed_size(codes.numel(), bits) == -(-codes.numel() * bits // 8)
    if bits == 4:
        np.testing.assert_array_equal(data.numpy(), _numpy_pack4(codes.numpy()))
    back = unpack(data, codes.numel(), bits, signed).view(shape)
    assert torch.equal(back, codes.to(torch.int16))


def test_pack_rejects_out_of_range_codes_and_unpack_rejects_wrong_byte_counts():
    with pytest.raises(ValueError, match="4-bit range"):
        pack(torch.tensor([8]), 4, signed=True)
    data = pack(torch.arange(-8, 7), 4, signed=True)  # 15 codes -> 8 bytes
    with pytest.raises(CheckpointError, match="15 codes of 4 bits need 8 uint8 bytes"):
        unpack(data[:-1], 15, 4, signed=True)
    with pytest.raises(CheckpointError, match="need 15 uint8 bytes"):
        unpack(data, 15, 8, signed=True)  # wrong bit width


def test_fp16_scales_round_up():
    s = torch.tensor([1e-3, 0.1, 1 / 3, 7.77, 2.0**-24 / 3])
    up = fp16_scale_up(s)
    assert up.dtype == torch.float16 and torch.all(up.float() >= s)
    assert torch.all(up.float() <= s * (1 + 2**-9) + 2**-24)  # at most one fp16 step above


LAYERS = [nn.Conv2d(3, 8, 3), nn.ConvTranspose2d(8, 4, 4), nn.Linear(70, 5), nn.Linear(4, 6)]
SCHEMES = [(8, True, "channel"), (8, False, "channel"), (8, True, "tensor"), (4, True, "group"), (4, False, "group"), (4, True, "channel"), (4, False, "tensor")]


@pytest.mark.parametrize("layer", LAYERS, ids=lambda m: type(m).__name__ + str(tuple(m.weight.shape)))
@pytest.mark.parametrize("bits,symmetric,granularity", SCHEMES)
def test_dequantize_error_is_at_most_half_a_scale(layer, bits, symmetric, granularity):
    torch.manual_seed(0)
    w = torch.randn_like(layer.weight) * torch.rand(1).item()
    w.view(-1)[3] = 5.0  # an outlier
    axis = 1 if isinstance(layer, nn.ConvTranspose2d) else 0
    quantizer = IntQuantizer(bits, symmetric, granularity, group_size=32)
    qt = quantizer.quantize(w, axis)
    back = quantizer.dequantize(qt)
    assert back.shape == w.shape
    err = matrix_view((back - w).abs(), axis, per_tensor=granularity == "tensor")
    bound = qt.expand(qt.scale.float()) / 2
    assert torch.all(err <= bound * (1 + 1e-6) + 1e-12)
    lo, hi = (-quantizer.qmax, quantizer.qmax) if symmetric else (0, quantizer.qmax)
    assert int(qt.q.min()) >= lo and int(qt.q.max()) <= hi
    # pack -> unpack gives the identical QTensor
    tensors, spec = quantizer.pack(qt)
    again = quantizer.unpack(tensors, spec)
    assert torch.equal(again.q, qt.q) and torch.equal(again.scale, qt.scale)
    assert torch.equal(quantizer.dequantize(again), back)


def test_conv_transpose_is_quantized_along_axis_1_hand_computed():
    # weight (in=2, out=3, 1, 1); per output channel absmax 63.5, 31.75, 127 -> scales 0.5, 0.25, 1 (exact in fp16)
    w = torch.tensor([[63.5, 1.0, -127.0], [-10.0, -31.75, 3.0]]).view(2, 3, 1, 1)
    qt = IntQuantizer(8, True, "channel").quantize(w, axis=1)
    assert qt.scale.flatten().tolist() == [0.5, 0.25, 1.0]
    assert qt.q.tolist() == [[127, -20], [4, -127], [-127, 3]]  # rows: output channels, cols: input channels
    assert torch.equal(IntQuantizer.dequantize(qt), w)
    # quantizing along the wrong axis gives the input channels' scales instead
    wrong = IntQuantizer(8, True, "channel").quantize(w, axis=0)
    assert wrong.scale.flatten().tolist() == [1.0, 0.25]


def test_groups_run_along_the_input_dimension_with_per_channel_fallback():
    w = torch.randn(2, 70)
    qt = IntQuantizer(4, True, "group", group_size=32).quantize(w)
    assert qt.scale.shape == (2, 3) and qt.group_size == 32  # 32 + 32 + 6 columns
    for gi, cols in enumerate([slice(0, 32), slice(32, 64), slice(64, 70)]):
        expected = fp16_scale_up(w[:, cols].abs().amax(1) / 7)
        assert torch.equal(qt.scale[:, gi], expected)
    small = IntQuantizer(4, True, "group", group_size=32).quantize(torch.randn(6, 4))
    assert small.scale.shape == (6, 1)  # fan-in 4 <= 32: one scale per output channel


def test_asymmetric_grid_contains_zero_and_uses_the_full_range():
    w = torch.tensor([[0.1, 0.2, 0.9, 1.6]])  # all positive: the grid is stretched to include 0
    qt = IntQuantizer(4, False, "channel").quantize(w)
    assert int(qt.zero_point) == 0 and int(qt.q.max()) == 15
    zero_code = IntQuantizer(4, False, "channel").quantize(torch.tensor([[-1.0, 0.0, 2.0]]))
    back = IntQuantizer.dequantize(zero_code)
    assert back[0, 1] == 0.0  # zero is exactly representable


def _random_batchnorm(module: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so folding has something to fold; eval mode."""
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.data.uniform_(0.5, 2)
            bn.bias.data.uniform_(-1, 1)
    return module.eval()


def test_batchnorm_folding_preserves_outputs():
    torch.manual_seed(0)
    net = _random_batchnorm(nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.ConvTranspose2d(5, 4, 3), nn.BatchNorm2d(4)))
    folded, names = fold_batchnorm(net)
    assert names == ["1", "4"] and isinstance(folded[1], nn.Identity) and isinstance(net[1], nn.BatchNorm2d)
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-5)


def test_convvae_folding_includes_the_decoder_input_batchnorm():
    from posthoc_vq.config import VAEConfig
    from posthoc_vq.models import build_vae

    torch.manual_seed(1)
    vae = _random_batchnorm(build_vae(VAEConfig(latent_dim=6, channels=[4, 8], image_size=8, in_channels=1)))
    folded, names = fold_batchnorm(vae)
    assert sorted(names) == ["decoder.0", "decoder.3", "encoder.1", "encoder.4"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x, z = torch.rand(3, 1, 8, 8), torch.randn(3, 6)
    with torch.no_grad():
        torch.testing.assert_close(folded.encode(x).mu, vae.encode(x).mu, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(folded.decode(z), vae.decode(z), atol=1e-5, rtol=1e-5)


def test_spatial_vae_folding_and_packed_round_trip(tmp_path):
    from posthoc_vq.config import VAEConfig, WeightsConfig
    from posthoc_vq.models import build_vae
    from posthoc_vq.quantize.weights import load_packed, quantize_network, save_packed

    torch.manual_seed(2)
    vae = _random_batchnorm(build_vae(VAEConfig(family="spatial", latent_dim=4, channels=[4, 8], image_size=8, in_channels=1)))
    folded, names = fold_batchnorm(vae)
    assert "decoder.0" in names and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    z = torch.randn(2, *vae.latent_shape)
    with torch.no_grad():
        torch.testing.assert_close(folded.decode(z), vae.decode(z), atol=1e-5, rtol=1e-5)
    qn = quantize_network(vae, WeightsConfig(bits=4, fold_bn=True))
    save_packed(tmp_path / "w.safetensors", qn, vae.config.model_dump(mode="json"))
    loaded, _ = load_packed(tmp_path / "w.safetensors")
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, qn.state_dict()[key])
