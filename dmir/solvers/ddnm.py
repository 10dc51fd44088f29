"""DDNM and DDNM+ (Wang, Yu & Zhang, "Zero-Shot Image Restoration Using Denoising Diffusion
Null-Space Model", ICLR 2023), as in the reference code (wyhuai/DDNM).

Noise-free (σ_y = 0), per step t → s (Eqs. 12–13, DDIM-style re-noising as in the code):

    x̂0  = (x_t - √(1-ᾱ_t) ε) / √ᾱ_t                               (Eq. 12)
    x̂0' = A⁺y + (I - A⁺A) x̂0                                        (Eq. 13)
    x_s  = √ᾱ_s x̂0' + σ_s (η z + √(1-η²) ε),  σ_s = √(1-ᾱ_s)

Noisy (DDNM+, σ_y > 0), operators with an SVD — per singular value σ_i of A, with a = √ᾱ_s
(Eqs. 17–19, and the η-split of the reference code so the total noise variance is σ_s²):

    x̂0' = x̂0 - V Λ Vᵀ A⁺(A x̂0 - y)                                (Eq. 17)
    σ_s ≥ a σ_y/σ_i:  λ_i = 1,                          noise_i = √(σ_s² - a²σ_y²/σ_i²) z_i
    σ_s < a σ_y/σ_i:  λ_i = σ_i σ_s √(1-η²)/(a σ_y),     noise_i = σ_s η z_i
    σ_i = 0 (null):   λ_i = 1,                          noise_i = σ_s (η z_i + √(1-η²) [Vᵀε]_i)
    x_s = a x̂0' + V noise                                              (Eq. 19)

Deviation from the reference, on purpose: the reference feeds ε to the null-space noise
*without* Vᵀ (a layout mix-up; harmless only for V = I); we transform it. The ``>=`` boundary
case (σ_s = aσ_y/σ_i exactly) uses λ = 1 with the range noise, the limit of both branches.

Operators without an SVD use the same rule with all nonzero singular values taken as 1
(the "simplified DDNM+", exact when A has orthonormal rows), applied through P = A⁺A. The
reference's simplified variant uses ᾱ where √ᾱ belongs and scales the noise twice; we do not.
"""
from __future__ import annotations

import torch

from ..operators.base import safe_inverse
from .base import Sampler


def ddnm_step(x0, eps, y, op, a_next: float, eta: float, z):
    """Noise-free DDNM update (Eq. 13 + DDIM re-noising). ``z`` white noise or None (η = 0)."""
    return ddim_renoise(op.project(x0, y), eps, a_next, eta, z)  # Eq. 13


def ddim_renoise(x0_hat, eps, a_next: float, eta: float, z):
    """The re-noising of the reference code: √ᾱ_s x̂0' + σ_s (η z + √(1-η²) ε)."""
    sigma = (1 - a_next) ** 0.5
    noise = (1 - eta ** 2) ** 0.5 * eps
    if z is not None:
        noise = noise + eta * z
    return a_next ** 0.5 * x0_hat + sigma * noise


def ddnm_plus_svd_step(x0, eps, op, state, a_next: float, eta: float, sigma_y: float, z):
    """DDNM+ update in the spectral domain of A = U Σ Vᵀ (Eqs. 17–19); σ_y in model units."""
    s, s_inv, ut_y = state["s"], state["s_inv"], state["ut_y"]
    a, sig = a_next ** 0.5, (1 - a_next) ** 0.5
    rng = s > 0
    zx = op.Vt(x0)
    r = torch.where(rng, zx - ut_y * s_inv, torch.zeros_like(zx))   # Vᵀ A⁺(A x̂0 - y)
    # per-singular-value thresholds: aσ_y/σ_i (∞ on the null space)
    thr = a * sigma_y * s_inv
    strong = rng & (sig < thr)                     # measurement noisier than the diffusion
    lam = torch.where(strong, s * sig * (1 - eta ** 2) ** 0.5 / max(a * sigma_y, 1e-30),
                      torch.ones_like(s))
    d1 = torch.where(rng & (sig >= thr),
                     (sig ** 2 - thr ** 2).clamp_min(0).sqrt(), torch.full_like(s, sig * eta))
    d2 = torch.where(rng, torch.zeros_like(s), torch.full_like(s, sig * (1 - eta ** 2) ** 0.5))
    spec = -a * lam * r + d2 * op.Vt(eps)
    if z is not None:
        spec = spec + d1 * z
    return a * x0 + op.V(spec)


def ddnm_plus_simple_step(x0, eps, y, op, a_next: float, eta: float, sigma_y: float, z):
    """DDNM+ for operators without an SVD: the σ_i = 1 rule through P = A⁺A."""
    a, sig = a_next ** 0.5, (1 - a_next) ** 0.5
    if sig >= a * sigma_y:
        lam, d_range, d2_range = 1.0, (sig ** 2 - (a * sigma_y) ** 2) ** 0.5, 0.0
    else:
        lam, d_range, d2_range = sig * (1 - eta ** 2) ** 0.5 / (a * sigma_y), sig * eta, 0.0
    x0_hat = x0 - lam * op.pinv(op.A(x0) - y)                       # Eq. 17
    null_noise = sig * (1 - eta ** 2) ** 0.5 * eps
    if z is not None:
        null_noise = null_noise + sig * eta * z
    range_noise = d_range * z if z is not None else torch.zeros_like(x0)
    range_noise = range_noise + d2_range * eps
    P = lambda v: op.pinv(op.A(v))  # noqa: E731
    noise = P(range_noise) + null_noise - P(null_noise)
    return a * x0_hat + noise


class DDNM(Sampler):
    """DDNM (σ_y = 0) / DDNM+ (σ_y > 0). With ``equs`` it is EquS; with the quadratic
    schedule as well, EquS+. Unlike the EquS reference code, EquS with σ_y > 0 runs the DDNM+
    update (the reference silently falls back to the noise-free projection).

    ``svd``: for σ_y > 0, use the per-singular-value rules when the operator has an SVD
    (default True); False forces the simplified rule.
    """

    method = "ddnm"

    needs_exact_pinv = True

    def __init__(self, model, op, steps=100, eta=0.85, sigma_y=0.0, svd: bool = True, **kw):
        super().__init__(model, op, steps=steps, eta=eta, sigma_y=sigma_y, **kw)
        self.use_svd = bool(svd) and op.has_svd

    def prepare(self, y):
        if self.sigma_model > 0 and self.use_svd:
            s = self.op.singulars().to(y.dtype)
            return {"s": s, "s_inv": safe_inverse(s), "ut_y": self.op.Ut(y)}
        return {}

    def update(self, x_t, x0, eps, t, t_next, y, state, generator):
        a_next = self.alpha_bar(t_next)
        z = self.noise_like(x0, generator) if self.eta > 0 else None
        if self.sigma_model == 0:
            return ddnm_step(x0, eps, y, self.op, a_next, self.eta, z)
        if self.use_svd:
            return ddnm_plus_svd_step(x0, eps, self.op, state, a_next, self.eta,
                                      self.sigma_model, z)
        return ddnm_plus_simple_step(x0, eps, y, self.op, a_next, self.eta, self.sigma_model, z)
