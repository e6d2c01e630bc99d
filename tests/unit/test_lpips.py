"""LPIPS is optional and offline: clear errors without weights or package; local weights reach the backbone."""

import sys
import types

import pytest
import torch
from torch import nn

from posthoc_vq.metrics.lpips import ALEX_SLICES, LPIPSUnavailableError, alexnet_backbone_state, lpips_distance

# torchvision's AlexNet ``features``: conv layers at these indices (ReLU / max-pool elsewhere)
ALEX_CONVS = {0: (3, 64, 11), 3: (64, 192, 5), 6: (192, 384, 3), 8: (384, 256, 3), 10: (256, 256, 3)}


def alexnet_state() -> dict[str, torch.Tensor]:
    state = {}
    for i, (c_in, c_out, k) in ALEX_CONVS.items():
        state[f"features.{i}.weight"] = torch.full((c_out, c_in, k, k), float(i))
        state[f"features.{i}.bias"] = torch.full((c_out,), float(i))
    state["classifier.1.weight"] = torch.zeros(4, 4)  # not part of LPIPS
    return state


def test_without_weights_or_package_it_says_unavailable(tmp_path, monkeypatch):
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(LPIPSUnavailableError, match="never downloads"):
        lpips_distance(x, x, None)
    with pytest.raises(LPIPSUnavailableError, match="not found"):
        lpips_distance(x, x, tmp_path / "missing.pth")
    weights = tmp_path / "alexnet.pth"
    torch.save(alexnet_state(), weights)
    monkeypatch.setitem(sys.modules, "lpips", None)  # not importable, as here: it is not a dependency
    with pytest.raises(LPIPSUnavailableError, match="`lpips` package"):
        lpips_distance(x, x, weights)


def test_backbone_keys_map_to_lpips_slices():
    mapped = alexnet_backbone_state(alexnet_state())
    assert "classifier.1.weight" not in {k for k in mapped}
    assert set(mapped) == {f"slice{k}.{i}.{p}" for i in ALEX_CONVS for p in ("weight", "bias")
                           for k, (a, b) in enumerate(ALEX_SLICES, start=1) if a <= i < b}
    assert mapped["slice1.0.weight"].shape == (64, 3, 11, 11) and mapped["slice5.10.bias"][0] == 10


class _FakeAlex(nn.Module):
    """lpips.pretrained_networks.alexnet's layout: slice<k> holds features[a:b] under their original indices."""

    def __init__(self):
        super().__init__()
        for k, (a, b) in enumerate(ALEX_SLICES, start=1):
            s = nn.Sequential()
            for i in range(a, b):
                c = ALEX_CONVS.get(i)
                s.add_module(str(i), nn.Conv2d(c[0], c[1], c[2]) if c else nn.ReLU())
            setattr(self, f"slice{k}", s)


def test_local_weights_are_loaded_and_no_pretrained_backbone_is_requested(tmp_path, monkeypatch):
    calls = {}

    class FakeLPIPS(nn.Module):
        def __init__(self, **kwargs):
            super().__init__()
            calls.update(kwargs)
            self.net = _FakeAlex()

        def forward(self, a, b, normalize=False):
            calls["input"] = (tuple(a.shape), normalize)
            calls["conv10"] = float(getattr(self.net.slice5, "10").bias[0])
            return (a - b).abs().mean((1, 2, 3), keepdim=True)

    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=FakeLPIPS))
    weights = tmp_path / "alexnet.pth"
    torch.save(alexnet_state(), weights)
    x, y = torch.zeros(3, 1, 28, 28), torch.ones(3, 1, 28, 28)
    d = lpips_distance(x, y, weights)
    assert d.shape == (3,) and torch.allclose(d, torch.ones(3))
    assert calls["pnet_rand"] is True and calls["net"] == "alex"  # the backbone is never fetched
    assert calls["input"] == ((3, 3, 64, 64), True)  # grey -> RGB, upsampled, [0, 1] inputs
    assert calls["conv10"] == 10.0  # the local file's weights reached the backbone
