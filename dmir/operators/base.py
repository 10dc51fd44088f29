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
"""
from __future__ import annotations

import math

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


class LinearOperator(nn.Module):
    """Base class: validation plus generic A / Aᵀ / A⁺ from the spectral protocol.

    Subclasses set ``x_shape``, ``y_shape``, ``y_dim`` and implement ``_A``, ``_At``, ``_pinv``
    and, if ``has_svd``, ``_Vt``, ``_V``, ``_Ut``, ``_U``, ``_singulars``. Where only the
    spectral protocol is implemented, ``_A``/``_At``/``_pinv`` default to it.
    """

    name: str = "operator"
    _probe: torch.Tensor      # a buffer: the operator's dtype and device
    has_svd: bool = False

    def __init__(self, x_shape, y_shape, y_dim: int | None = None):
        super().__init__()
        self.x_shape = tuple(int(s) for s in x_shape)
        self.y_shape = tuple(int(s) for s in y_shape)
        self.y_dim = int(y_dim) if y_dim is not None else math.prod(self.y_shape)
        # a 0-d buffer that follows .to(dtype/device); used to report dtype/device
        self.register_buffer("_probe", torch.zeros((), dtype=torch.float32), persistent=False)

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
