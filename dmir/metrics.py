"""Image quality metrics: PSNR and SSIM.

Convention: :func:`psnr` and :func:`ssim` take images in **[0, 1]** (the file / pixel domain,
``data_range = 1``), as tensors or arrays of shape (H, W), (C, H, W) or (B, C, H, W). They do not
clamp. For tensors in the library's model domain [-1, 1] use :func:`psnr_model` /
:func:`ssim_model`, which map with :func:`to_unit` ((x + 1) / 2, clamped to [0, 1] — what a
written file holds, before 8-bit quantisation) and then call the [0, 1] functions.

* PSNR = 10 log10(data_range² / MSE), MSE over all channels and pixels of one image
  (``inf`` for identical images). With a batch, ``reduction="mean"`` averages the per-image PSNR.
* SSIM: Wang, Bovik, Sheikh & Simoncelli (IEEE TIP 2004): 11×11 Gaussian window σ = 1.5,
  K1 = 0.01, K2 = 0.03, population (not sample) covariances, the mean of the SSIM map over
  the "valid" positions (where the window fits inside the image), computed **per channel and
  averaged over channels** (not on a gray conversion). This is scikit-image's
  ``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=1, channel_axis=...)``; images must be at least 11×11.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ShapeError

__all__ = ["psnr", "ssim", "psnr_model", "ssim_model", "to_unit", "SSIM_WIN", "SSIM_SIGMA"]

SSIM_WIN = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Model domain [-1, 1] → [0, 1], clamped."""
    return ((torch.as_tensor(x) + 1) / 2).clamp(0, 1)


def _pair(x, ref):
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    ref = torch.as_tensor(np.asarray(ref) if not isinstance(ref, torch.Tensor) else ref)
    if tuple(x.shape) != tuple(ref.shape):
        raise ShapeError(f"images must have the same shape, got {tuple(x.shape)} and "
                         f"{tuple(ref.shape)}")
    if x.dim() == 2:
        x, ref = x[None, None], ref[None, None]
    elif x.dim() == 3:
        x, ref = x[None], ref[None]
    elif x.dim() != 4:
        raise ShapeError(f"images must be (H, W), (C, H, W) or (B, C, H, W), got "
                         f"{tuple(x.shape)}")
    if x.numel() == 0:
        raise ShapeError("cannot compare empty images")
    return x.detach().to("cpu", torch.float64), ref.detach().to("cpu", torch.float64)


def _reduce(v: torch.Tensor, reduction: str):
    if reduction == "mean":
        return float(v.mean())
    if reduction == "none":
        return v
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def psnr(x, ref, data_range: float = 1.0, reduction: str = "mean"):
    """PSNR in dB of ``x`` against ``ref`` (both in [0, data_range]); ``inf`` if identical.

    ``reduction="mean"`` returns a float (mean over the batch), ``"none"`` a (B,) tensor.
    """
    x, ref = _pair(x, ref)
    mse = ((x - ref) ** 2).flatten(1).mean(1)
    out = torch.where(mse > 0, 10 * torch.log10(data_range ** 2 / mse.clamp_min(1e-300)),
                      torch.full_like(mse, math.inf))
    return _reduce(out, reduction)


def _gauss_window(win: int = SSIM_WIN, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    k = torch.arange(win, dtype=torch.float64) - (win - 1) / 2
    g = torch.exp(-0.5 * (k / sigma) ** 2)
    return g / g.sum()


def ssim_map(x, ref, data_range: float = 1.0) -> torch.Tensor:
    """The SSIM map (B, C, H - 10, W - 10) on the valid positions (see the module doc)."""
    x, ref = _pair(x, ref)
    H, W = x.shape[-2:]
    if H < SSIM_WIN or W < SSIM_WIN:
        raise ShapeError(f"SSIM needs images of at least {SSIM_WIN}x{SSIM_WIN} pixels, got "
                         f"{H}x{W}")
    B, C = x.shape[:2]
    g = _gauss_window()
    gh, gw = g.view(1, 1, -1, 1), g.view(1, 1, 1, -1)

    def filt(t):  # separable 'valid' Gaussian filter, channel by channel
        t = t.reshape(B * C, 1, H, W)
        return F.conv2d(F.conv2d(t, gh), gw).reshape(B, C, H - SSIM_WIN + 1, W - SSIM_WIN + 1)

    mx, my = filt(x), filt(ref)
    sxx = filt(x * x) - mx * mx
    syy = filt(ref * ref) - my * my
    sxy = filt(x * ref) - mx * my
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def ssim(x, ref, data_range: float = 1.0, reduction: str = "mean"):
    """SSIM of ``x`` against ``ref`` (both in [0, data_range]), per channel, averaged.

    ``reduction="mean"`` returns a float (mean over the batch), ``"none"`` a (B,) tensor.
    """
    return _reduce(ssim_map(x, ref, data_range).mean(dim=(1, 2, 3)), reduction)


def psnr_model(x, ref, reduction: str = "mean"):
    """PSNR of model-domain ([-1, 1]) tensors, measured on [0, 1] after clamping."""
    return psnr(to_unit(x), to_unit(ref), 1.0, reduction)


def ssim_model(x, ref, reduction: str = "mean"):
    """SSIM of model-domain ([-1, 1]) tensors, measured on [0, 1] after clamping."""
    return ssim(to_unit(x), to_unit(ref), 1.0, reduction)
