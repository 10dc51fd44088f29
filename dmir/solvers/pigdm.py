"""ΠGDM (Song, Vahdat, Mardani & Kautz, "Pseudoinverse-Guided Diffusion Models for Inverse
Problems", ICLR 2023), DDIM form as in the authors' implementation (NVlabs/RED-diff,
``algos/pgdm.py``).

Pseudoinverse guidance. With p(x0 | x_t) ≈ N(x̂0, r_t² I) the likelihood is
p(y | x_t) ≈ N(A x̂0, r_t² A Aᵀ + σ_y² I), whose score is                              (Eq. 7)

    ∇_{x_t} log p(y | x_t) ≈ (∂x̂0/∂x_t)ᵀ Aᵀ (r_t² A Aᵀ + σ_y² I)⁻¹ (y − A x̂0),

a vector–Jacobian product through the network (one backward pass, no extra network call).
r_t² is the posterior variance of a unit-variance Gaussian datum: r_t² = σ_t²/(1 + σ_t²) in the
paper's VE form (σ_t² = (1−ᾱ_t)/ᾱ_t), i.e. r_t² = 1 − ᾱ_t in our VP form — the same number.

The authors' (noise-free) code guides with (∂x̂0/∂x_t)ᵀ A⁺(y − A x̂0) — r_t² times the σ_y → 0
limit of the score above (the paper's adaptive weight; ``awd``), i.e. the pseudoinverse form.
We apply the same factor r_t² to the noisy score, so the rule is continuous in σ_y:

    g = r_t² (∂x̂0/∂x_t)ᵀ Aᵀ (r_t² A Aᵀ + σ_y² I)⁻¹ (y − A x̂0)
      = (∂x̂0/∂x_t)ᵀ V diag(r_t² s_i / (r_t² s_i² + σ_y²)) Uᵀ (y − A x̂0)
      → (∂x̂0/∂x_t)ᵀ A⁺ (y − A x̂0)                     (σ_y = 0: exactly the reference).

Update t → s (DDIM with η; the reference's ``awd = True`` branch):

    c1 = η √((1 − ᾱ_t/ᾱ_s)(1 − ᾱ_s)/(1 − ᾱ_t)),   c2 = √(1 − ᾱ_s − c1²)
    x_s = √ᾱ_s x̂0 + c1 z + c2 ε + w · √ᾱ_s √ᾱ_t · g                                 (Alg. 1)

with w the guidance weight (reference ``grad_term_weight``, default 1). Re-implementations that
follow the paper's Algorithm 1 use the coefficient √ᾱ_t; the authors' code (and e.g. azula's
PGDMSampler) multiplies by √ᾱ_s as well — we follow the code. It equals the
Tweedie-consistent coefficient √ᾱ_s/√ᾱ_t (exact for a unit-variance Gaussian prior) damped by
ᾱ_t, i.e. weak guidance at high noise. Initialisation as in the code:
x_T = √ᾱ_T A⁺y + √(1 − ᾱ_T) z. The last step (to t = -1, c1 = c2 = 0) returns x̂0 + w √ᾱ_0 g,
as the reference.

Operators: noise-free, any operator (A⁺ only). Noisy: the SVD formula above where the operator
has one; otherwise, with the push-through identity r² Aᵀ(r² A Aᵀ + σ_y² I)⁻¹ =
(AᵀA + (σ_y²/r²) I)⁻¹ Aᵀ, by conjugate gradients (:mod:`dmir.solvers.cg`, only ``A``/``At``;
SPD for σ_y > 0) — our addition: the reference implements only the noise-free case.

Defaults: 100 steps, η = 1.0 — dmir's choice, taken as the ΠGDM paper's ImageNet setting
(appendix; not verified against its text here). The authors' public code (NVlabs/RED-diff)
defaults to 50 steps and η = 0: ``equs-table1`` runs both (rows "ΠGDM" and "ΠGDM (RED-diff 50,
η 0)", :data:`dmir.bench.presets.PIGDM_REDDIFF`); pass ``steps``/``eta`` to change.

The guidance uses A⁺ (noise-free): with an operator whose ``exact_pinv`` is False it warns once
(:class:`~dmir.operators.base.InexactPinvWarning`).
"""
from __future__ import annotations

import math

import torch

from ..errors import ParameterError
from .base import Sampler
from .cg import conjugate_gradient


