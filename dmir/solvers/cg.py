"""Batched conjugate gradients for the regularised normal equations of a linear operator.

    (AᵀA + ρ I) x = b,        ρ ≥ 0 a scalar or one value per batch element,

solved independently for every batch element (per-sample step sizes and stopping), using only
``op.A`` and ``op.At``. Shared by solvers whose data step is a least-squares problem without a
closed form (DiffPIR's proximal step on operators without an SVD; DCDP-style reconstruction).

Starting from ``x_init`` the iterates stay in x_init + span{r_0, M r_0, …} with M = AᵀA + ρI;
for the DiffPIR proximal problem (b = Aᵀy + ρ x̂0, x_init = x̂0) the residual r_0 = Aᵀ(y − Ax̂0)
lies in the row space of A, so the null-space part of x̂0 is kept exactly even when ρ is tiny.
"""
from __future__ import annotations

import numbers

import torch

from ..errors import ParameterError
from ..operators.base import cg_check_every


def _dot(a, b):
    return (a * b).flatten(1).sum(1)


def _bshape(v, like):
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def conjugate_gradient(op, b: torch.Tensor, rho, x_init: torch.Tensor | None = None,
                       max_iter: int = 50, tol: float = 1e-6):
    """Solve (AᵀA + ρI) x = b for each batch element of ``b`` (shape (B, *op.x_shape)).

    Args:
        op: a linear operator with ``A`` and ``At``.
        b: right-hand side.
        rho: ρ ≥ 0, a float or a (B,) tensor. With ρ = 0 the system is only positive
            semi-definite; CG then converges to the solution nearest ``x_init`` when b lies in
            the row space of A.
        x_init: starting point (default zeros).
        max_iter: iteration cap.
        tol: stop an element when ‖r‖ ≤ tol · ‖b‖ (relative residual).

    Returns:
        (x, info) with info = {"iterations": int, "residual": (B,) relative residuals}.
    """
    if max_iter < 0:
        raise ParameterError(f"max_iter must be ≥ 0, got {max_iter}")
    if isinstance(rho, numbers.Real):         # checked on the host: no device round trip
        if not float(rho) >= 0:
            raise ParameterError(f"rho must be ≥ 0, got {rho}")
    elif bool((torch.as_tensor(rho) < 0).any()):
        raise ParameterError(f"rho must be ≥ 0, got {rho}")
    rho_t = torch.as_tensor(rho, dtype=b.dtype, device=b.device)
    rho_b = _bshape(rho_t.expand(b.shape[0]) if rho_t.dim() == 0 else rho_t, b)

    def M(v):
        return op.At(op.A(v)) + rho_b * v

    x = torch.zeros_like(b) if x_init is None else x_init.clone()
    r = b - M(x)
    p = r.clone()
    rs = _dot(r, r)
    tiny = torch.finfo(b.dtype).tiny
    bnorm = _dot(b, b).sqrt().clamp_min(tiny)
    done = rs.sqrt() <= tol * bnorm
    it = 0
    every = cg_check_every(b)
    while it < max_iter and (it % every or not bool(done.all())):
        Mp = M(p)
        pMp = _dot(p, Mp)
        alpha = torch.where(done | (pMp <= 0), torch.zeros_like(rs), rs / pMp.clamp_min(tiny))
        x = x + _bshape(alpha, x) * p
        r = r - _bshape(alpha, r) * Mp
        rs_new = _dot(r, r)
        beta = torch.where(done, torch.zeros_like(rs), rs_new / rs.clamp_min(tiny))
        p = r + _bshape(beta, p) * p
        rs = rs_new
        done = done | (rs.sqrt() <= tol * bnorm) | (pMp <= 0)
        it += 1
    return x, {"iterations": it, "residual": rs.sqrt() / bnorm}
