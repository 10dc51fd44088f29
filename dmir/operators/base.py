"""The linear-operator protocol shared by every degradation.

An operator maps images ``x`` of shape ``(B, *x_shape)`` (model domain [-1, 1], ``x_shape =
(C, H, W)``) to measurements ``y`` of shape ``(B, *y_shape)``. Every operator provides

* ``A(x)``     — the forward map y = A x,
* ``At(y)``    — the exact adjoint Aᵀ y,
* ``pinv(y)``  — the Moore–Penrose pseudo-inverse A⁺ y,

batched over the leading dimension, for float32 and float64 (convert the operator with
``op.double()``), on any device (``op.to(device)``).

Operators with an exact singular value decomposition A = U Σ Vᵀ also provide the *spectral
protocol* used by DDNM+ and DDRM. Spectral coefficients always have the image's shape
``(B, *x_shape)`` (a layout private to each operator):

* ``Vt(x)``  — coefficients of x in the right singular basis,
* ``V(z)``   — back to the image,
* ``Ut(y)``  — measurement → spectral layout (entries where Σ = 0 that lie outside the
  measurement space are zero),
* ``U(z)``   — spectral layout → measurement (entries outside the measurement space ignored),
* ``singulars()`` — Σ as a tensor of shape ``x_shape``; 0 marks the null space.

so that ``A(x) == U(singulars() * Vt(x))``. ``y_dim`` is the number of independent entries of
one measurement (the row count of A).

``exact_pinv`` says whether ``pinv`` is the Moore–Penrose pseudo-inverse of the operator that
``A`` applies (to rounding; for conjugate gradients, to a converged dtype-aware tolerance) or a
regularised one (truncated spectrum, early-stopped iterations). A solver whose update is the
exact range–null-space split (DDNM, DeqIR, ΠGDM) warns once (:class:`InexactPinvWarning`) when it
is not. :func:`dmir.operators.check` measures the Penrose conditions.

Operators whose factorisation is expensive (the separable SVDs) compute it on first use, not at
construction (``_lazy_buffers`` / ``_build_lazy``): building an operator only validates and
stores its definition.
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from ..errors import ParameterError, ShapeError


def _check_tensor(t: torch.Tensor, shape: tuple, what: str, op: "LinearOperator") -> None:
    if not isinstance(t, torch.Tensor):
        raise ShapeError(f"{op.name}: {what} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != len(shape) + 1 or tuple(t.shape[1:]) != tuple(shape):
        raise ShapeError(
            f"{op.name}: {what} must have shape (B, {', '.join(map(str, shape))}), "
            f"got {tuple(t.shape)}"
        )
    if op._dtype_probe is not None and t.dtype != op._dtype_probe.dtype:
        raise ShapeError(
            f"{op.name}: {what} is {t.dtype} but the operator is {op._dtype_probe.dtype}; "
            f"convert one of them (e.g. op.to(torch.float64))"
        )


class InexactPinvWarning(UserWarning):
    """A solver that needs the exact range–null-space split got an operator whose A⁺ is not the
    Moore–Penrose pseudo-inverse (``op.exact_pinv`` is False)."""


def warn_inexact_pinv(op, method: str) -> None:
    """Warn (once per operator object) that ``method`` relies on an exact A⁺ that ``op`` lacks."""
    if getattr(op, "exact_pinv", True) or op.__dict__.get("_warned_inexact_pinv"):
        return
    op.__dict__["_warned_inexact_pinv"] = True
    warnings.warn(f"{method}: operator '{op.name}' has an inexact pseudo-inverse "
                  f"({op.pinv_note}); the range–null-space split A⁺y + (I − A⁺A)x is then "
                  f"only approximate (check it with dmir.operators.check)",
                  InexactPinvWarning, stacklevel=3)


def cg_tolerance(tol: float, dtype: torch.dtype) -> float:
    """A CG tolerance the dtype can reach: at least 100·eps (1.2e-5 in float32, 2.2e-14 in
    float64).

    Below that, CG in float32 keeps shrinking its recursive residual while the iterate has
    stopped improving, and the later iterations amplify rounding: with the former fixed 1e-8,
    pseudo-inverses of compositions in float32 were off by up to 1e10 (measured on all pairwise
    compositions of the built-in operators at 8×8; with this floor the worst is 2e-3)."""
    return max(float(tol), 100.0 * float(torch.finfo(dtype).eps))


class LinearOperator(nn.Module):
    """Base class: validation plus generic A / Aᵀ / A⁺ from the spectral protocol.

    Subclasses set ``x_shape``, ``y_shape``, ``y_dim`` and implement ``_A``, ``_At``, ``_pinv``
    and, if ``has_svd``, ``_Vt``, ``_V``, ``_Ut``, ``_U``, ``_singulars``. Where only the
    spectral protocol is implemented, ``_A``/``_At``/``_pinv`` default to it.
    """

    name: str = "operator"
    _probe: torch.Tensor      # a buffer: the operator's dtype and device
    has_svd: bool = False
    #: buffers (and attributes) computed by :meth:`_build_lazy` on first access
    _lazy_buffers: frozenset = frozenset()

    def __init__(self, x_shape, y_shape, y_dim: int | None = None):
        super().__init__()
        self.x_shape = tuple(int(s) for s in x_shape)
        self.y_shape = tuple(int(s) for s in y_shape)
        self.y_dim = int(y_dim) if y_dim is not None else math.prod(self.y_shape)
        # a 0-d buffer that follows .to(dtype/device); used to report dtype/device
        self.register_buffer("_probe", torch.zeros((), dtype=torch.float32), persistent=False)

    # ------------------------------------------------------------------ lazy factorisation
    def __getattr__(self, name):
        # reached only when normal lookup fails: a lazy buffer not built yet is built here
        if name in type(self)._lazy_buffers and self.__dict__.get("_lazy_pending"):
            self.__dict__["_lazy_pending"] = False
            try:
                tensors = self._build_lazy()
            except BaseException:
                self.__dict__["_lazy_pending"] = True
                raise
            ref = self._buffers["_probe"]
            for k, v in tensors.items():
                if isinstance(v, torch.Tensor):
                    v = v.to(device=ref.device,
                              dtype=ref.dtype if v.is_floating_point() else v.dtype)
                    self.register_buffer(k, v)
                else:
                    self.__dict__[k] = v
            return getattr(self, name)
        return super().__getattr__(name)

    def _defer(self) -> None:
        """Subclasses with ``_lazy_buffers`` call this in ``__init__``: build them on first use."""
        self.__dict__["_lazy_pending"] = True

    def _build_lazy(self) -> dict:  # pragma: no cover - per operator
        """name → value of every lazy buffer (float tensors computed in float32 on the CPU,
        converted to the operator's dtype/device here) or plain attribute."""
        raise NotImplementedError

    @property
    def built(self) -> bool:
        """Whether the operator's deferred factorisation (if any) has been computed."""
        return not self.__dict__.get("_lazy_pending", False)

    # ------------------------------------------------------------------ pseudo-inverse kind
    @property
    def exact_pinv(self) -> bool:
        """``pinv`` is the Moore–Penrose pseudo-inverse of the operator ``A`` applies (to
        rounding, or to a converged CG tolerance); False for a regularised inverse."""
        return True

    @property
    def pinv_note(self) -> str:
        """How ``pinv`` is computed, in words (what ``exact_pinv`` rests on)."""
        return "exact (closed form)"

    # ------------------------------------------------------------------ helpers
    @property
    def _dtype_probe(self):
        return self._probe

    @property
    def dtype(self) -> torch.dtype:
        return self._probe.dtype

    @property
    def device(self) -> torch.device:
        return self._probe.device

    @property
    def x_dim(self) -> int:
        return math.prod(self.x_shape)

    def extra_repr(self) -> str:
        return f"x_shape={self.x_shape}, y_shape={self.y_shape}, y_dim={self.y_dim}"

    # ------------------------------------------------------------------ public API
    def A(self, x: torch.Tensor) -> torch.Tensor:
        """y = A x.  x: (B, *x_shape) → (B, *y_shape)."""
        _check_tensor(x, self.x_shape, "x", self)
        return self._A(x)

    def At(self, y: torch.Tensor) -> torch.Tensor:
        """Aᵀ y.  y: (B, *y_shape) → (B, *x_shape)."""
        _check_tensor(y, self.y_shape, "y", self)
        return self._At(y)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """A⁺ y (Moore–Penrose).  y: (B, *y_shape) → (B, *x_shape)."""
        _check_tensor(y, self.y_shape, "y", self)
        return self._pinv(y)

    def forward(self, x):
        return self.A(x)

    def __matmul__(self, other):
        """``B @ A``: the composed operator x ↦ B(A x) (:class:`ComposedOperator`)."""
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return ComposedOperator(self, other)

    def project(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Range–null-space projection A⁺y + (I − A⁺A)x = x − A⁺(Ax − y) (DDNM Eq. 13)."""
        _check_tensor(x, self.x_shape, "x", self)
        _check_tensor(y, self.y_shape, "y", self)
        return self._project(x, y)

    def _project(self, x, y):
        # subclasses override this with a cheaper equivalent where they have one
        return x - self._pinv(self._A(x) - y)

    def _require_svd(self):
        if not self.has_svd:
            raise ParameterError(
                f"operator '{self.name}' has no exact SVD (spectral protocol); use a method "
                f"that needs only A, Aᵀ and A⁺"
            )

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        self._require_svd()
        _check_tensor(x, self.x_shape, "x", self)
        return self._Vt(x)

    def V(self, z: torch.Tensor) -> torch.Tensor:
        self._require_svd()
        _check_tensor(z, self.x_shape, "spectral z", self)
        return self._V(z)

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        self._require_svd()
        _check_tensor(y, self.y_shape, "y", self)
        return self._Ut(y)

    def U(self, z: torch.Tensor) -> torch.Tensor:
        self._require_svd()
        _check_tensor(z, self.x_shape, "spectral z", self)
        return self._U(z)

    def singulars(self) -> torch.Tensor:
        """Σ in the spectral layout, shape ``x_shape``; zeros mark the null space."""
        self._require_svd()
        return self._singulars()

    def singular_values(self) -> torch.Tensor:
        """All min(y_dim, x_dim) singular values of A, sorted descending (zeros included)."""
        self._require_svd()
        s = self._singulars().flatten().sort(descending=True).values
        return s[: min(self.y_dim, self.x_dim)]

    # ------------------------------------------------------------------ the SVD (if has_svd)
    def _Vt(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - per operator
        raise NotImplementedError

    def _V(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - per operator
        raise NotImplementedError

    def _Ut(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - per operator
        raise NotImplementedError

    def _U(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - per operator
        raise NotImplementedError

    def _singulars(self) -> torch.Tensor:  # pragma: no cover - per operator
        raise NotImplementedError

    # ------------------------------------------------------------------ defaults via the SVD
    def _A(self, x):
        return self._U(self._singulars() * self._Vt(x))

    def _At(self, y):
        return self._V(self._singulars() * self._Ut(y))

    def _pinv(self, y):
        return self._V(safe_inverse(self._singulars()) * self._Ut(y))


def safe_inverse(s: torch.Tensor) -> torch.Tensor:
    """1/s where s != 0, else 0 (the pseudo-inverse of a diagonal)."""
    nz = s != 0
    return torch.where(nz, 1.0 / torch.where(nz, s, torch.ones_like(s)), torch.zeros_like(s))


def _dot(a, b):
    return (a * b).flatten(1).sum(1).reshape(-1, *([1] * (a.dim() - 1)))


def cg_check_every(like: torch.Tensor) -> int:
    """How often a batched CG loop reads its stopping test back to the host: every iteration
    on the CPU (free there), every 8th on an accelerator (each read waits for the device).
    Converged elements are frozen, so the extra iterations change no value, only cost time."""
    return 1 if like.device.type == "cpu" else 8


def cg_pinv(A, At, y: torch.Tensor, iters: int = 100, tol: float = 1e-6,
            info: dict | None = None) -> torch.Tensor:
    """A⁺y by conjugate gradients on AᵀA x = Aᵀy from x = 0 (the minimum-norm solution).

    ``A`` and ``At`` are batched functions; every batch element stops on its own relative
    residual ‖r‖ ≤ tol ‖Aᵀy‖ (frozen once converged), so a batched call equals one call per
    element. At most ``iters`` iterations. ``info`` (a dict), if given, receives
    ``converged`` (every element reached ``tol``) and ``residual`` (the largest relative
    residual left)."""
    b = At(y)
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = _dot(r, r)
    stop = (tol ** 2) * rr
    every = cg_check_every(b)
    for k in range(int(iters)):
        active = rr > stop
        if k % every == 0 and not bool(active.any()):
            break
        Ap = At(A(p))
        pAp = _dot(p, Ap)
        ok = active & (pAp > 0)
        alpha = torch.where(ok, rr / torch.where(ok, pAp, torch.ones_like(pAp)),
                            torch.zeros_like(pAp))
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = _dot(r, r)
        beta = torch.where(ok, rr_new / torch.where(ok, rr, torch.ones_like(rr)),
                           torch.zeros_like(rr))
        p = torch.where(ok, r + beta * p, p)
        rr = torch.where(ok, rr_new, rr)
    if info is not None:
        rr0 = (stop / tol ** 2) if tol > 0 else _dot(b, b)
        info["converged"] = bool((rr <= stop).all())
        info["residual"] = float((rr / rr0.clamp_min(1e-300)).max().sqrt()) if rr.numel() else 0.0
    return x


class _CGPinv:
    """Mixin of the operators whose A⁺ is CG on the normal equations to a dtype-aware
    tolerance (composition, FunctionOperator): exact to that tolerance while CG converges; a
    call that stops at ``cg_iters`` first makes ``exact_pinv`` False and warns once."""

    cg_iters: int
    cg_tol: float

    @property
    def exact_pinv(self) -> bool:
        return not self.__dict__.get("_cg_unconverged", False)

    @property
    def pinv_note(self) -> str:
        note = (f"conjugate gradients on the normal equations, relative residual "
                f"max({self.cg_tol:g}, 100·eps), at most {self.cg_iters} iterations")
        left = self.__dict__.get("_cg_unconverged")
        return note + (f"; a call stopped at relative residual {left:.2g}" if left else "")

    def _cg(self, A, At, y):
        info: dict = {}
        tol = cg_tolerance(self.cg_tol, y.dtype)
        x = cg_pinv(A, At, y, self.cg_iters, tol, info)
        if not info["converged"] and not self.__dict__.get("_cg_unconverged"):
            self.__dict__["_cg_unconverged"] = info["residual"]
            warnings.warn(f"{self.name}: the conjugate-gradient pseudo-inverse stopped after "
                          f"{self.cg_iters} iterations at relative residual "
                          f"{info['residual']:.2g} (tolerance {tol:.2g}); A⁺ is inexact for "
                          f"this operator (raise cg_iters)", InexactPinvWarning, stacklevel=4)
        return x


class ComposedOperator(_CGPinv, LinearOperator):
    """``outer @ inner``: y = outer(inner(x)), Aᵀ = innerᵀ outerᵀ, A⁺ by conjugate gradients.
    Build it with ``B @ A``.

    The parts must share a dtype and device; the composition takes theirs (a composition of
    float64 parts takes float64 input). CG stops at the relative residual
    :func:`cg_tolerance` (``cg_tol``, at least 100·eps of the input's dtype) or after ``cg_iters``
    iterations: the minimum-norm solution, so ``exact_pinv`` is True to that tolerance (False,
    with a warning, once a call stops at ``cg_iters`` unconverged)."""

    def __init__(self, outer: LinearOperator, inner: LinearOperator, cg_iters: int = 200,
                 cg_tol: float = 1e-10):
        if not (isinstance(outer, LinearOperator) and isinstance(inner, LinearOperator)):
            raise ParameterError("only operators compose (B @ A with two LinearOperators)")
        if tuple(outer.x_shape) != tuple(inner.y_shape):
            raise ShapeError(f"cannot compose {outer.name} @ {inner.name}: {inner.name} gives "
                             f"{inner.y_shape}, {outer.name} takes {outer.x_shape}")
        if outer.dtype != inner.dtype or outer.device != inner.device:
            raise ParameterError(f"cannot compose {outer.name} ({outer.dtype}, {outer.device}) "
                                 f"@ {inner.name} ({inner.dtype}, {inner.device}): convert one "
                                 f"of them first (e.g. op.to(torch.float64))")
        super().__init__(inner.x_shape, outer.y_shape)
        self._probe = torch.zeros((), dtype=inner.dtype, device=inner.device)
        self.outer, self.inner = outer, inner
        self.name = f"{outer.name}@{inner.name}"
        self.cg_iters, self.cg_tol = int(cg_iters), float(cg_tol)

    def _A(self, x):
        return self.outer.A(self.inner.A(x))

    def _At(self, y):
        return self.inner.At(self.outer.At(y))

    def _pinv(self, y):
        return self._cg(self._A, self._At, y)