def pigdm_vector(x0, y, op, r2: float, sigma_y: float, state, cg_iters: int = 100,
                 cg_tol: float = 1e-6):
    """The vector v with g = (∂x̂0/∂x_t)ᵀ v:  v = r² Aᵀ(r² A Aᵀ + σ_y² I)⁻¹(y − A x̂0);
    σ_y = 0: v = A⁺(y − A x̂0). Without an SVD, by the push-through identity
    v = (AᵀA + (σ_y²/r²) I)⁻¹ Aᵀ(y − A x̂0), solved by conjugate gradients."""
    res = y - op.A(x0)
    if sigma_y == 0:
        return op.pinv(res)
    if "s" in state:
        s = state["s"]
        w = torch.where(s > 0, r2 * s / (r2 * s ** 2 + sigma_y ** 2), torch.zeros_like(s))
        return op.V(w * op.Ut(res))
    v, _ = conjugate_gradient(op, op.At(res), sigma_y ** 2 / r2, max_iter=cg_iters, tol=cg_tol)
    return v


def pigdm_step(x_t, x0, eps, v, a_t: float, a_s: float, eta: float, weight: float, z):
    """ΠGDM update t → s (module docstring). ``x0`` must carry its graph to ``x_t``;
    ``v`` is the (detached) guidance vector; ``z`` white noise or None (c1 = 0)."""
    g = torch.autograd.grad(x0, x_t, grad_outputs=v)[0]           # VJP, Eq. 7
    c1 = eta * math.sqrt(max((1 - a_t / a_s) * (1 - a_s) / (1 - a_t), 0.0)) if a_t < 1 else 0.0
    c2 = math.sqrt(max(1 - a_s - c1 ** 2, 0.0))
    x_s = a_s ** 0.5 * x0.detach() + c2 * eps.detach() + (weight * (a_s * a_t) ** 0.5) * g
    if z is not None and c1 > 0:
        x_s = x_s + c1 * z
    return x_s


class PiGDM(Sampler):
    """ΠGDM. Args (beyond :class:`~dmir.solvers.base.Sampler`): ``guidance`` (w, default 1.0),
    ``cg_iters`` (CG iteration cap for noisy y on operators without an SVD).

    The network is differentiated once per step (``needs_grad``: the shared loop evaluates it
    with autograd on a leaf x_t, so x̂0 carries the graph to x_t for the VJP).
    ``x_T`` given to :meth:`sample` is the initial white noise z; the reference initialisation
    √ᾱ_T A⁺y + √(1−ᾱ_T) z is applied to it.
    """

    method = "pigdm"
    needs_grad = True

    needs_exact_pinv = True

    def __init__(self, model, op, steps=100, eta=1.0, sigma_y=0.0, guidance: float = 1.0,
                 cg_iters: int = 100, **kw):
        super().__init__(model, op, steps=steps, eta=eta, sigma_y=sigma_y, **kw)
        try:
            guidance = float(guidance)
        except (TypeError, ValueError):
            raise ParameterError(f"guidance must be a number ≥ 0, got {guidance!r}") from None
        if not (guidance >= 0 and math.isfinite(guidance)):
            raise ParameterError(f"guidance must be a finite number ≥ 0, got {guidance}")
        self.guidance = guidance
        self.cg_iters = int(cg_iters)

    def prepare(self, y):
        if self.sigma_model > 0 and self.op.has_svd:
            return {"s": self.op.singulars().to(device=y.device, dtype=y.dtype)}
        return {}

    def initial_state(self, z, y, state):
        """x_T = √ᾱ_T A⁺y + √(1-ᾱ_T) z, as the reference code starts."""
        a = self.alpha_bar(self.plan.timestep(self.plan.walk[0]))
        return a ** 0.5 * self.op.pinv(y) + (1 - a) ** 0.5 * z

    def update(self, x_t, x0, eps, t, t_next, y, state, generator):
        if not (x_t.requires_grad and x0.requires_grad):
            raise RuntimeError("pigdm: the network prediction carries no graph to x_t; the "
                               "sampling loop must evaluate it with autograd enabled")
        a_t, a_s = self.alpha_bar(t), self.alpha_bar(t_next)
        with torch.no_grad():
            v = pigdm_vector(x0.detach(), y, self.op, 1.0 - a_t, self.sigma_model, state,
                             self.cg_iters)
        c1_needed = self.eta > 0 and a_s < 1.0 and t_next != t
        z = self.noise_like(x0, generator) if c1_needed else None
        return pigdm_step(x_t, x0, eps, v, a_t, a_s, self.eta, self.guidance, z)
