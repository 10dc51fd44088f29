"""Numerical checks of a linear operator, the ones deepinv runs on its physics operators
(``adjointness_test``, ``compute_norm``, the pseudo-inverse and concatenation tests), for any
:class:`~dmir.operators.base.LinearOperator` — a built-in one, yours, or a composition ``B @ A``.

    report = operators.check(op)          # raises OperatorCheckError if a check fails
    report = operators.check(op, strict=False); print(report)

On random Gaussian inputs (seeded; in the operator's dtype and device), relative errors:

* **adjoint** — |⟨A u, v⟩ − ⟨u, Aᵀ v⟩| / (‖A u‖ ‖v‖);
* **pinv** — deepinv's pseudo-inverse test: for r = AᵀA x (a vector of the row space),
  ‖A⁺(A r) − r‖ / ‖r‖ (deepinv: < 1e-2);
* **Penrose 1–4** — the four Moore–Penrose conditions applied to vectors:
  (1) ‖A A⁺ A x − A x‖ / ‖A x‖, (2) ‖A⁺ A A⁺ y − A⁺ y‖ / ‖A⁺ y‖,
  (3) |⟨A A⁺ y₁, y₂⟩ − ⟨y₁, A A⁺ y₂⟩| / (‖y₁‖ ‖y₂‖) (A A⁺ symmetric),
  (4) |⟨A⁺ A x₁, x₂⟩ − ⟨x₁, A⁺ A x₂⟩| / (‖x₁‖ ‖x₂‖) (A⁺ A symmetric).
  Together they say ``pinv`` is the pseudo-inverse (much stronger than the row-space test on
  ill-conditioned operators, where A⁺ of a random y lives on the smallest singular values);
* **norm** — ‖A‖₂² = λ_max(AᵀA) by power iteration (deepinv's ``compute_norm``); for an
  operator with an SVD it must agree with ``max(singulars())²``, and ‖A x‖² ≤ ‖A‖² ‖x‖² on
  random x in any case;
* **project** — ``project(x, y)`` equals x − A⁺(A x − y).

deepinv's concatenation test is the adjoint, norm and pseudo-inverse tests of ``B @ A``.

Tolerances depend on the dtype (:func:`tolerances`): the adjoint to 1e4·eps; pinv to 1e-2
(deepinv's); the Penrose
conditions to 1e-2 in float32 and 1e-4 in float64 (the built-in bases are built in float32, as
the reference code's, so float64 cannot do better than ~1e-6 on them, and a CG pseudo-inverse
converged to its relative residual 1e-8 is off by that times the condition number); the norm to 1e-3 with the
SVD (power iteration converges from below). The pseudo-inverse test and the Penrose conditions
fail the check only where the operator claims an exact pseudo-inverse (``op.exact_pinv``; pass
``pinv=True`` to require them anyway); otherwise they are reported (the DPS blurs' regularised
inverses).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import ParameterError
from .base import LinearOperator

__all__ = ["check", "CheckReport", "OperatorCheckError", "tolerances", "power_norm"]


class OperatorCheckError(ParameterError):
    """An operator failed :func:`check` (its message lists the failed checks)."""


def tolerances(dtype: torch.dtype) -> dict:
    """The default tolerance of each check for ``dtype``."""
    eps = float(torch.finfo(dtype).eps)
    single = eps > 1e-10
    return {"adjoint": 1e4 * eps, "pinv": 1e-2, "penrose": 1e-2 if single else 1e-4,
            "norm": 1e-3, "project": 1e-2 if single else 1e-4}


@dataclass
class CheckReport:
    """Errors measured by :func:`check` and the tolerances they were held to."""

    name: str
    dtype: torch.dtype
    exact_pinv: bool
    pinv_note: str
    adjoint: float
    pinv: float | None                    # row-space recovery ‖A⁺A r − r‖/‖r‖, r = AᵀA x
    penrose: dict                         # {1: err, 2: err, 3: err, 4: err} (empty if skipped)
    norm: float                           # ‖A‖₂² by power iteration
    norm_svd: float | None                # max(singulars())² where the operator has an SVD
    norm_bound: float                     # max over random x of ‖A x‖² / (‖A‖² ‖x‖²)
    project: float | None
    tol: dict
    pinv_checked: bool
    failures: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        p = ", ".join(f"P{k} {v:.2g}" for k, v in self.penrose.items()) or "not run"
        svd = "" if self.norm_svd is None else f" (SVD {self.norm_svd:.6g})"
        lines = [f"operator check: {self.name} ({self.dtype})",
                 f"  adjoint   {self.adjoint:.2g} (tol {self.tol['adjoint']:.1g})",
                 f"  pinv      {'—' if self.pinv is None else f'{self.pinv:.2g}'} "
                 f"(tol {self.tol['pinv']:.1g})",
                 f"  Penrose   {p} (tol {self.tol['penrose']:.1g}; "
                 f"{'checked' if self.pinv_checked else 'reported only'}: {self.pinv_note})",
                 f"  ‖A‖²      {self.norm:.6g}{svd}; ‖Ax‖²/(‖A‖²‖x‖²) ≤ {self.norm_bound:.4g}",
                 f"  project   {'—' if self.project is None else f'{self.project:.2g}'}",
                 "  " + ("ok" if self.ok else "FAILED: " + "; ".join(self.failures))]
        return "\n".join(lines)


def _dot(a, b):
    return (a.double() * b.double()).flatten(1).sum(1)


def _norm(a):
    return a.double().flatten(1).norm(dim=1)


def _rel(num, den):
    return float((num / den.clamp_min(1e-300)).max())


def power_norm(op: LinearOperator, iters: int = 200, tol: float = 1e-7, seed: int = 0) -> float:
    """‖A‖₂² = λ_max(AᵀA) by power iteration from a seeded random start (deepinv's
    ``compute_norm``); stops when the Rayleigh quotient changes by less than ``tol`` (relative)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn((1, *op.x_shape), generator=g, dtype=torch.float64).to(op.dtype)
    v = v.to(op.device)
    v = v / v.flatten().norm()
    lam = 0.0
    with torch.no_grad():
        for _ in range(int(iters)):
            w = op.At(op.A(v))
            new = float(_dot(w, v)[0])
            v = w / max(float(w.double().flatten().norm()), 1e-300)
            if abs(new - lam) <= tol * abs(new):
                lam = new
                break
            lam = new
    return lam


