"""Any H×W with a prior trained on small images: overlapping tiles, one batch, a shifting grid.

A UNet trained on ``tile``-sized images (or crops) is evaluated on a larger or non-square image by
cutting the (reflect-padded) image into overlapping tiles, running all tiles of all images as
one batch (in chunks of ``max_batch``), and blending the predictions back with a separable
weight that is (almost) zero on the outer quarter of the overlap and rises as a raised cosine
over the rest, so every pixel is a convex combination of predictions made away from a tile edge.

The tile grid is shifted between network calls (as in DDNM's high-resolution mode, where the
patch grid moves every step): call ``n`` offsets the grid by ``shift_n`` pixels, a low-discrepancy
sequence over [0, stride)², so seams cannot form at fixed positions over a sampling run. The
sequence depends only on the call count, which :meth:`reset` sets back to zero (solvers'
``sample`` runs are reproducible when the tiled prior is fresh or reset; the CLI builds a fresh one
per image).

Units: ε in the model's units, images (B, C, H, W) in [-1, 1], timesteps as the wrapped prior.
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from ..errors import ParameterError, ShapeError
from .base import DiffusionModel


def _window(n: int, overlap: int, device, dtype) -> torch.Tensor:
    """1-D blending weight of a tile of length n: ~0 (a 1e-3 floor, so single-coverage pixels
    stay defined) on the outer quarter of the overlap, where the network saw padding instead of
    the true neighbours, then a raised-cosine ramp to 1 over the rest of the overlap."""
    w = torch.ones(n, dtype=dtype, device=device)
    if overlap > 0:
        margin = overlap // 4
        k = overlap - margin
        r = (torch.arange(k, dtype=dtype, device=device) + 0.5) / k
        ramp = torch.cat([torch.zeros(margin, dtype=dtype, device=device),
                          0.5 - 0.5 * torch.cos(math.pi * r)])
        w[:overlap] = ramp
        w[n - overlap:] = torch.minimum(w[n - overlap:], ramp.flip(0))
    return w.clamp_min(1e-3)


def _starts(length: int, tile: int, stride: int, offset: int) -> list[int]:
    """Tile starts covering [0, length) of a padded axis, the grid shifted by -offset."""
    s = [-offset + k * stride for k in range(length // stride + 3)]
    s = [v for v in s if v + tile > 0 and v < length]
    return s


class TiledPrior(DiffusionModel):
    """Wrap ``model`` so that ``eps`` works on any H×W through shifted overlapping tiles.

    Args:
        model: any prior with ``eps(x_t, t)`` and ``alphas_cumprod`` (e.g. a NetworkPrior).
        tile: tile side in pixels (a multiple of the model's ``size_multiple``).
        overlap: blending width in pixels, 0 ≤ overlap ≤ tile/2 (default tile/4).
        max_batch: at most this many tiles per network call (bounds memory).
        shift: shift the grid between calls (default True).
        fit: cut each axis into the fewest tiles that cover it and shift the grid only within
            the spare coverage (``n·stride + overlap − length`` pixels), so no extra row or
            column of tiles is cut for the shift (what :func:`plan_tiling` plans with). Default
            False: n = length/stride + 1 tiles per axis, shifts over the whole stride.

    Images no larger than one tile are passed through untiled (padded to the size multiple).
    """

    def __init__(self, model, tile: int = 256, overlap: int | None = None, max_batch: int = 16,
                 shift: bool = True, fit: bool = False):
        super().__init__(model.alphas_cumprod)
        self.model = model
        mult = int(getattr(model, "size_multiple", 1) or 1)
        tile, max_batch = int(tile), int(max_batch)
        if tile < mult or tile % mult:
            raise ParameterError(f"tile must be a positive multiple of {mult} (the model's size "
                                 f"multiple), got {tile}")
        overlap = tile // 4 if overlap is None else int(overlap)
        if not 0 <= overlap <= tile // 2:
            raise ParameterError(f"overlap must be in 0..{tile // 2} (tile/2), got {overlap}")
        if max_batch < 1:
            raise ParameterError(f"max_batch must be ≥ 1, got {max_batch}")
        self.tile, self.overlap, self.max_batch, self.shift = tile, overlap, max_batch, shift
        self.mult = mult
        self.fit = bool(fit)
        self.name = f"{getattr(model, 'name', 'model')}@tiles{tile}"
        self.info = dict(getattr(model, "info", {}))
        self.calls = 0

    def reset(self) -> "TiledPrior":
        self.calls = 0
        return self

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    def offset(self, n: int) -> tuple[int, int]:
        """Grid offset (dy, dx) in [0, stride)² of call n (additive recurrence, golden ratios)."""
        if not self.shift:
            return 0, 0
        g1, g2 = 0.7548776662466927, 0.5698402909980532     # plastic-number R2 sequence
        return (int(((n * g1) % 1.0) * self.stride), int(((n * g2) % 1.0) * self.stride))

    def _pad_to_multiple(self, x):
        H, W = x.shape[-2:]
        ph, pw = (-H) % self.mult, (-W) % self.mult
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(H, W) > max(ph, pw) else "replicate")
        return x

    def eps(self, x_t: torch.Tensor, t) -> torch.Tensor:
        if x_t.dim() != 4:
            raise ShapeError(f"TiledPrior takes (B, C, H, W) inputs, got {tuple(x_t.shape)}")
        B, C, H, W = x_t.shape
        # a solver's scalar t goes to the model as it is: no copy to the device, and timestep
        # experts route on it without reading it back (a sync per chunk on a GPU)
        scalar = isinstance(t, numbers.Real)
        tt = None if scalar else torch.as_tensor(t)
        if tt is not None and tt.dim() == 0:
            tt = tt.expand(B)
        n, self.calls = self.calls, self.calls + 1
        if H <= self.tile and W <= self.tile:
            return self.model.eps(self._pad_to_multiple(x_t), t if tt is None else tt)[..., :H, :W]
        T, S, ov = self.tile, self.stride, self.overlap
        if self.fit:
            ys, xs = self._fit_starts(H, n, 0), self._fit_starts(W, n, 1)
        else:
            dy, dx = self.offset(n)
            ys = _starts(H, T, S, dy) if H > T else [0]
            xs = _starts(W, T, S, dx) if W > T else [0]
        # pad so that every tile lies inside the padded image (reflect, then replicate if tiny)
        top, left = max(0, -ys[0]), max(0, -xs[0])
        th, tw = min(T, self._ceil(H)), min(T, self._ceil(W))
        bottom = max(0, ys[-1] + th - H)
        right = max(0, xs[-1] + tw - W)
        xp = x_t
        for pad in ((left, right, 0, 0), (0, 0, top, bottom)):   # reflect needs pad < size
            p: tuple[int, ...] = pad
            while any(p):
                lim = [xp.shape[-1] - 1] * 2 + [xp.shape[-2] - 1] * 2
                step = tuple(min(a, b) for a, b in zip(p, lim))
                xp = F.pad(xp, step, mode="reflect")
                p = tuple(a - b for a, b in zip(p, step))
        tiles, where = [], []
        for y0 in ys:
            for x0 in xs:
                tiles.append(xp[:, :, y0 + top:y0 + top + th, x0 + left:x0 + left + tw])
                where.append((y0 + top, x0 + left))
        batch = torch.stack(tiles, 1).reshape(-1, C, th, tw)       # (B·n_tiles, C, th, tw)
        tb = None if tt is None else tt.repeat_interleave(len(tiles))
        outs = [self.model.eps(batch[i:i + self.max_batch],
                               t if tb is None else tb[i:i + self.max_batch])
                for i in range(0, batch.shape[0], self.max_batch)]
        out = torch.cat(outs).reshape(B, len(tiles), -1, th, tw)
        wy = _window(th, ov if H > T else 0, x_t.device, out.dtype)
        wx = _window(tw, ov if W > T else 0, x_t.device, out.dtype)
        w = wy[:, None] * wx[None, :]
        acc = out.new_zeros(B, out.shape[2], xp.shape[-2], xp.shape[-1])
        wsum = out.new_zeros(xp.shape[-2], xp.shape[-1])
        for k, (r, c) in enumerate(where):
            acc[..., r:r + th, c:c + tw] += out[:, k] * w
            wsum[r:r + th, c:c + tw] += w
        return (acc / wsum)[..., top:top + H, left:left + W]

    def _fit_starts(self, length: int, n: int, axis: int) -> list[int]:
        if length <= self.tile:
            return [0]
        S, ov = self.stride, self.overlap
        count = max(1, -(-(length - ov) // S))
        slack = count * S + ov - length                     # spare coverage, ≥ 0
        frac = ((n * (0.7548776662466927, 0.5698402909980532)[axis]) % 1.0) if self.shift else 0
        off = int(frac * (slack + 1))
        return [-off + k * S for k in range(count)]

    def _ceil(self, n: int) -> int:
        return -(-n // self.mult) * self.mult


def needs_tiling(model, H: int, W: int, tile: int) -> bool:
    """Whether an H×W image should go through :class:`TiledPrior` with this tile size."""
    return max(H, W) > tile


#: overlap of memory-planned tiles (pixels): the blend ramps over 48 px after a 16 px margin
PLAN_OVERLAP = 64
#: the network's working memory is planned within min(this, 80% of what the device has free)
PLAN_BUDGET = 3 << 30


#: attention may cost at most this share of a network call's convolution FLOPs (about what
#: the overlap of 2×2 or 3×3 tiles costs: beyond it, tiles are cheaper than the whole image)
ATTN_SHARE = 0.25
#: planned tiles are never smaller than this (the resolution networks are trained at)
MIN_TILE = 256


def plan_tiling(prior, shape, batch: int = 1, device="cpu", budget: int | None = None) -> int | None:
    """Tile side for running ``prior`` on ``batch`` images of ``shape`` (C, H, W) on ``device``,
    or None when the network can run on the whole image.

    From one probe of the network (:func:`dmir.models.memory.probe`):

    * memory: bytes per pixel × pixels × batch must fit the budget: ``budget`` bytes, by
      default min(:data:`PLAN_BUDGET`, 80% of what the device has available — MemAvailable on
      CPU, free memory on CUDA — less the sampler's state and the weights);
    * time: self-attention is quadratic in pixels; its FLOPs may be at most
      :data:`ATTN_SHARE` of the convolutions' (the shipped prior: up to ~1250² pixels per
      call; its one attention layer costs 1% of a call at 256², 17% at 1024²), so that time
      stays linear in pixels.

    Within both, the whole image runs at once (no tiles, no overlap). Otherwise the tiles are
    the largest within both limits (and ≥ :data:`MIN_TILE`), one network call per tile
    (``max_batch=1``), each axis cut into the fewest tiles with :data:`PLAN_OVERLAP` pixels of
    overlap and as much again of spare coverage for the grid shift: n×n tiles cover
    (1 + n·64/side)² of the image. Build the wrapper with :func:`tiled_for_memory` (or
    ``TiledPrior(prior, tile, overlap=PLAN_OVERLAP, max_batch=1, fit=True)``). Priors without
    a network (and consistency models) are never tiled.
    """
    from . import memory

    C, H, W = (int(s) for s in shape)
    if not isinstance(getattr(prior, "net", None), torch.nn.Module) or hasattr(prior, "denoise"):
        return None
    mult = int(getattr(prior, "size_multiple", 1) or 1)
    ceil = lambda n: -(-n // mult) * mult                          # noqa: E731
    if budget is None:
        avail = memory.USABLE_FRACTION * memory.available_bytes(device)
        avail -= memory.state_bytes(shape, batch) + memory.weight_bytes(prior)
        room = min(float(PLAN_BUDGET), avail)
    else:
        room = float(budget)
    pr = memory.probe(prior)
    max_pixels = max(room, 0.0) / pr["bytes_per_pixel"] if pr["bytes_per_pixel"] else math.inf
    if pr["attn_flops_per_pixel2"] > 0:
        max_pixels = min(max_pixels,
                         ATTN_SHARE * pr["conv_flops_per_pixel"] / pr["attn_flops_per_pixel2"])
    if ceil(H) * ceil(W) * batch <= max_pixels:
        return None
    ov = PLAN_OVERLAP
    t_max = max(ceil(MIN_TILE), int(math.isqrt(int(min(max_pixels, 1 << 62)))) // mult * mult)
    if t_max >= max(H, W):                  # one image fits, the batch does not: split in 2
        t_max = max(ceil(MIN_TILE), ceil(-(-max(H, W) // 2) + ov))
    tile = 0
    for L in (H, W):
        if L <= t_max:
            continue
        # the fewest tiles n with n·(tile − ov) + ov = L + ov (overlap ov, spare ov for shifts)
        n = -(-L // (t_max - ov))
        tile = max(tile, ceil(-(-L // n) + ov))
    return min(tile, t_max) if tile else t_max


def tiled_for_memory(prior, shape, batch: int = 1, device="cpu", log=None, **kw):
    """``prior`` itself when the whole image fits, else a :class:`TiledPrior` planned by
    :func:`plan_tiling`; images whose sides are not multiples of the network's size multiple
    are padded (a one-tile TiledPrior). ``log(message)`` is told which path runs."""
    C, H, W = (int(s) for s in shape)
    tile = plan_tiling(prior, shape, batch, device, **kw)
    mult = int(getattr(prior, "size_multiple", 1) or 1)
    if tile is None:
        if log is not None:
            log(f"{H}x{W} image: the network runs on the whole image (it fits in memory)")
        if H % mult or W % mult:
            return TiledPrior(prior, tile=-(-max(H, W) // mult) * mult)
        return prior
    wrapped = TiledPrior(prior, tile=tile, overlap=min(PLAN_OVERLAP, tile // 2), max_batch=1,
                         fit=True)
    if log is not None:
        log(f"{H}x{W} image: the network runs on overlapping {tile}x{tile} tiles "
            f"(overlap {wrapped.overlap}, shifted every step), one at a time, to bound memory "
            f"and attention cost")
    return wrapped


__all__ = ["TiledPrior", "needs_tiling", "plan_tiling", "tiled_for_memory", "PLAN_OVERLAP",
           "PLAN_BUDGET", "ATTN_SHARE", "MIN_TILE"]
