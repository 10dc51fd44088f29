"""DDRM (Kawar, Elad, Ermon & Song, "Denoising Diffusion Restoration Models", NeurIPS 2022), as in
the reference code (bahjat-kawar/ddrm, ``functions/denoising.py: efficient_generalized_steps``).

DDRM works in the spectral domain of A = U Σ Vᵀ and in variance-exploding units: with
x̄ = Vᵀ(x_t / √ᾱ_t), σ_t = √(1-ᾱ_t)/√ᾱ_t, x̄0 = Vᵀ x̂0, ε̄ = Vᵀ ε and, on the nonzero singular
values s_i, ȳ_i = [Uᵀy]_i / s_i (the measurement as a noisy copy of x̄_i with noise σ_y/s_i).
One step t → s (the paper's Eq. 8 in the reference's DDIM-like form: η = etaA = etaC,
η_b = etaB; σ = σ_s; z fresh white noise; σ_y in model units):

    null space (s_i = 0), and the boundary s_i σ = σ_y (see below):                    (8a)
        x̄'_i = x̄0_i + σ √(1-η²) ε̄_i + σ η z_i          [ε̄ = (x̄_t - x̄0)/σ_t of the paper]
    measurement noisier than the diffusion (s_i σ < σ_y):                               (8b)
        x̄'_i = x̄0_i + σ √(1-η²) (ȳ_i - x̄0_i) s_i/σ_y + σ η z_i
    diffusion noisier than the measurement (s_i σ > σ_y):                               (8c)
        x̄'_i = η_b ȳ_i + (1-η_b) x̄0_i + √(σ² - η_b² σ_y²/s_i²) z_i
    x_s = √ᾱ_s · V x̄'

The paper puts σ = σ_y/s_i into (8c); the code's two strict tests send it to (8a). We follow the
code. It matters at the last step of noise-free DDRM, σ = σ_y = 0 (see below).

x_t enters only through the network (x̂0 and ε): the reference also forms Vᵀ(x_t/√ᾱ_t) but
never uses it. Initialisation (the paper's Eq. 7, reference form): with the initial white
noise z, σ_T the VE level of the first timestep and on s_i σ_T > σ_y

    x̄_T,i = ȳ_i + √(σ_T² - σ_y²/s_i²) z_i,      elsewhere x̄_T,i = σ_T z_i,
    x_T = V x̄_T / σ_T

(dividing by σ_T, not multiplying by √ᾱ_T, scales x_T by 1/√(1-ᾱ_T) ≈ 1 + 10⁻⁴ relative to the
paper's formula — reproduced as published). The last step goes to t = -1 (σ = 0), where every
coefficient falls into (8a) (σ_y = 0) or (8b) (σ_y > 0), both x̄' = x̄0: the output is the
network's x̂0 of the last step, exactly as the reference (whose saved ``xs[-1]`` equals
``x0_preds[-1]``). Unlike DDNM, noise-free DDRM is therefore consistent with y only up to the
denoising of the last step (‖A x̂ - y‖ of the order of s_i σ at the smallest timestep, ~1e-2
per coefficient), not exactly.

Timesteps: the reference runs ``seq = range(0, 1000, 1000 // T)`` with ᾱ taken at index t + 1 of
the cumulative product with a prepended zero β, i.e. ᾱ_t of the model with t = -1 ↦ 1 — the same
numbers as our uniform :func:`~dmir.solvers.schedules.make_plan` and :meth:`Sampler.alpha_bar`
whenever T divides the number of training steps (20, the default, does). For other T the
reference ``range`` has ⌈1000/⌊1000/T⌋⌉ > T entries; we keep exactly T.

Deviations, on purpose: singular values equal to 0 are always the null space (the reference's
``(s σ < σ_y)`` test would put zeros of its singular list into case (8b) when σ_y > 0 and
divide by them); every draw uses the sampler's generator (one z per step, split over the three
disjoint cases instead of three separate draws); ᾱ in float64 (the reference: float32).
"""
from __future__ import annotations

import torch

from ..errors import ParameterError
from ..operators.base import safe_inverse
from ..types import SVDOperator
from .base import Sampler, _as_unit, require_linear