def check(op: LinearOperator, *, batch: int = 2, seed: int = 0, tol: dict | None = None,
          pinv: bool | None = None, strict: bool = True) -> CheckReport:
    """Run the checks of the module docstring on ``op`` (in its dtype and device).

    Args:
        batch: random vectors per check.
        tol: overrides of :func:`tolerances` (keys adjoint, penrose, norm, project).
        pinv: require the Penrose conditions (True), skip them (False), or require them only
            where ``op.exact_pinv`` (None, the default).
        strict: raise :class:`OperatorCheckError` when a check fails (else only report it).
    """
    if not isinstance(op, LinearOperator):
        raise ParameterError(f"check needs a dmir LinearOperator, got {type(op).__name__}")
    dt, dev = op.dtype, op.device
    t = dict(tolerances(dt), **(tol or {}))
    g = torch.Generator().manual_seed(seed)

    def rx(*, n=batch):
        return torch.randn((n, *op.x_shape), generator=g, dtype=torch.float64).to(dev, dt)

    def ry(*, n=batch):
        return torch.randn((n, *op.y_shape), generator=g, dtype=torch.float64).to(dev, dt)

    failures = []
    with torch.no_grad():
        u, v = rx(), ry()
        Au = op.A(u)
        adj = _rel((_dot(Au, v) - _dot(u, op.At(v))).abs(), _norm(Au) * _norm(v))
        if not adj <= t["adjoint"]:
            failures.append(f"adjoint error {adj:.2g} > {t['adjoint']:.1g}")

        penrose, proj, row, want = {}, None, None, False
        if pinv is not False:
            r = op.At(op.A(rx()))
            row = _rel(_norm(op.pinv(op.A(r)) - r), _norm(r))
            x1, x2, y1, y2 = rx(), rx(), ry(), ry()
            Ax = op.A(x1)
            penrose[1] = _rel(_norm(op.A(op.pinv(Ax)) - Ax), _norm(Ax))
            Py = op.pinv(y1)
            penrose[2] = _rel(_norm(op.pinv(op.A(Py)) - Py), _norm(Py))
            penrose[3] = _rel((_dot(op.A(op.pinv(y1)), y2) - _dot(y1, op.A(op.pinv(y2)))).abs(),
                              _norm(y1) * _norm(y2))
            penrose[4] = _rel((_dot(op.pinv(op.A(x1)), x2) - _dot(x1, op.pinv(op.A(x2)))).abs(),
                              _norm(x1) * _norm(x2))
            want = op.exact_pinv if pinv is None else bool(pinv)   # (after CG has run)
            if want and not row <= t["pinv"]:
                failures.append(f"pseudo-inverse test ‖A⁺A r − r‖/‖r‖ = {row:.2g} > "
                                f"{t['pinv']:.1g} (pinv: {op.pinv_note})")
            if want:
                for k, e in penrose.items():
                    if not e <= t["penrose"]:
                        failures.append(f"Penrose condition {k} error {e:.2g} > "
                                        f"{t['penrose']:.1g} (pinv: {op.pinv_note})")
                ref = x1 - op.pinv(op.A(x1) - y1)
                proj = _rel(_norm(op.project(x1, y1) - ref), _norm(ref))
                if not proj <= t["project"]:
                    failures.append(f"project(x, y) differs from x − A⁺(Ax − y) by {proj:.2g}")

        lam = power_norm(op, seed=seed)
        xs = rx(n=max(batch, 4))
        bound = float((_norm(op.A(xs)) ** 2 / (lam * _norm(xs) ** 2)).max()) if lam > 0 else 0.0
        if lam > 0 and not bound <= 1 + t["norm"]:
            failures.append(f"‖Ax‖² exceeds the power-iteration ‖A‖²·‖x‖² by {bound - 1:.2g}")
        lam_svd = None
        if op.has_svd:
            lam_svd = float(op.singulars().double().max()) ** 2
            if not abs(lam - lam_svd) <= t["norm"] * max(lam_svd, 1e-300):
                failures.append(f"power-iteration ‖A‖² {lam:.6g} differs from the SVD's "
                                f"{lam_svd:.6g}")

    rep = CheckReport(op.name, dt, bool(op.exact_pinv), op.pinv_note, adj, row, penrose, lam,
                      lam_svd, bound, proj, t, pinv is not False and bool(penrose) and want,
                      failures)
    if strict and failures:
        raise OperatorCheckError(f"operator '{op.name}' ({dt}) failed its checks: "
                                 + "; ".join(failures))
    return rep
