"""LPIPS (Zhang et al., CVPR 2018), version 0.1, AlexNet and VGG16, in plain torch.

    d(x, x₀) = Σ_l mean_{h,w} ‖ w_l ⊙ (φ̂_l(x) − φ̂_l(x₀)) ‖²,   φ̂ = φ / (‖φ‖₂ over channels + 1e-10)

with φ_l the ReLU outputs of the ImageNet-trained trunk (AlexNet relu1..relu5; VGG16 relu1_2,
relu2_2, relu3_3, relu4_3, relu5_3) applied to ``(x − shift) / scale`` (x in [-1, 1]) and w_l the
learned v0.1 linear heads — what ``lpips.LPIPS(net=..., version='0.1')`` computes (no spatial
output, no resizing). No torchvision: the trunks are written out here and their weights come from
``dmir metrics setup`` (:mod:`dmir.metrics.weights`).

Input ranges (``input_range``):

* ``"unit"`` (default): images in [0, 1], mapped to [-1, 1] by 2x − 1 — standard LPIPS
  (``lpips``'s ``normalize=True``; torchmetrics' ``normalize=True``).
* ``"model"``: images already in [-1, 1] (the library's model domain), used as they are.
* ``"equs"``: images in [0, 1] fed to the network *without* the 2x − 1 mapping, as in the EquS
  evaluation code (torchmetrics ``LearnedPerceptualImagePatchSimilarity(net_type='vgg')`` with
  its default ``normalize=False`` given [0, 1] images). Its values are not comparable with
  standard LPIPS; use it only to reproduce that protocol's tables.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ParameterError, ShapeError
from ..types import LpipsInputRange, LpipsNet, Reduction
from . import weights as _weights

__all__ = ["LPIPS", "LPIPSNetwork", "lpips", "INPUT_RANGES", "NETS"]

NETS = ("alex", "vgg")
INPUT_RANGES = ("unit", "model", "equs")

# (in, out, kernel, stride, padding); max-pool 3/2 after the first two convs (torchvision)
_ALEX = [(3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1),
         (256, 256, 3, 1, 1)]
_ALEX_POOL_AFTER = (0, 1)
_ALEX_TAPS = (0, 1, 2, 3, 4)
# VGG16 "D": 3×3 convs, max-pool 2/2 after conv 1, 3, 6, 9; taps relu1_2 … relu5_3
_VGG_WIDTHS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
_VGG_POOL_AFTER = (1, 3, 6, 9)
_VGG_TAPS = (1, 3, 6, 9, 12)
_MIN_SIZE = {"alex": 32, "vgg": 16}

# LPIPS v0.1 ScalingLayer (inputs in [-1, 1])
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class LPIPSNetwork(nn.Module):
    """Trunk + v0.1 heads; ``forward(a, b)`` takes scaled inputs in [-1, 1] and returns (B,)."""

    pool_after: tuple[int, ...]
    taps: tuple[int, ...]
    pool: tuple[int, int]
    shift: torch.Tensor       # buffers
    scale: torch.Tensor

    def __init__(self, net: str = "alex", init: bool = True):
        super().__init__()
        if net not in NETS:
            raise ParameterError(f"LPIPS net must be one of {', '.join(NETS)}, got {net!r}")
        self.net = net
        if net == "alex":
            cfg = _ALEX
            self.pool_after, self.taps, self.pool = _ALEX_POOL_AFTER, _ALEX_TAPS, (3, 2)
        else:
            cins = [3] + _VGG_WIDTHS[:-1]
            cfg = [(i, o, 3, 1, 1) for i, o in zip(cins, _VGG_WIDTHS)]
            self.pool_after, self.taps, self.pool = _VGG_POOL_AFTER, _VGG_TAPS, (2, 2)
        dev = None if init else "meta"
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, s, p, device=dev) for i, o, k, s, p in cfg)
        self.lins = nn.ModuleList(nn.Conv2d(cfg[t][1], 1, 1, bias=False, device=dev)
                                  for t in self.taps)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The trunk's tapped ReLU outputs for x in [-1, 1] (after the scaling layer)."""
        h = (x - self.shift) / self.scale
        out = []
        for i, conv in enumerate(self.convs):
            h = F.relu(conv(h))
            if i in self.taps:
                out.append(h)
            if i in self.pool_after:
                h = F.max_pool2d(h, *self.pool)
            if len(out) == len(self.taps):
                break
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa, fb = self.features(a), self.features(b)
        total: Any = 0
        for lin, u, v in zip(self.lins, fa, fb):
            u = u / (u.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            v = v / (v.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((u - v) ** 2).mean(dim=(2, 3))
        return total.flatten()


class LPIPS(nn.Module):
    """LPIPS v0.1 distance with pretrained weights from the cache (``dmir metrics setup``).

    ``LPIPS("alex")(x, ref)`` → (B,) distances. ``x``, ``ref``: (B, C, H, W) or (C, H, W), C = 3
    (C = 1 is repeated to 3), at least 32×32 (alex) / 16×16 (vgg), range per ``input_range``.
    Raises :class:`~dmir.metrics.weights.WeightsNotSetUpError` if the weights are not set up.

    ``trunk=``/``heads=``: instead of the ``dmir metrics setup`` cache, torchvision's
    AlexNet/VGG16 state dict (default: torch.hub's ``alexnet-owt-7be5be79.pth`` /
    ``vgg16-397923af.pth``) and the ``lpips`` package's ``weights/v0.1/{alex,vgg}.pth`` heads
    (default: those of the installed ``lpips`` package); see :mod:`dmir.metrics.standard`.
    """

    def __init__(self, net: LpipsNet = "alex", input_range: LpipsInputRange = "unit",
                 weights_dir=None, *,
                 trunk=None, heads=None):
        super().__init__()
        if input_range not in INPUT_RANGES:
            raise ParameterError(f"LPIPS input_range must be one of {', '.join(INPUT_RANGES)}, "
                                 f"got {input_range!r}")
        if net not in NETS:
            raise ParameterError(f"LPIPS net must be one of {', '.join(NETS)}, got {net!r}")
        if trunk is not None or heads is not None:
            from .standard import lpips_state_dict
            sd = lpips_state_dict(net, trunk, heads)
        else:
            sd = _weights.load(f"lpips-{net}", weights_dir)
        self.net = LPIPSNetwork(net, init=False)
        self.net.load_state_dict({k: v.clone() for k, v in sd.items()}, strict=True,
                                 assign=True)
        self.net.eval().requires_grad_(False)
        self.input_range = input_range

    def _prep(self, x) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        if x.dim() == 3:
            x = x[None]
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ShapeError(f"LPIPS needs (B, 3, H, W) or (3, H, W) images (1 channel is "
                             f"repeated), got {tuple(x.shape)}")
        m = _MIN_SIZE[self.net.net]
        if min(x.shape[-2:]) < m:
            raise ShapeError(f"LPIPS-{self.net.net} needs images of at least {m}x{m} pixels, "
                             f"got {x.shape[-2]}x{x.shape[-1]}")
        p = self.net.shift
        x = x.to(p.device, p.dtype)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return x * 2 - 1 if self.input_range == "unit" else x

    def distance(self, x, ref) -> torch.Tensor:
        """(B,) distances, differentiable in ``x`` and ``ref`` (a loss for optimisation)."""
        x, ref = self._prep(x), self._prep(ref)
        if x.shape != ref.shape:
            raise ShapeError(f"images must have the same shape, got {tuple(x.shape)} and "
                             f"{tuple(ref.shape)}")
        return self.net(x, ref)

    def forward(self, x, ref) -> torch.Tensor:
        with torch.no_grad():
            return self.distance(x, ref)


_CACHE: dict = {}


def lpips(x, ref, net: LpipsNet = "alex", input_range: LpipsInputRange = "unit",
          reduction: Reduction = "mean",
          weights_dir=None, batch_size: int = 16, *, trunk=None, heads=None):
    """LPIPS v0.1 distance of ``x`` to ``ref`` (see the module doc); the network is loaded once
    and kept. ``reduction="mean"`` → float (mean over the batch), ``"none"`` → (B,) tensor.
    ``trunk``/``heads``: standard weight files instead of the setup cache (see :class:`LPIPS`)."""
    key = (net, input_range, *(None if v is None else str(v) for v in (weights_dir, trunk, heads)))
    if key not in _CACHE:
        _CACHE[key] = LPIPS(net, input_range, weights_dir, trunk=trunk, heads=heads)
    m = _CACHE[key]
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    ref = torch.as_tensor(np.asarray(ref) if not isinstance(ref, torch.Tensor) else ref)
    if x.dim() == 3:
        x, ref = x[None], ref[None]
    d = torch.cat([m(x[i:i + batch_size], ref[i:i + batch_size])
                   for i in range(0, max(len(x), 1), batch_size)]).cpu()
    if reduction == "mean":
        return float(d.mean())
    if reduction == "none":
        return d
    raise ParameterError(f"reduction must be 'mean' or 'none', got {reduction!r}")
