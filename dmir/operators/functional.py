"""Operators from plain functions (composition, ``B @ A``, is in :mod:`.base`).

* :class:`FunctionOperator` — an operator from two functions, ``A(x)`` and its adjoint
  ``At(y)``; the pseudo-inverse is the minimum-norm least-squares solution, found by conjugate
  gradients on the normal equations AᵀA x = Aᵀy started at x = 0 (:func:`cg_pinv`: the iterates
  stay in range(Aᵀ), so the limit is A⁺y).
* :class:`ComposedOperator` — ``B @ A`` for two operators (y = B(A x)); Aᵀ is Aᵀ Bᵀ, the
  pseudo-inverse again by conjugate gradients (A⁺B⁺ is not (BA)⁺ in general).

Both are :class:`~dmir.operators.base.LinearOperator` s (validation, batching, ``project``,
``.to``), register like any other (:func:`dmir.operators.register`) and pass the operator
property tests (tests/test_operators.py); their ``pinv`` is iterative: the minimum-norm
solution to the CG tolerance (:func:`~dmir.operators.base.cg_tolerance`: the given ``cg_tol``,
at least 100·eps of the dtype), so ``exact_pinv`` is True while CG converges.
"""
from __future__ import annotations

import torch

from ..errors import ParameterError, ShapeError
from .base import LinearOperator, _CGPinv

__all__ = ["FunctionOperator"]


class FunctionOperator(_CGPinv, LinearOperator):
    """A linear operator from ``A(x)`` and its exact adjoint ``At(y)`` (batched functions of
    (B, *x_shape) and (B, *y_shape) tensors); A⁺ by conjugate gradients (``cg_iters``,
    ``cg_tol``). ``At`` must be the adjoint: ⟨A x, y⟩ = ⟨x, Aᵀ y⟩ (checked on random vectors
    when ``check=True``).

    Example — 2× horizontal subsampling::

        op = FunctionOperator(lambda x: x[..., ::2],
                              lambda y: torch.stack([y, torch.zeros_like(y)], -1).flatten(-2),
                              x_shape=(3, 8, 8), y_shape=(3, 8, 4))
    """

    def __init__(self, A, At, x_shape, y_shape, name: str = "function", cg_iters: int = 200,
                 cg_tol: float = 1e-10, check: bool = True):
        if not (callable(A) and callable(At)):
            raise ParameterError(f"{name}: A and At must be callables")
        for what, shp in (("x_shape", x_shape), ("y_shape", y_shape)):
            try:
                dims = tuple(shp)
                ok = len(dims) >= 1 and all(not isinstance(d, bool) and int(d) == d and d >= 1
                                            for d in dims)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ShapeError(f"{name}: {what} must be a tuple of positive whole numbers, "
                                 f"got {shp!r}")
        if isinstance(cg_iters, bool) or not isinstance(cg_iters, int) or cg_iters < 1:
            raise ParameterError(f"{name}: cg_iters must be an integer ≥ 1, got {cg_iters!r}")
        try:
            tol = float(cg_tol)
        except (TypeError, ValueError):
            tol = float("nan")
        if not (0.0 < tol < 1.0):
            raise ParameterError(f"{name}: cg_tol must be a number in (0, 1), got {cg_tol!r}")
        super().__init__(x_shape, y_shape)
        self.name = name
        self._fA, self._fAt = A, At
        self.cg_iters, self.cg_tol = int(cg_iters), float(cg_tol)
        if check:
            self._check_adjoint()

    def _check_adjoint(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn((2, *self.x_shape), generator=g, dtype=torch.float64)
        y = torch.randn((2, *self.y_shape), generator=g, dtype=torch.float64)
        Ax, Aty = self._fA(x), self._fAt(y)
        for what, t, shape in (("A(x)", Ax, self.y_shape), ("At(y)", Aty, self.x_shape)):
            if tuple(t.shape) != (2, *shape):
                raise ShapeError(f"{self.name}: {what} has shape {tuple(t.shape)}, expected "
                                 f"(B, {', '.join(map(str, shape))})")
        lhs, rhs = float((Ax * y).sum()), float((x * Aty).sum())
        if abs(lhs - rhs) > 1e-6 * max(1.0, abs(lhs), abs(rhs)):
            raise ParameterError(f"{self.name}: At is not the adjoint of A (<Ax, y> = {lhs:.6g} "
                                 f"but <x, At y> = {rhs:.6g})")

    def _A(self, x):
        return self._fA(x)

    def _At(self, y):
        return self._fAt(y)

    def _pinv(self, y):
        return self._cg(self._fA, self._fAt, y)
