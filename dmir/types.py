"""What a prior and an operator must provide (``Protocol``s), and the fixed option strings.

Anything with these attributes works with the solvers — a subclass of
:class:`dmir.models.DiffusionModel` / :class:`dmir.operators.LinearOperator` is not required.
The protocols are ``runtime_checkable`` (``isinstance(obj, Prior)`` checks the names, not the
signatures); a type checker checks them statically.
"""
from __future__ import annotations

from typing import Callable, Dict, Literal, Protocol, runtime_checkable

import torch

__all__ = ["Prior", "Operator", "SVDOperator", "Solver", "StepCallback", "Schedule", "EqusGroup", "LpipsNet",
           "LpipsInputRange", "FidInputScale", "CropMode", "Reduction"]


@runtime_checkable
class Prior(Protocol):
    """A diffusion prior: ε(x_t, t) on a discrete variance-preserving schedule ᾱ_t."""

    #: ᾱ_t for t = 0 … T-1, shape (T,)
    alphas_cumprod: torch.Tensor

    @property
    def num_timesteps(self) -> int: ...

    def eps(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """The predicted noise for x_t (B, C, H, W) at integer timestep(s) t."""
        ...


@runtime_checkable
class Operator(Protocol):
    """A linear degradation y = A x on batched tensors (B, *x_shape) → (B, *y_shape)."""

    name: str
    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]

    def A(self, x: torch.Tensor) -> torch.Tensor: ...

    def At(self, y: torch.Tensor) -> torch.Tensor: ...

    def pinv(self, y: torch.Tensor) -> torch.Tensor: ...

    def project(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """A⁺y + (I − A⁺A) x."""
        ...


@runtime_checkable
class SVDOperator(Operator, Protocol):
    """An operator with an exact SVD A = U Σ Vᵀ (what DDRM and the spectral samplers need)."""

    def Vt(self, x: torch.Tensor) -> torch.Tensor: ...

    def V(self, z: torch.Tensor) -> torch.Tensor: ...

    def Ut(self, y: torch.Tensor) -> torch.Tensor: ...

    def U(self, z: torch.Tensor) -> torch.Tensor: ...


#: ``callback(i, t, tensors)`` after each denoising step (``x_t``, ``x0``, ``x_next``)
StepCallback = Callable[[int, int, Dict[str, torch.Tensor]], object]


@runtime_checkable
class Solver(Protocol):
    """What :func:`dmir.solvers.build` returns: a sampler of x given y = A x + n."""

    #: the number of denoising steps and the stochasticity η
    steps: int
    eta: float

    def sample(self, y: torch.Tensor, x_T: torch.Tensor | None = None,
               generator: torch.Generator | None = None,
               progress: Callable[[int, int], None] | None = None,
               callback: StepCallback | None = None) -> torch.Tensor:
        """x (B, C, H, W) in the model domain for the measurements y (B, *y_shape)."""
        ...


#: timestep schedules of :func:`dmir.solvers.make_plan`
Schedule = Literal["uniform", "quadratic", "tas", "diffpir_quad"]
#: EquS transformation groups (:data:`dmir.solvers.EQUS_GROUPS`)
EqusGroup = Literal["hflip", "vflip", "rot90", "shift", "random"]
#: LPIPS trunks and input ranges (:mod:`dmir.metrics.lpips`)
LpipsNet = Literal["alex", "vgg"]
LpipsInputRange = Literal["unit", "model", "equs"]
#: FID input scalings (:mod:`dmir.metrics.fid`)
FidInputScale = Literal["pytorch-fid", "tf"]
#: dataset crop modes (:data:`dmir.data.CROP_MODES`)
CropMode = Literal["center", "adm", "resize", "none"]
#: metric reductions
Reduction = Literal["mean", "none"]
