"""TiledPrior: shifted overlapping tiles reproduce the untiled prediction of local models."""
import torch
import torch.nn.functional as F
import pytest

from dmir.errors import ParameterError
from dmir.models import DiffusionModel, make_schedule
from dmir.models.tiled import TiledPrior


class Pointwise(DiffusionModel):
    """ε depends on each pixel only: tiling must be exact."""

    def __init__(self):
        super().__init__(make_schedule("linear"))
        self.size_multiple = 8

    def eps(self, x, t):
        a = self.alpha_bar(t).float().view(-1, 1, 1, 1)
        return torch.tanh(x) * a + x.pow(2) * (1 - a)


class Blur(DiffusionModel):
    """A 5×5 convolution (receptive field 2 px) with zero padding at the image border."""

    def __init__(self):
        super().__init__(make_schedule("linear"))
        self.size_multiple = 8
        g = torch.Generator().manual_seed(0)
        self.k = torch.rand(3, 1, 5, 5, generator=g)
        self.k /= self.k.sum((-1, -2), keepdim=True)

    def eps(self, x, t):
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.k, groups=3)


@pytest.mark.parametrize("H,W", [(100, 70), (64, 200), (37, 41), (130, 130)])
def test_pointwise_model_is_tiled_exactly_at_any_size(H, W):
    m = Pointwise()
    tp = TiledPrior(m, tile=32, overlap=8, max_batch=5)
    x = torch.randn(2, 3, H, W, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([10, 900])
    for _ in range(3):                       # three different grid offsets
        out = tp.eps(x, t)
        assert out.shape == x.shape
        assert torch.allclose(out, m.eps(x, t), atol=1e-6)
    assert tp.calls == 3 and len({tp.offset(n) for n in range(3)}) == 3


def test_local_model_interior_matches_and_grid_shifts():
    m = Blur()
    tp = TiledPrior(m, tile=32, overlap=8)
    x = torch.randn(1, 3, 96, 120, generator=torch.Generator().manual_seed(2))
    ref = m.eps(x, 5)
    errs = []
    for _ in range(4):
        out = tp.eps(x, 5)
        errs.append((out - ref).abs().max().item())
    # tile-border pixels see reflect padding instead of their neighbours, but the blending weight
    # there is tiny: the worst error is a small fraction of the signal (|ε| ~ 1)
    assert max(errs) < 0.02
    assert (out - ref).abs().mean() < 1e-3


def test_small_images_pass_through_and_bad_settings_are_refused():
    m = Pointwise()
    tp = TiledPrior(m, tile=64)
    x = torch.randn(1, 3, 20, 30)
    assert torch.allclose(tp.eps(x, 3), m.eps(x, 3), atol=1e-6)
    with pytest.raises(ParameterError, match="multiple of 8"):
        TiledPrior(m, tile=60)
    with pytest.raises(ParameterError, match="overlap"):
        TiledPrior(m, tile=64, overlap=40)
