"""Separable operators y = M_h X M_wᵀ (per channel) with an exact SVD.

With M_h = U_h S_h V_hᵀ and M_w = U_w S_w V_wᵀ, the 2-D operator has singular values
S_h ⊗ S_w, right singular vectors V_h ⊗ V_w and left ones U_h ⊗ U_w. 1-D singular values below
``threshold`` are set to 0 (as in the DDRM/DDNM reference code, ZERO = 3e-2), so the operator
actually applied is the *truncated* M' = U S' Vᵀ; A, Aᵀ and A⁺ are all of that operator, so
A A⁺ A = A holds exactly.

Spectral layout: Vt(x) = V_hᵀ X V_w, an (H × W) grid per channel whose top-left (h × w) block
pairs with the measurement's U coefficients.

The SVDs (and everything built from them) are computed on first use, not at construction
(:meth:`LinearOperator._build_lazy`), always in float32 on the CPU as the reference does, then
converted to the operator's dtype and device — so ``op.double()`` before or after the first use
gives the same operator.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import ShapeError
from .base import LinearOperator, safe_inverse


def _svd(M: np.ndarray, dtype: torch.dtype, threshold: float):
    """Full SVD of a 1-D matrix (in ``dtype``, the reference uses float32) with thresholding."""
    U, S, Vh = torch.linalg.svd(torch.as_tensor(M, dtype=dtype), full_matrices=True)
    S = S.clone()
    S[S < threshold] = 0
    return U, S, Vh.transpose(0, 1).contiguous()


class SeparableSVD(LinearOperator):
    """y = M_h' X M_w'ᵀ for every channel; M' the thresholded 1-D matrices.

    Args:
        Mh: (h × H) matrix acting on rows (vertical axis), h ≤ H.
        Mw: (w × W) matrix acting on columns (horizontal axis), w ≤ W.
        channels: C.
        threshold: 1-D singular values below it are set to 0.
        svd_dtype: precision of the SVD (float32 reproduces the reference code bit for bit in
            its tie-breaking; float64 is more accurate).
    """

    has_svd = True

    # buffers (typed for the checker)
    Uh: torch.Tensor
    Vh: torch.Tensor
    Uw: torch.Tensor
    Vw: torch.Tensor
    Sh: torch.Tensor
    Sw: torch.Tensor
    _sing: torch.Tensor

    _lazy_buffers = frozenset({"Uh", "Vh", "Uw", "Vw", "Sh", "Sw", "Mh", "Mw", "Mh_inv",
                               "Mw_inv", "_sing", "_reduced_project", "Vh_r", "Vw_r", "Gh_r",
                               "Gw_r"})

    def __init__(self, Mh, Mw, channels: int, threshold: float = 3e-2,
                 svd_dtype: torch.dtype = torch.float64, name: str = "separable"):
        Mh = np.asarray(Mh, dtype=np.float64)
        Mw = np.asarray(Mw, dtype=np.float64)
        (h, H), (w, W) = Mh.shape, Mw.shape
        if h > H or w > W:
            raise ShapeError(f"{name}: measurement larger than image ({h}x{w} > {H}x{W})")
        super().__init__((channels, H, W), (channels, h, w))
        self.name = name
        # the SVD and everything derived from it are computed on first use (_build_lazy)
        self._def = (Mh, Mw, int(channels), float(threshold), svd_dtype)
        self._defer()

    def _build_lazy(self) -> dict:
        Mh, Mw, channels, threshold, svd_dtype = self._def
        H, W = Mh.shape[1], Mw.shape[1]
        Uh, Sh, Vh = _svd(Mh, svd_dtype, threshold)
        if Mw.shape == Mh.shape and np.array_equal(Mw, Mh):
            Uw, Sw, Vw = Uh, Sh, Vh
        else:
            Uw, Sw, Vw = _svd(Mw, svd_dtype, threshold)
        f32 = torch.float32
        out = {"Uh": Uh.to(f32), "Vh": Vh.to(f32), "Uw": Uw.to(f32), "Vw": Vw.to(f32),
               "Sh": Sh.to(f32), "Sw": Sw.to(f32)}
        kh, kw = len(Sh), len(Sw)
        # effective (thresholded) matrices and their pseudo-inverses, for the fast paths
        Mh_eff = (Uh[:, :kh] * Sh) @ Vh[:, :kh].T
        Mw_eff = (Uw[:, :kw] * Sw) @ Vw[:, :kw].T
        Mh_inv = (Vh[:, :kh] * safe_inverse(Sh)) @ Uh[:, :kh].T
        Mw_inv = (Vw[:, :kw] * safe_inverse(Sw)) @ Uw[:, :kw].T
        out.update(Mh=Mh_eff.to(f32), Mw=Mw_eff.to(f32), Mh_inv=Mh_inv.to(f32),
                   Mw_inv=Mw_inv.to(f32))
        sing = torch.zeros(channels, H, W, dtype=svd_dtype)
        sing[:, :kh, :kw] = Sh[:, None] * Sw[None, :]
        out["_sing"] = sing.to(f32)
        # reduced SVD factors (nonzero 1-D singular values only) for the projection
        #   x − A⁺(Ax − y) = x − V_h,r (V_h,rᵀ X V_w,r − S_h,r⁻¹ U_h,rᵀ Y U_w,r S_w,r⁻¹) V_w,rᵀ,
        # used when the truncation makes it cheaper than the four dense products of A and A⁺
        rh, rw = int((Sh > 0).sum()), int((Sw > 0).sum())
        h, w = kh, kw
        full = h * H * W + h * W * w + H * h * w + H * w * W
        reduced = 2 * rh * H * W + 2 * rh * rw * H + rw * h * w + rh * h * rw
        out["_reduced_project"] = 0 < rh and 0 < rw and reduced < 0.8 * full
        if out["_reduced_project"]:
            nz_h, nz_w = Sh > 0, Sw > 0
            out["Vh_r"] = Vh[:, :kh][:, nz_h].to(f32).contiguous()
            out["Vw_r"] = Vw[:, :kw][:, nz_w].to(f32).contiguous()
            out["Gh_r"] = (Uh[:, nz_h] / Sh[nz_h]).to(f32).contiguous()
            out["Gw_r"] = (Uw[:, nz_w] / Sw[nz_w]).to(f32).contiguous()
        return out

    # fast paths: two small matrix products each
    def _A(self, x):
        return self.Mh @ x @ self.Mw.T

    def _At(self, y):
        return self.Mh.T @ y @ self.Mw

    def _pinv(self, y):
        return self.Mh_inv @ y @ self.Mw_inv.T

    def _project(self, x, y):
        if not self._reduced_project:
            return x - self._pinv(self._A(x) - y)
        inner = self.Vh_r.T @ x @ self.Vw_r - self.Gh_r.T @ y @ self.Gw_r
        return x - self.Vh_r @ inner @ self.Vw_r.T

    # spectral protocol
    def _Vt(self, x):
        return self.Vh.T @ x @ self.Vw

    def _V(self, z):
        return self.Vh @ z @ self.Vw.T

    def _Ut(self, y):
        c = self.Uh.T @ y @ self.Uw
        _, H, W = self.x_shape
        return torch.nn.functional.pad(c, (0, W - c.shape[-1], 0, H - c.shape[-2]))

    def _U(self, z):
        h, w = self.y_shape[1:]
        return self.Uh @ z[..., :h, :w] @ self.Uw.T

    def _singulars(self):
        return self._sing


class ProtocolDeblur(SeparableSVD):
    """The DDRM/DDNM/EquS reference deblurring operator, *including its channel quirk*.

    The reference sorts the 2-D singular values s = vec(S_h S_wᵀ) descending (torch.sort on the
    float32 vector, giving ``perm``), lays out the spectral vector pixel-major with channels
    interleaved (index C·p + c for rank p, channel c) but tiles the singular values
    channel-major, so the coefficient of rank p in channel c is scaled by
    s_sorted[(C·p + c) mod HW] instead of s_sorted[p]. A, Aᵀ and A⁺ all use these values, so
    this operator is *not* a blur for C > 1 (it differs from y = M X Mᵀ by up to 0.5 on
    64×64 test images); the published deblurring numbers of DDRM, DDNM and EquS were measured
    with it. For real blurred photos use the ``deblur`` operator instead.
    """

    _lazy_buffers = SeparableSVD._lazy_buffers | {"_sing_inv", "_sing_proj"}

    def __init__(self, Mh, Mw, channels: int, threshold: float = 3e-2, name: str = "deblur"):
        # float32 SVD and sort reproduce the reference tie order among equal singular values
        super().__init__(Mh, Mw, channels, threshold, svd_dtype=torch.float32, name=name)

    def _build_lazy(self) -> dict:
        out = super()._build_lazy()            # float32 on the CPU: the sort's ties as the reference
        C, H, W = self.x_shape
        s2d = (out["Sh"].reshape(H, 1) @ out["Sw"].reshape(1, W)).reshape(H * W)
        s_sorted, perm = s2d.sort(descending=True)
        rank = torch.empty_like(perm)
        rank[perm] = torch.arange(H * W)
        c = torch.arange(C).reshape(C, 1)
        idx = (C * rank.reshape(1, -1) + c) % (H * W)
        sing = s_sorted[idx].reshape(C, H, W).contiguous()
        out.update(_sing=sing, _sing_inv=safe_inverse(sing),
                   _sing_proj=(sing != 0).to(sing.dtype))
        return out

    # the quirk makes the operator non-separable: go through the spectral protocol
    _A = LinearOperator._A
    _At = LinearOperator._At
    _pinv = LinearOperator._pinv

    def _project(self, x, y):
        # U is square orthogonal here (h = H, w = W), so UᵀU = I and
        # A⁺(Ax − y) = V Σ⁺(Σ Vᵀx − Uᵀy) = V(P Vᵀx − Σ⁺Uᵀy), P = Σ⁺Σ: 6 dense products, not 8
        return x - self._V(self._sing_proj * self._Vt(x) - self._sing_inv * self._Ut(y))
