"""Operators that act pixel by pixel or block by block: identity, masks, channel mixing, pooling."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ParameterError, ShapeError
from .base import LinearOperator


class Identity(LinearOperator):
    """y = x (denoising). Σ = 1 everywhere."""

    has_svd = True

    def __init__(self, shape, name="denoising"):
        super().__init__(shape, shape)
        self.name = name
        self.register_buffer("_sing", torch.ones(shape))

    def _A(self, x):
        return x

    _At = _pinv = _Vt = _V = _Ut = _U = _A

    def _project(self, x, y):
        return y

    def _singulars(self):
        return self._sing


class Inpainting(LinearOperator):
    """Keep the pixels where ``mask`` is 1: y = x[mask] (a vector of the kept entries).

    ``mask``: (H, W) shared by all channels or (C, H, W); values in {0, 1} (1 = kept).
    Measurement layout: (B, K) with K the number of kept entries over all channels, in
    channel-major raster order. Spectral layout: the image itself; Σ = mask.
    """

    has_svd = True

    def __init__(self, shape, mask, name="inpainting"):
        C, H, W = shape
        mask = torch.as_tensor(mask)
        if mask.dim() == 2:
            if tuple(mask.shape) != (H, W):
                raise ShapeError(f"{name}: mask must be {H}x{W} (the image size), got "
                                 f"{tuple(mask.shape)[0]}x{tuple(mask.shape)[1]}")
            mask = mask.expand(C, H, W)
        elif tuple(mask.shape) != (C, H, W):
            raise ShapeError(f"{name}: mask must have shape ({H}, {W}) or ({C}, {H}, {W}), "
                             f"got {tuple(mask.shape)}")
        if not torch.isfinite(mask.float()).all() or not ((mask == 0) | (mask == 1)).all():
            raise ParameterError(f"{name}: mask values must be 0 (missing) or 1 (kept)")
        keep = mask.reshape(-1).bool()
        K = int(keep.sum())
        if K == 0:
            raise ParameterError(f"{name}: the mask keeps no pixel")
        super().__init__(shape, (K,))
        self.name = name
        self.register_buffer("mask", mask.to(torch.float32).contiguous())
        self.register_buffer("idx", keep.nonzero().reshape(-1))

    def _A(self, x):
        return x.reshape(x.shape[0], -1).index_select(1, self.idx)

    def _At(self, y):
        out = y.new_zeros(y.shape[0], self.x_dim)
        out.index_copy_(1, self.idx, y)
        return out.reshape(y.shape[0], *self.x_shape)

    _pinv = _At
    _Ut = _At
    _U = _A

    def _project(self, x, y):
        return x * (1 - self.mask) + self._At(y)

    def _Vt(self, x):
        return x

    _V = _Vt

    def _singulars(self):
        return self.mask


class Colorization(LinearOperator):
    """y = Σ_c w_c x_c per pixel (gray image, shape (1, H, W)).

    SVD per pixel: the 1×C row wᵀ has u = 1, σ = ‖w‖, v = w/‖w‖; the spectral layout holds
    Qx with Q an orthogonal C×C (Householder) matrix whose first row is w/‖w‖.
    The reference protocol uses w = (0.3333, 0.3334, 0.3333).
    """

    has_svd = True

    def __init__(self, shape, weights=(0.3333, 0.3334, 0.3333), name="colorization"):
        C, H, W = shape
        w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        if w.numel() != C:
            raise ShapeError(f"{name}: {w.numel()} channel weights given for a {C}-channel image")
        if not torch.isfinite(w).all() or float(w.norm()) == 0:
            raise ParameterError(f"{name}: channel weights must be finite and not all zero")
        super().__init__(shape, (1, H, W))
        self.name = name
        n = w.norm()
        v = w / n
        Q = householder_basis(v)
        # Q is symmetric orthogonal with Q[0] = v
        self.register_buffer("w", w.to(torch.float32).reshape(1, C, 1, 1))
        self.register_buffer("Q", Q.to(torch.float32))
        self.norm = float(n)
        sing = torch.zeros(shape)
        sing[0] = self.norm
        self.register_buffer("_sing", sing)

    def _A(self, x):
        return (x * self.w).sum(1, keepdim=True)

    def _At(self, y):
        return y * self.w

    def _pinv(self, y):
        return y * (self.w / self.norm ** 2)

    def _Vt(self, x):
        return torch.einsum("dc,bchw->bdhw", self.Q, x)

    def _V(self, z):
        return torch.einsum("dc,bdhw->bchw", self.Q, z)

    def _Ut(self, y):
        return F.pad(y, (0, 0, 0, 0, 0, self.x_shape[0] - 1))

    def _U(self, z):
        return z[:, :1]

    def _singulars(self):
        return self._sing


def householder_basis(v: torch.Tensor) -> torch.Tensor:
    """A symmetric orthogonal matrix whose first row is the unit vector ``v`` (Householder)."""
    n = v.numel()
    e0 = torch.zeros(n, dtype=v.dtype)
    e0[0] = 1
    u = e0 - v
    if float(u.norm()) < 1e-12:
        return torch.eye(n, dtype=v.dtype)
    u = u / u.norm()
    return torch.eye(n, dtype=v.dtype) - 2 * torch.outer(u, u)


class AveragePooling(LinearOperator):
    """y = mean over non-overlapping s×s blocks; any H×W divisible by s, any channel count.

    A Aᵀ = I/s², so A⁺ = s²Aᵀ is nearest-neighbour upsampling. SVD: per block the 1-D factor
    (1/s)·1ᵀ has σ = 1/√s and v = 1/√s (completed by an orthonormal Householder basis), so the
    2-D singular value is 1/s. Spectral layout: (C, s·h, s·w) with the range coefficients in the
    top-left h×w block.
    """

    has_svd = True

    def __init__(self, shape, scale: int, name="sr_averagepooling"):
        C, H, W = shape
        s = int(scale)
        super().__init__(shape, (C, H // s, W // s))
        self.name = name
        self.s = s
        q = householder_basis(torch.full((s,), s ** -0.5, dtype=torch.float64))
        self.register_buffer("Qb", q.to(torch.float32))
        sing = torch.zeros(shape)
        sing[:, : H // s, : W // s] = 1.0 / s
        self.register_buffer("_sing", sing)

    def _A(self, x):
        return F.avg_pool2d(x, self.s)

    def _At(self, y):
        return self._pinv(y) / self.s ** 2

    def _pinv(self, y):
        B, C, h, w = y.shape
        s = self.s
        return y[:, :, :, None, :, None].expand(B, C, h, s, w, s).reshape(B, C, h * s, w * s)

    def _Vt(self, x):
        B, C, H, W = x.shape
        s = self.s
        xb = x.reshape(B, C, H // s, s, W // s, s)
        z = torch.einsum("pi,qj,bchiwj->bcphqw", self.Qb, self.Qb, xb)
        return z.reshape(B, C, H, W)

    def _V(self, z):
        B, C, H, W = z.shape
        s = self.s
        zb = z.reshape(B, C, s, H // s, s, W // s)
        x = torch.einsum("pi,qj,bcphqw->bchiwj", self.Qb, self.Qb, zb)
        return x.reshape(B, C, H, W)

    def _Ut(self, y):
        C, H, W = self.x_shape
        return F.pad(y, (0, W - y.shape[-1], 0, H - y.shape[-2]))

    def _U(self, z):
        h, w = self.y_shape[1:]
        return z[..., :h, :w]

    def _singulars(self):
        return self._sing
