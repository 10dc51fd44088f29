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


# ------------------------------------------------------------------ memory-planned tiling
@pytest.mark.parametrize("H,W", [(100, 70), (200, 64), (130, 131)])
def test_fit_grid_is_exact_for_pointwise_models_and_covers_with_fewest_tiles(H, W):
    m = Pointwise()
    tp = TiledPrior(m, tile=48, overlap=8, max_batch=1, fit=True)
    x = torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(3))
    seen = set()
    for n in range(4):
        assert torch.allclose(tp.eps(x, 10), m.eps(x, 10), atol=1e-6)
        for L, axis in ((H, 0), (W, 1)):
            s = tp._fit_starts(L, n, axis)
            seen.add((axis, s[0]))
            # the fewest tiles: one fewer would not cover the axis
            assert len(s) == 1 or (len(s) - 1) * 40 + 8 < L
            assert s[0] <= 0 and s[-1] + 48 >= L
    assert len(seen) > 2                               # the grid moves between calls


def _shipped():
    from dmir import models
    return models.load("dmir-ddpm")


def test_plan_tiling_runs_the_shipped_prior_whole_when_it_fits():
    from dmir.models import memory
    from dmir.models.tiled import plan_tiling
    p = _shipped()
    pr = memory.probe(p)
    # probe of the shipped prior: ~3 kB per pixel, attention ~1% of the FLOPs at 256²
    assert 1500 < pr["bytes_per_pixel"] < 6000
    assert 0.003 < pr["attn_flops_per_pixel2"] * 256 ** 2 / pr["conv_flops_per_pixel"] < 0.03
    big = 64 << 30
    for side in (256, 512, 1024):
        assert plan_tiling(p, (3, side, side), 1, budget=big) is None
    # 2048²: attention would cost > 25% of the convolutions; memory within 3 GiB also needs tiles
    t = plan_tiling(p, (3, 2048, 2048), 1, budget=big)
    assert t is not None and t % p.size_multiple == 0 and 512 <= t <= 1280


def test_plan_tiling_respects_the_memory_budget():
    from dmir.models import memory
    from dmir.models.tiled import PLAN_OVERLAP, plan_tiling
    p = _shipped()
    bpp = memory.network_bytes_per_pixel(p)
    budget = int(bpp * 400 * 400)                  # room for one 400×400 tile
    t = plan_tiling(p, (3, 1000, 700), 1, budget=budget)
    assert t is not None and t * t * bpp <= budget and t >= 256
    n = -(-(1000 - PLAN_OVERLAP) // (t - PLAN_OVERLAP))
    assert n * (t - PLAN_OVERLAP) + PLAN_OVERLAP >= 1000
    assert (n - 1) * (t - PLAN_OVERLAP) + PLAN_OVERLAP < 1000   # no spare tile row
    # a batch that does not fit as a whole is tiled even when one image would fit
    assert plan_tiling(p, (3, 256, 256), 1, budget=budget) is None
    assert plan_tiling(p, (3, 256, 256), 64, budget=budget) is not None


def test_tiled_for_memory_logs_the_path_and_wraps_only_when_needed():
    from dmir.models.tiled import tiled_for_memory
    p = _shipped()
    msgs = []
    assert tiled_for_memory(p, (3, 64, 64), 1, log=msgs.append, budget=1 << 30) is p
    assert "whole image" in msgs[-1]
    tp = tiled_for_memory(p, (3, 60, 64), 1, log=msgs.append, budget=1 << 30)
    assert isinstance(tp, TiledPrior) and tp.tile >= 64       # padded to the size multiple
    tp = tiled_for_memory(p, (3, 600, 600), 1, log=msgs.append, budget=int(3e3 * 300 ** 2))
    assert isinstance(tp, TiledPrior) and tp.fit and tp.max_batch == 1 and tp.overlap == 64
    assert "tiles" in msgs[-1]


# ------------------------------------------------------------------ issue 14, cause 8
def test_memory_check_refuses_runs_that_cannot_fit():
    from dmir.errors import DmirError, ResourceError
    from dmir.models import memory
    need = memory.check_fits((3, 256, 256), 1, available=8 << 30)
    assert 0 < need < 100 << 20
    with pytest.raises(ResourceError, match="3x256000x256000.*available"):
        memory.check_fits((3, 256000, 256000), 1, available=64 << 30)   # --scale 1000
    with pytest.raises(ResourceError, match="100000 sample"):
        memory.check_fits((3, 256, 256), 100000, available=64 << 30)    # --samples 100000
    assert issubclass(ResourceError, DmirError) and issubclass(ResourceError, MemoryError)
    assert memory.available_bytes("cpu") > 0


def test_cpu_allocation_failures_are_recognised():
    from dmir.models import memory
    try:
        torch.empty(1 << 62, dtype=torch.uint8)
    except RuntimeError as e:
        assert memory.is_out_of_memory(e)
    assert memory.is_out_of_memory(MemoryError())
    assert not memory.is_out_of_memory(RuntimeError("shape mismatch"))


# ------------------------------------------------------------------ issue 16 × h20: one pipeline
def test_pipeline_prepare_prior_tiles_by_memory_forces_explicit_tiles_and_refuses(monkeypatch):
    """dmir restore, dmir bench and library callers all go through pipeline.prepare_prior:
    tile=None tiles only when memory requires it, an explicit tile forces tiles, and a batch
    that cannot fit is refused before anything is built."""
    from dmir import pipeline
    from dmir.errors import ResourceError
    from dmir.models import memory, tiled
    p = _shipped()
    msgs = []
    assert pipeline.prepare_prior(p, (3, 64, 64), fast=None, note=msgs.append) is p
    assert "whole image" in msgs[-1]
    tp = pipeline.prepare_prior(p, (3, 300, 300), tile=128, fast=None, note=msgs.append)
    assert isinstance(tp, TiledPrior) and tp.tile == 128 and "128x128 tiles" in msgs[-1]
    monkeypatch.setattr(tiled, "PLAN_BUDGET", int(3e3 * 300 ** 2))     # a small machine
    tp = pipeline.prepare_prior(p, (3, 600, 600), fast=None, note=msgs.append)
    assert isinstance(tp, TiledPrior) and tp.fit and "tiles" in msgs[-1]
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 1 << 30)
    with pytest.raises(ResourceError, match="100000 sample"):
        pipeline.prepare_prior(p, (3, 256, 256), fast=None, batch=100000)
    with pytest.raises(ResourceError, match="3x256000x256000"):     # --scale 1000, library
        pipeline.restore(torch.zeros(1, 3, 256, 256), "sr_averagepooling", scale=1000,
                         model="natural", steps=1)
