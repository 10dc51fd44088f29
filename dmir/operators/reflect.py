"""Blur with any 2-D kernel and reflected borders: how a camera or
``scipy.ndimage.gaussian_filter`` blurs a photo at its edges.

The boundary is the half-sample symmetric extension (the edge sample repeated: scipy.ndimage's
``'reflect'``, numpy's ``'symmetric'``), repeated for kernels wider than the image. Separable
kernels do not come here: ``deblur`` gives them an exact SVD with reflected convolution
matrices (:func:`dmir.operators.kernels.conv_matrix`). For the others, :class:`ReflectConv`:

* A and Aᵀ are exact (gather the reflected borders, a depthwise convolution; its transpose,
  then the borders folded back with ``index_add``);
* A⁺ for a kernel symmetric along each axis (a defocus disc, an isotropic kernel): such a blur
  is diagonalised by the orthonormal DCT-II, A = Cᵀ diag(λ) C, so A⁺ = Cᵀ diag(λ⁺) C with λ⁺ =
  1/λ where |λ| > ``threshold``·max|λ| and 0 elsewhere (the Moore–Penrose inverse of the
  blur truncated there: exact when nothing is cut);
* A⁺ for other kernels (motion blur): conjugate gradients on AᵀA x = Aᵀy from x = 0
  (``cg_iters``, ``cg_tol``), an early-stopped, regularised inverse.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ParameterError, ShapeError
from .base import LinearOperator, cg_pinv
from .kernels import reflect_index

__all__ = ["ReflectConv", "dct2_matrix", "axis_symmetric"]


def dct2_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II as an (n × n) matrix (rows = frequencies)."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    C = np.sqrt(2.0 / n) * np.cos(math.pi * k * (2 * i + 1) / (2 * n))
    C[0] /= math.sqrt(2.0)
    return C


def axis_symmetric(k: np.ndarray) -> bool:
    """The kernel equals its mirror image along each axis (to rounding)."""
    tol = 1e-12 * float(np.abs(k).max())
    return bool(np.abs(k - k[::-1, :]).max() <= tol and np.abs(k - k[:, ::-1]).max() <= tol)


class ReflectConv(LinearOperator):
    """y[i, j] = Σ_{s,t} k[s, t] · x[r(i + cₕ − s), r(j + c_w − t)] per channel, c = size // 2
    (``scipy.ndimage.convolve(mode='reflect')``'s convention), r the half-sample reflection.
    ``pinv_kind`` says which inverse runs: ``"dct"`` or ``"cg"`` (module docstring)."""

    #: truncated (dct) or iterative (cg): A A⁺ A = A only where nothing is cut
    exact_pinv = False

    def __init__(self, shape, kernel, threshold: float = 3e-2, cg_iters: int = 100,
                 cg_tol: float = 1e-6, name: str = "deblur"):
        C, H, W = shape
        k = np.asarray(kernel, dtype=np.float64)
        if k.ndim != 2 or k.size == 0 or not np.isfinite(k).all():
            raise ParameterError(f"{name}: kernel must be a finite 2-D array")
        kh, kw = k.shape
        if kh > H or kw > W:
            raise ShapeError(f"{name}: kernel {kh}x{kw} is larger than the image {H}x{W}")
        if not (0.0 <= float(threshold) < 1.0):
            raise ParameterError(f"{name}: threshold must be in [0, 1), got {threshold!r}")
        if not (isinstance(cg_iters, int) and cg_iters >= 1):
            raise ParameterError(f"{name}: cg_iters must be an integer ≥ 1, got {cg_iters!r}")
        if not (0.0 < float(cg_tol) < 1.0):
            raise ParameterError(f"{name}: cg_tol must be in (0, 1), got {cg_tol!r}")
        super().__init__(shape, shape)
        self.name = name
        self.cg_iters, self.cg_tol = int(cg_iters), float(cg_tol)
        ch, cw = kh // 2, kw // 2
        self.register_buffer("idx_h", torch.from_numpy(
            reflect_index(np.arange(H + kh - 1) - (kh - 1 - ch), H)), persistent=False)
        self.register_buffer("idx_w", torch.from_numpy(
            reflect_index(np.arange(W + kw - 1) - (kw - 1 - cw), W)), persistent=False)
        flipped = torch.from_numpy(np.ascontiguousarray(k[::-1, ::-1]))
        self.register_buffer("weight", flipped.to(torch.float32).expand(C, 1, kh, kw)
                             .contiguous())
        self.pinv_kind = "dct" if axis_symmetric(k) else "cg"
        if self.pinv_kind == "dct":
            Ch, Cw = dct2_matrix(H), dct2_matrix(W)
            delta = np.zeros((H, W))
            delta[0, 0] = 1.0
            resp = self._apply_np(k, delta)
            lam = (Ch @ resp @ Cw.T) / np.outer(Ch[:, 0], Cw[:, 0])
            cut = np.abs(lam) <= float(threshold) * np.abs(lam).max()
            inv = np.where(cut, 0.0, 1.0 / np.where(cut, 1.0, lam))
            self.register_buffer("Ch", torch.from_numpy(Ch).to(torch.float32))
            self.register_buffer("Cw", torch.from_numpy(Cw).to(torch.float32))
            self.register_buffer("lam_inv", torch.from_numpy(inv).to(torch.float32))

    @staticmethod
    def _apply_np(k: np.ndarray, x: np.ndarray) -> np.ndarray:
        """The blur of one (H, W) array in float64 (for the eigenvalues)."""
        kh, kw = k.shape
        H, W = x.shape
        ih = reflect_index(np.arange(H) + kh // 2 - np.arange(kh)[:, None], H)   # (kh, H)
        iw = reflect_index(np.arange(W) + kw // 2 - np.arange(kw)[:, None], W)   # (kw, W)
        out = np.zeros((H, W))
        for s in range(kh):
            for t in range(kw):
                if k[s, t]:
                    out += k[s, t] * x[ih[s]][:, iw[t]]
        return out

    def _A(self, x):
        xp = x[..., self.idx_h, :][..., self.idx_w]
        return F.conv2d(xp, self.weight.to(x.dtype), groups=self.x_shape[0])

    def _At(self, y):
        z = F.conv_transpose2d(y, self.weight.to(y.dtype), groups=self.x_shape[0])
        H, W = self.x_shape[1:]
        out = torch.zeros((*z.shape[:-2], H, z.shape[-1]), dtype=z.dtype, device=z.device)
        out = out.index_add(-2, self.idx_h, z)
        res = torch.zeros((*z.shape[:-2], H, W), dtype=z.dtype, device=z.device)
        return res.index_add(-1, self.idx_w, out)

    def _pinv(self, y):
        if self.pinv_kind == "dct":
            Ch, Cw = self.Ch.to(y.dtype), self.Cw.to(y.dtype)
            z = Ch @ y @ Cw.T
            return Ch.T @ (z * self.lam_inv.to(y.dtype)) @ Cw
        return cg_pinv(self._A, self._At, y, self.cg_iters, self.cg_tol)