def ddrm_step(x0, eps, op, state, a_next: float, eta: float, eta_b: float, sigma_y: float, z):
    """One DDRM update t → s in the spectral domain (module docstring, Eq. 8a–c).

    ``state``: ``s`` (Σ), ``s_inv`` (1/Σ, 0 on the null space), ``ut_y`` (Uᵀy), ``ybar``
    (Σ⁺Uᵀy). ``a_next`` = ᾱ_s; ``sigma_y`` in model units; ``z`` white noise in the spectral
    layout, or None when σ_s = 0 (the last step).
    """
    s, s_inv, ut_y, ybar = state["s"], state["s_inv"], state["ut_y"], state["ybar"]
    sig = ((1.0 - a_next) / a_next) ** 0.5                  # σ_s, variance-exploding units
    keep = (1.0 - eta ** 2) ** 0.5                         # √(1-η²) = σ̃/σ
    v0 = op.Vt(x0)
    rng = s > 0
    before = rng & (s * sig > sigma_y)                     # (8c): diffusion noisier than y
    after = rng & (s * sig < sigma_y)                      # (8b): y noisier than the diffusion

    # null space (and the s σ = σ_y boundary): DDIM with η                      (Eq. 8a)
    out = v0 + (sig * keep) * op.Vt(eps) if keep > 0 and sig > 0 else v0.clone()
    if z is not None and eta > 0:
        out = out + (sig * eta) * z
    # y noisier: step towards ȳ along the DDIM direction                        (Eq. 8b)
    if sigma_y > 0:
        case1 = v0 + (sig * keep / sigma_y) * (ut_y - s * v0)
        if z is not None and eta > 0:
            case1 = case1 + (sig * eta) * z
        out = torch.where(after, case1, out)
    # diffusion noisier: move to ȳ (η_b), noise tops the variance up to σ²      (Eq. 8c)
    case2 = eta_b * ybar + (1.0 - eta_b) * v0
    if z is not None:
        std2 = (sig ** 2 - (sigma_y * eta_b) ** 2 * s_inv ** 2).clamp_min(0).sqrt()
        case2 = case2 + std2 * z
    out = torch.where(before, case2, out)
    return a_next ** 0.5 * op.V(out)


class DDRM(Sampler):
    """DDRM for operators with an exact SVD (the spectral protocol).

    Args (beyond :class:`~dmir.solvers.base.Sampler`): ``eta`` (η = etaA = etaC of the reference,
    default 0.85), ``eta_b`` (η_b = etaB, default 1.0). Default 20 steps, as in the paper.
    ``x_T`` given to :meth:`sample` is the initial *white noise* z; DDRM's own initialisation
    (module docstring) turns it into x_T.
    """

    method = "ddrm"

    op: SVDOperator          # DDRM works in the operator's SVD basis

    def __init__(self, model, op, steps=20, eta=0.85, sigma_y=0.0, eta_b: float = 1.0, **kw):
        require_linear(op, self.method)
        if not getattr(op, "has_svd", False):
            raise ParameterError(
                f"ddrm needs an operator with an exact SVD (the spectral protocol); operator "
                f"'{getattr(op, 'name', type(op).__name__)}' has none (e.g. the FFT 'deblur' "
                f"with a non-separable kernel). Use 'ddnm' (DDNM+ simplified rule), 'pigdm' or "
                f"'dps' instead, or give 'deblur' a separable kernel")
        super().__init__(model, op, steps=steps, eta=eta, sigma_y=sigma_y, **kw)
        self.eta_b = _as_unit("eta_b", eta_b)

    def prepare(self, y):
        s = self.op.singulars().to(device=y.device, dtype=y.dtype)
        s_inv = safe_inverse(s)
        ut_y = self.op.Ut(y)
        return {"s": s, "s_inv": s_inv, "ut_y": ut_y, "ybar": ut_y * s_inv}

    def initial_state(self, z: torch.Tensor, y: torch.Tensor, state: dict) -> torch.Tensor:
        """x_T from white noise z: the reference's spectral initialisation p(x_T | y)."""
        a = self.alpha_bar(self.plan.timestep(self.plan.walk[0]))
        sig_T = ((1.0 - a) / a) ** 0.5
        s, s_inv, ybar = state["s"], state["s_inv"], state["ybar"]
        large = s * sig_T > self.sigma_model
        rem = torch.where(large, (sig_T ** 2 - self.sigma_model ** 2 * s_inv ** 2).clamp_min(0)
                          .sqrt(), torch.full_like(s, sig_T))
        init = torch.where(large, ybar, torch.zeros_like(ybar)) + rem * z
        return self.op.V(init) / sig_T

    def update(self, x_t, x0, eps, t, t_next, y, state, generator):
        a_next = self.alpha_bar(t_next)
        z = self.noise_like(x0, generator) if a_next < 1.0 else None
        return ddrm_step(x0, eps, self.op, state, a_next, self.eta, self.eta_b,
                         self.sigma_model, z)
