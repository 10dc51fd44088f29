"""Pixel metrics: PSNR and SSIM (both published variants), in torch, float64.

Convention: :func:`psnr` and :func:`ssim` take images in **[0, 1]** (the file / pixel domain,
``data_range = 1``), as tensors or arrays of shape (H, W), (C, H, W) or (B, C, H, W). They do not
clamp. For tensors in the library's model domain [-1, 1] use :func:`psnr_model` /
:func:`ssim_model`, which map with :func:`to_unit` ((x + 1) / 2, clamped to [0, 1] — what a
written file holds, before 8-bit quantisation) and then call the [0, 1] functions.

``uint8=True`` (both metrics) first rounds both images to 8-bit levels (clamp to [0, 1], then
round(255 x) / 255): the numbers then equal those measured on the saved 8-bit PNG files.

* PSNR = 10 log10(data_range² / MSE), MSE over all channels and pixels of one image
  (``inf`` for identical images). With a batch, ``reduction="mean"`` averages the per-image PSNR
  (per image, then averaged — not the PSNR of the pooled MSE).
* SSIM (Wang, Bovik, Sheikh & Simoncelli, IEEE TIP 2004), K1 = 0.01, K2 = 0.03, computed **per
  channel and averaged over channels** (not on a gray conversion), the mean of the SSIM map over
  the "valid" positions (where the window fits inside the image). Two published variants:

  - ``variant="gaussian"`` (the default, and what ``ssim(x, ref)`` always computed): 11×11
    Gaussian window σ = 1.5, population covariances — Wang et al.'s definition, used by the DCDP
    code. Equal to scikit-image's ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1, channel_axis=...)``; images ≥ 11×11.
  - ``variant="uniform"``: 7×7 uniform window with sample covariances (N/(N−1), N = 49) —
    scikit-image's *default* ``structural_similarity(..., data_range=1, channel_axis=...)``, the
    call in the EquS evaluation code; images ≥ 7×7.

  ``sample_covariance=`` overrides the variant's covariance normalisation (e.g. scikit-image's
  ``gaussian_weights=True`` with its default ``use_sample_covariance=True``).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ParameterError, ShapeError

__all__ = ["psnr", "ssim", "ssim_map", "psnr_model", "ssim_model", "to_unit", "quantize_uint8",
           "SSIM_WIN", "SSIM_SIGMA", "SSIM_VARIANTS"]

SSIM_WIN = 11          # the Gaussian variant's window (2 · int(3.5 σ + 0.5) + 1, as scikit-image)
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_UNIFORM_WIN = 7
SSIM_VARIANTS = ("gaussian", "uniform")


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Model domain [-1, 1] → [0, 1], clamped."""
    return ((torch.as_tensor(x) + 1) / 2).clamp(0, 1)


def quantize_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] → the nearest 8-bit level, still in [0, 1] (clamped first): what a PNG holds."""
    return torch.round(torch.as_tensor(x).clamp(0, 1) * 255) / 255


def _pair(x, ref, uint8: bool = False):
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
    x, ref = x.detach().to("cpu", torch.float64), ref.detach().to("cpu", torch.float64)
    if uint8:
        x, ref = quantize_uint8(x), quantize_uint8(ref)
    return x, ref


def _reduce(v: torch.Tensor, reduction: str):
    if reduction == "mean":
        return float(v.mean())
    if reduction == "none":
        return v
    raise ParameterError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def psnr(x, ref, data_range: float = 1.0, reduction: str = "mean", uint8: bool = False):
    """PSNR in dB of ``x`` against ``ref`` (both in [0, data_range]); ``inf`` if identical.

    ``reduction="mean"`` returns a float (mean over the batch of per-image PSNRs), ``"none"``
    a (B,) tensor. ``uint8=True`` rounds both to 8-bit levels first (needs data_range = 1).
    """
    if uint8 and data_range != 1.0:
        raise ParameterError("uint8=True quantises [0, 1] images; use data_range=1")
    x, ref = _pair(x, ref, uint8)
    mse = ((x - ref) ** 2).flatten(1).mean(1)
    out = torch.where(mse > 0, 10 * torch.log10(data_range ** 2 / mse.clamp_min(1e-300)),
                      torch.full_like(mse, math.inf))
    return _reduce(out, reduction)


def _gauss_window(win: int = SSIM_WIN, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    k = torch.arange(win, dtype=torch.float64) - (win - 1) / 2
    g = torch.exp(-0.5 * (k / sigma) ** 2)
    return g / g.sum()


def _window(variant: str) -> torch.Tensor:
    if variant == "gaussian":
        return _gauss_window()
    if variant == "uniform":
        return torch.full((SSIM_UNIFORM_WIN,), 1.0 / SSIM_UNIFORM_WIN, dtype=torch.float64)
    raise ParameterError(f"SSIM variant must be one of {', '.join(SSIM_VARIANTS)}, got "
                         f"{variant!r}")


def ssim_map(x, ref, data_range: float = 1.0, variant: str = "gaussian",
             sample_covariance: bool | None = None, uint8: bool = False) -> torch.Tensor:
    """The SSIM map (B, C, H − w + 1, W − w + 1) on the valid positions (see the module doc)."""
    g = _window(variant)
    if uint8 and data_range != 1.0:
        raise ParameterError("uint8=True quantises [0, 1] images; use data_range=1")
    x, ref = _pair(x, ref, uint8)
    win = g.numel()
    H, W = x.shape[-2:]
    if H < win or W < win:
        raise ShapeError(f"SSIM ({variant} window) needs images of at least {win}x{win} "
                         f"pixels, got {H}x{W}")
    if sample_covariance is None:
        sample_covariance = variant == "uniform"
    B, C = x.shape[:2]
    gh, gw = g.view(1, 1, -1, 1), g.view(1, 1, 1, -1)

    def filt(t):  # separable 'valid' filter, channel by channel
        t = t.reshape(B * C, 1, H, W)
        return F.conv2d(F.conv2d(t, gh), gw).reshape(B, C, H - win + 1, W - win + 1)

    mx, my = filt(x), filt(ref)
    norm = win * win / (win * win - 1) if sample_covariance else 1.0
    sxx = norm * (filt(x * x) - mx * mx)
    syy = norm * (filt(ref * ref) - my * my)
    sxy = norm * (filt(x * ref) - mx * my)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def ssim(x, ref, data_range: float = 1.0, reduction: str = "mean", variant: str = "gaussian",
         sample_covariance: bool | None = None, uint8: bool = False):
    """SSIM of ``x`` against ``ref`` (both in [0, data_range]), per channel, averaged.

    ``variant``: ``"gaussian"`` (Wang et al. 2004; the default) or ``"uniform"`` (7×7,
    scikit-image's default; EquS). ``reduction="mean"`` returns a float (mean over the batch),
    ``"none"`` a (B,) tensor.
    """
    m = ssim_map(x, ref, data_range, variant, sample_covariance, uint8)
    return _reduce(m.mean(dim=(1, 2, 3)), reduction)


def psnr_model(x, ref, reduction: str = "mean", uint8: bool = False):
    """PSNR of model-domain ([-1, 1]) tensors, measured on [0, 1] after clamping."""
    return psnr(to_unit(x), to_unit(ref), 1.0, reduction, uint8)


def ssim_model(x, ref, reduction: str = "mean", variant: str = "gaussian", uint8: bool = False):
    """SSIM of model-domain ([-1, 1]) tensors, measured on [0, 1] after clamping."""
    return ssim(to_unit(x), to_unit(ref), 1.0, reduction, variant, None, uint8)
