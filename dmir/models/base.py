"""The model protocol: a noise predictor ε(x_t, t) and the discrete schedule it was trained with.

Conventions (docs/architecture.md): images in [-1, 1], shape (B, C, H, W); timesteps are integer indices
0..T-1 of the model's own schedule; ``t = -1`` means the clean image (ᾱ = 1).

    x_t = √ᾱ_t · x_0 + √(1 - ᾱ_t) · ε,        x̂_0(x_t, t) = (x_t - √(1-ᾱ_t) ε(x_t, t)) / √ᾱ_t
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ParameterError


def linear_betas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM linear schedule β_t = linspace(β_start, β_end, T) (float64)."""
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_betas(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Improved-DDPM cosine schedule (Nichol & Dhariwal 2021, Eq. 17), β clipped at 0.999."""
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    b = [min(1 - f(i + 1) / f(i), max_beta) for i in range(T)]
    return torch.tensor(b, dtype=torch.float64)


def make_schedule(schedule="linear", T: int = 1000) -> torch.Tensor:
    """ᾱ_t (float64, length T) from a name ('linear', 'cosine') or a tensor of betas."""
    if isinstance(T, bool) or not _whole(T) or int(T) < 1:
        raise ParameterError(f"T (the number of timesteps) must be a positive integer, got "
                             f"{T!r}")
    T = int(T)
    if isinstance(schedule, torch.Tensor):
        betas = schedule.to(torch.float64)
    elif schedule == "linear":
        betas = linear_betas(T)
    elif schedule == "cosine":
        betas = cosine_betas(T)
    else:
        raise ParameterError(f"schedule must be 'linear', 'cosine' or a tensor of betas, "
                             f"got {schedule!r}")
    if betas.dim() != 1 or betas.numel() == 0 or not ((betas > 0) & (betas < 1)).all():
        raise ParameterError("betas must be a non-empty 1-D tensor with values in (0, 1)")
    return torch.cumprod(1 - betas, 0)


def check_alphas_cumprod(a) -> torch.Tensor:
    """ᾱ as float64, checked: a non-empty 1-D tensor of values in (0, 1], non-increasing (NaN,
    ≤ 0, > 1 or a rising entry is a :class:`ParameterError` naming the first bad index)."""
    try:
        a = torch.as_tensor(a).detach().to(torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ParameterError(f"alphas_cumprod must be a 1-D tensor of numbers, got "
                             f"{type(a).__name__}") from None
    if a.dim() != 1 or a.numel() == 0:
        raise ParameterError(f"alphas_cumprod must be a non-empty 1-D tensor, got shape "
                             f"{tuple(a.shape)}")
    ok = (a > 0) & (a <= 1)                       # False for NaN
    if not ok.all():
        i = int((~ok).nonzero()[0])
        raise ParameterError(f"alphas_cumprod must lie in (0, 1], got {float(a[i])} at index {i}")
    if a.numel() > 1 and (a[1:] > a[:-1]).any():
        i = int((a[1:] > a[:-1]).nonzero()[0]) + 1
        raise ParameterError(f"alphas_cumprod must be non-increasing (ᾱ_t falls as noise is "
                             f"added), but ᾱ[{i}] = {float(a[i]):.6g} > ᾱ[{i - 1}] = "
                             f"{float(a[i - 1]):.6g}")
    return a


def _whole(v) -> bool:
    try:
        return float(v) == int(v)
    except (TypeError, ValueError, OverflowError):
        return False


class DiffusionModel(nn.Module):
    """Base class of every prior: subclasses implement :meth:`eps`.

    ``alphas_cumprod``: float64 tensor (T,), ᾱ_t of the training schedule.
    """

    alphas_cumprod: torch.Tensor

    def __init__(self, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.register_buffer("alphas_cumprod", check_alphas_cumprod(alphas_cumprod),
                             persistent=False)

    @property
    def num_timesteps(self) -> int:
        return self.alphas_cumprod.shape[0]

    def check_timesteps(self, t) -> None:
        """Raise :class:`ParameterError` unless t (an int or a tensor of ints) lies in -1..T-1
        (an index past the schedule used to raise IndexError, and t < -1 wrapped around)."""
        T = self.num_timesteps
        if isinstance(t, torch.Tensor):
            if t.numel() == 0:
                return
            if t.is_floating_point() and not bool((t == t.round()).all()):
                raise ParameterError(f"timesteps must be integers in -1..{T - 1}, got non-integer "
                                     f"values")
            lo, hi = float(t.min()), float(t.max())
        else:
            if isinstance(t, bool) or not _whole(t):
                raise ParameterError(f"timestep must be an integer in -1..{T - 1}, got {t!r}")
            lo = hi = float(t)
        if lo < -1 or hi > T - 1:
            bad = int(lo if lo < -1 else hi)
            raise ParameterError(f"timestep {bad} is outside the model's schedule: t must be in "
                                 f"-1..{T - 1} (-1 = the clean image)")

    def alpha_bar(self, t) -> torch.Tensor:
        """ᾱ_t (float64) for integer t in -1..T-1; t = -1 gives 1 (others: ParameterError)."""
        self.check_timesteps(t)
        t = torch.as_tensor(t, device=self.alphas_cumprod.device).long()
        padded = torch.cat([self.alphas_cumprod.new_ones(1), self.alphas_cumprod])
        return padded[t + 1]

    def eps(self, x_t: torch.Tensor, t) -> torch.Tensor:  # pragma: no cover - abstract
        """Predicted noise ε(x_t, t); x_t (B, C, H, W) in model units, t int or (B,) ints."""
        raise NotImplementedError

    def x0(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """Tweedie/DDIM estimate x̂_0 = (x_t - √(1-ᾱ_t) ε) / √ᾱ_t."""
        a = _bcast(self.alpha_bar(t), x_t)
        return (x_t - (1 - a).sqrt() * self.eps(x_t, t)) / a.sqrt()

    def forward(self, x_t, t):
        return self.eps(x_t, t)


def _bcast(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Scalar or (B,) float64 → broadcastable over ``like``, in its dtype."""
    a = a.to(like.dtype)
    if a.dim() == 0:
        return a
    return a.reshape(-1, *([1] * (like.dim() - 1)))
