"""A learned patch prior: a Gaussian mixture over p×p colour patches (EPLL-style).

Zoran & Weiss ("From learning models of natural image patches to whole image restoration",
ICCV 2011) showed that a full-covariance GMM over small patches, fitted by EM on natural
photographs, is a strong prior: its components are flat patches, oriented edges and textures,
each with its own covariance, so flat regions stay flat and edges stay sharp — what a single
stationary Gaussian (:class:`~dmir.models.natural.NaturalImagePrior`) cannot do.

As a diffusion prior: for x_t = √ᾱ x_0 + √(1-ᾱ) n every patch of x_t is a noisy patch of x_0,
whose MMSE estimate under the GMM is exact and closed form (:class:`~dmir.models.GMMPrior`).
The image estimate x̂_0 is the average of the overlapping patch estimates (stride ``stride``,
reflect-padded borders), and ε = (x_t - √ᾱ x̂_0)/√(1-ᾱ). This is an *approximation* of the
score of an image-level density (patch averaging, as in EPLL's first half-quadratic step), not
an exact one. The parameters ship with dmir (``dmir/data/patch_gmm.npz``, fitted by
``benchmarks/fit_patch_gmm.py`` on ../shared/data/train). Colour (C = 3) images only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ParameterError, ShapeError
from .analytic import GMMPrior
from .base import _bcast

PARAMS = Path(__file__).resolve().parent.parent / "data" / "patch_gmm.npz"


class PatchGMMPrior(GMMPrior):
    """GMM patch prior applied to whole images by averaging overlapping patch estimates.

    Args:
        stride: step between patches (1 = every patch, most accurate; p = non-overlapping).
        chunk: patches processed at once (memory ≈ chunk · K · D · 8 bytes).
        schedule, T: the diffusion schedule the prior answers for.
        params: optional dict with weights (K,), means (K, 3·p·p), covs (K, D, D), patch p.
    """

    def __init__(self, stride: int = 3, chunk: int = 4096, schedule="linear", T: int = 1000,
                 params=None):
        if params is None:
            with np.load(PARAMS) as d:
                params = {k: d[k] for k in ("weights", "means", "covs", "patch")}
        p = int(params["patch"])
        K = len(params["weights"])
        means = torch.as_tensor(np.asarray(params["means"]), dtype=torch.float64).reshape(K, 3, p, p)
        super().__init__(params["weights"], means,
                         torch.as_tensor(np.asarray(params["covs"]), dtype=torch.float64),
                         schedule=schedule, T=T)
        if not (1 <= int(stride) <= p):
            raise ParameterError(f"PatchGMMPrior: stride must be in 1..{p}, got {stride}")
        self.p, self.stride, self.chunk = p, int(stride), int(chunk)

    def _pad(self, H, W):
        p, s = self.p, self.stride
        ph = (-(H - p)) % s if H >= p else p - H
        pw = (-(W - p)) % s if W >= p else p - W
        return ph, pw

    def x0(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """Average of the exact per-patch GMM posterior means (model units, x_t's dtype)."""
        if x_t.dim() != 4 or x_t.shape[1] != 3:
            raise ShapeError(f"PatchGMMPrior: x_t must be (B, 3, H, W) colour images, got "
                             f"{tuple(x_t.shape)}")
        B, C, H, W = x_t.shape
        p, s = self.p, self.stride
        ph, pw = self._pad(H, W)
        x = x_t.double()
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(H, W) > max(ph, pw) else "replicate")
        Hp, Wp = x.shape[-2:]
        cols = F.unfold(x, p, stride=s)                              # (B, D, L)
        L = cols.shape[-1]
        patches = cols.transpose(1, 2).reshape(B * L, C, p, p)
        t = torch.as_tensor(t)
        tt = t.repeat_interleave(L) if t.dim() else t
        a = self.alpha_bar(tt).double()
        out = torch.empty_like(patches)
        for i in range(0, B * L, self.chunk):
            sl = slice(i, i + self.chunk)
            ti = tt[sl] if tt.dim() else tt
            ai = _bcast(a[sl] if a.dim() else a, patches[sl])
            _, e = self._resp_and_eps(patches[sl], ti)
            out[sl] = (patches[sl] - (1 - ai).sqrt() * e) / ai.sqrt()
        cols = out.reshape(B, L, -1).transpose(1, 2)
        num = F.fold(cols, (Hp, Wp), p, stride=s)
        den = F.fold(torch.ones_like(cols[:1]), (Hp, Wp), p, stride=s)
        return (num / den)[..., :H, :W].to(x_t.dtype)

    def eps(self, x_t: torch.Tensor, t) -> torch.Tensor:
        a = _bcast(self.alpha_bar(t), x_t)
        if (a >= 1).all():                       # t = -1: the clean image, no noise
            return torch.zeros_like(x_t)
        e = (x_t - a.sqrt() * self.x0(x_t, t)) / (1 - a).clamp_min(1e-30).sqrt()
        return torch.where(a >= 1, torch.zeros_like(e), e)

    def sample(self, n, generator=None):
        raise ParameterError("PatchGMMPrior has no image-level sampler (it is a patch prior); "
                             "use GMMPrior.sample on the patch mixture for patches")
