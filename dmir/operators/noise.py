"""Measurement noise models.

Users give Gaussian noise levels σ_y in [0, 1] *pixel units* (the DDRM/DDNM command-line
convention). Inside dmir images live in [-1, 1], where the same noise has standard deviation
2·σ_y; :func:`sigma_to_model` is the one place that converts. Presets that follow a paper's
[-1, 1] convention (DPS, DCDP) convert with :func:`sigma_from_model`.
"""
from __future__ import annotations

import torch

from ..rng import randn
from ..errors import ParameterError


def sigma_to_model(sigma_pixel: float) -> float:
    """σ in [0, 1] pixel units → σ in the [-1, 1] model domain (×2)."""
    return 2.0 * float(sigma_pixel)


def sigma_from_model(sigma_model: float) -> float:
    """σ in the [-1, 1] model domain → [0, 1] pixel units (÷2)."""
    return 0.5 * float(sigma_model)


class GaussianNoise:
    """y = A x + n, n ~ N(0, (2σ)² I) in the model domain; σ in [0, 1] pixel units."""

    def __init__(self, sigma: float = 0.0):
        sigma = float(sigma)
        if not (0.0 <= sigma <= 1.0) or sigma != sigma:
            raise ParameterError(f"sigma_y must be in [0, 1] (pixel units), got {sigma}")
        self.sigma = sigma
        self.sigma_model = sigma_to_model(sigma)

    def __call__(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.sigma_model == 0:
            return y
        n = randn(y.shape, generator, y.dtype, y.device)
        return y + self.sigma_model * n

    def __repr__(self):
        return f"GaussianNoise(sigma={self.sigma})"


class PoissonNoise:
    """Shot noise: with y01 = (y + 1)/2 the measurement in [0, 1] units,
    y01_noisy = Poisson(peak · y01) / peak (negative y01 clipped to 0), returned in [-1, 1].

    The noise standard deviation at intensity v is √(v/peak) pixel units; for solvers that
    need a Gaussian level, :attr:`sigma_equivalent` gives it at mid-gray (v = 0.5).
    """

    def __init__(self, peak: float):
        peak = float(peak)
        if not (peak > 0) or peak == float("inf"):
            raise ParameterError(f"Poisson peak must be a positive finite number, got {peak}")
        self.peak = peak

    @property
    def sigma_equivalent(self) -> float:
        return (0.5 / self.peak) ** 0.5

    def __call__(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        rate = ((y + 1) / 2).clamp_min(0) * self.peak
        where = rate.device if generator is None else torch.device(generator.device)
        # drawn on the generator's device, then moved (as dmir.rng.randn does)
        counts = torch.poisson(rate.to(where), generator=generator).to(rate.device)
        return 2 * counts / self.peak - 1

    def __repr__(self):
        return f"PoissonNoise(peak={self.peak})"
