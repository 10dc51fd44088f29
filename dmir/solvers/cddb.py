"""CDDB as a baseline of the EquS comparison (after Chung, Kim & Ye, "Direct Diffusion Bridge
using Data Consistency for Inverse Problems", NeurIPS 2023).

The original CDDB (HJ-harry/CDDB, ``Diffusion.dds_sampling``) runs on a *bridge* model (I2SB)
trained per degradation: at every step it corrects the clean estimate by one gradient step on the
data fidelity, ``x̂0' = x̂0 - step · ∇_{x̂0} ‖A x̂0 - y‖²`` (applied to x_{t-1} through the
posterior mean's x̂0 coefficient, which is the same thing), with ``--step-size 1.0`` by default.

Unconditional-prior methods (EquS's table lists CDDB next to DDNM, DDRM, DPS, ΠGDM) have no
bridge model, so the comparison runs the same consistency step inside the DDNM sampler: the
range–null-space projection of DDNM (Eq. 13) is replaced by one gradient step with Aᵀ, and the
re-noising is DDNM's (reference-code DDIM form with η):

    x̂0  = (x_t - √(1-ᾱ_t) ε) / √ᾱ_t                                   (DDNM Eq. 12)
    x̂0' = x̂0 - step · Aᵀ(A x̂0 - y)                                    (CDDB data consistency)
    x_s  = √ᾱ_s x̂0' + √(1-ᾱ_s) (η z + √(1-η²) ε)                      (DDNM re-noising)

``step`` here multiplies Aᵀ(Ax̂0 - y) = ½∇‖Ax̂0 - y‖², so CDDB-code step size s is our 2s.
Verified in the CDDB release (HJ-harry/CDDB, ``i2sb/diffusion.py`` ``dds_sampling``, called by
``cddb_sampling``): ``residual_norm = ‖A x̂0 − y‖²`` (squared, not halved), its gradient with
respect to x̂0, ``xt − mu_x0 · step_size · grad`` with ``--step-size 1.0`` by default. So the
release's rule is ``step_size=2`` here (:data:`dmir.bench.presets.CDDB_RELEASE`, the
``equs-table1`` variant row "CDDB (release step 2)"). The public FouierL/EquS repository contains
only the DDNM-family samplers, not its CDDB baseline; its Table 1 has CDDB = DDNM (±0.01 dB) on
inpainting and CS, where step 2 reflects the range component (A Aᵀ = I) and step 1 is DDNM's
projection. Measured (docs/presets.md, "CDDB's step in equs-table1"): step 1 reproduces the
table's pattern and step 2 does not, so ``equs-table1`` runs ``step_size=1``
(:data:`dmir.bench.presets.CDDB_TABLE`).

Why it coincides with DDNM for operators with orthonormal rows: if A Aᵀ = I then A⁺ = Aᵀ(AAᵀ)⁻¹
= Aᵀ, so with step 1

    x̂0 - Aᵀ(A x̂0 - y) = Aᵀy + (I - AᵀA) x̂0 = A⁺y + (I - A⁺A) x̂0,

DDNM's Eq. 13 exactly. This holds for inpainting (A selects pixels), cs_walshhadamard (rows of
an orthonormal transform) and denoising. More generally, if A Aᵀ = c I then A⁺ = Aᵀ/c and CDDB
with step = 1/c is DDNM; with step 1 it under- (c < 1) or over- (c > 1) corrects: for
sr_averagepooling ×s, A Aᵀ = I/s² (step 1 moves the block means only 1/s² of the way to y);
for colorization with weights w, A Aᵀ = ‖w‖² I (≈ 1/3 for the protocol weights).

Step size: the default ``step_size="auto"`` is the Landweber step 1/‖A‖₂² (one over the largest
eigenvalue of A Aᵀ: from the operator's singular values, or 50 power iterations on AᵀA for
operators without an SVD). It equals 1 for orthonormal rows (so CDDB is DDNM there, as above),
s² for average pooling ×s (DDNM again), and 16 for the protocol bicubic ×4 (σ_max = 1/4), where a
fixed step 1 corrects only 1/16 of the range-space residual per step and leaves the result
below A⁺y. ``step_size=1.0`` gives the fixed-step form, ``step_size=2.0`` the CDDB release's.

Why 'auto' is the user default: it is the largest step that never over-corrects on any
operator (a Landweber step), it makes the update scale-free (the same result for A and cA),
and it coincides with DDNM's exact projection where A Aᵀ = cI. The release's step 2 is tuned
for its bridge models and the operators it ships; with an unconditional prior it under-corrects
badly where ‖A‖ is small (×4 bicubic: 1/8 of the residual per step) and reflects instead of
projecting where A Aᵀ = I (inpainting, CS). ``equs-table1`` uses step 1 (see above).

Noise: the step does not depend on σ_y (CDDB has no noise-aware variant); with σ_y > 0 the same
update runs (unlike DDNM+, which shrinks the correction).
"""
from __future__ import annotations

import math

import torch

from ..errors import ParameterError
from .base import Sampler
from .ddnm import ddim_renoise


def operator_norm_sq(op, iters: int = 50) -> float:
    """‖A‖₂² = σ_max(A)²: from the singular values, else power iteration on AᵀA (Rayleigh
    quotient; converges from below, slowly when the top eigenvalues cluster, as for blurs)."""
    if op.has_svd:
        return float(op.singulars().max()) ** 2
    ref = next((b for b in op.buffers() if b.is_floating_point()), torch.zeros(()))
    g = torch.Generator().manual_seed(0)
    v = torch.randn((1, *op.x_shape), generator=g).to(device=ref.device, dtype=ref.dtype)
    v = v / v.flatten().norm()
    lam = 0.0
    with torch.no_grad():
        for _ in range(iters):
            w = op.At(op.A(v))
            lam = float((w * v).sum())                       # v has unit norm
            v = w / max(float(w.flatten().norm()), 1e-30)
    return lam


def cddb_step(x0, eps, y, op, step: float, a_next: float, eta: float, z):
    """One CDDB-in-DDNM update: gradient data consistency, then DDNM's re-noising."""
    x0_hat = x0 - step * op.At(op.A(x0) - y)          # x̂0 - step·½∇‖A x̂0 - y‖²
    return ddim_renoise(x0_hat, eps, a_next, eta, z)


class CDDB(Sampler):
    """CDDB data consistency (one Aᵀ gradient step) in the DDNM sampler.

    Args:
        step_size: multiplier of Aᵀ(A x̂0 - y): a number > 0, or ``"auto"`` (default) for
            1/‖A‖₂² (equal to DDNM when A Aᵀ = cI).
        steps, eta: as DDNM (100, 0.85).
    """

    method = "cddb"

    def __init__(self, model, op, steps=100, eta=0.85, sigma_y=0.0, step_size="auto", **kw):
        super().__init__(model, op, steps=steps, eta=eta, sigma_y=sigma_y, **kw)
        if step_size == "auto":
            step_size = 1.0 / max(operator_norm_sq(op), 1e-12)
        try:
            step_size = float(step_size)
        except (TypeError, ValueError):
            raise ParameterError(f"cddb: step_size must be a number > 0, got "
                                 f"{step_size!r}") from None
        if not (math.isfinite(step_size) and step_size > 0):
            raise ParameterError(f"cddb: step_size must be a finite number > 0, got {step_size}")
        self.step_size = step_size

    def update(self, x_t, x0, eps, t, t_next, y, state, generator):
        z = self.noise_like(x0, generator) if self.eta > 0 else None
        return cddb_step(x0, eps, y, self.op, self.step_size, self.alpha_bar(t_next), self.eta, z)
