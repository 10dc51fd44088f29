"""RePaint (Lugmayr, Danelljan, Romero, Yu, Timofte & Van Gool, "RePaint: Inpainting using
Denoising Diffusion Probabilistic Models", CVPR 2022), as in its release (andreas128/RePaint,
``guided_diffusion/gaussian_diffusion.py``: ``p_sample``, ``p_sample_loop_progressive``,
``undo``; ``guided_diffusion/scheduler.py``: ``get_schedule_jump``).

Algorithm 1 of the paper, per step t → t-1, with the known-pixel mask m (1 = known):

    x^known_{t-1}   = √ᾱ_{t-1} x_0 + √(1-ᾱ_{t-1}) ε                        (Eq. 8a)
    x^unknown_{t-1} ~ p_θ(x_{t-1} | x_t)  (the DDPM step)                 (Eq. 8b)
    x_{t-1}         = m ⊙ x^known_{t-1} + (1 - m) ⊙ x^unknown_{t-1}         (Eq. 8c)

and resampling: after a block of ``jump_length`` (j) steps down, go back up j steps one forward
step at a time,

    x_t = √(1-β_t) x_{t-1} + √β_t ε                                        (Eq. 9)

and descend again, ``jump_n_sample - 1`` (r - 1) extra times per block (the release's
``get_schedule_jump``; dmir's :func:`~dmir.solvers.schedules.jump_schedule` is the same walk).

**What the release computes** (``inpa_inj_sched_prev: true``, every released config): the
replacement of Eq. 8a/8c is done at the *start* of the step at level t, just before the network
call, on every step but the first: x_t ← m ⊙ (√ᾱ_t x_0 + √(1-ᾱ_t) ε) + (1-m) ⊙ x_t. In law
this is Eq. 8 shifted by one step; pathwise it differs in two places that dmir keeps: the
replacement also follows each resampling move (the known part of the re-noised state is
replaced by fresh noise), and there is none after the last step — the output is the DDPM mean at
t = 0, i.e. the clipped x̂0 of the last (replaced) state, not m ⊙ x_0 + (1-m) ⊙ x̂0. The step's
DDPM noise is drawn before the replacement noise (``p_sample`` draws ``noise`` first). The
resampling step uses β of the respaced chain, β = 1 - ᾱ_{t_next}/ᾱ_t (``_undo`` with the
SpacedDiffusion betas).

**Any linear operator.** For inpainting A⁺A = diag(m) and A⁺(A x_0) = m ⊙ x_0, so the
replacement is the range–null-space form shared with ILVR
(:func:`dmir.solvers.ilvr.noisy_range_replace`):

    x_t ← A⁺(√ᾱ_t y + √(1-ᾱ_t) A ε) + (I - A⁺A) x_t

which is the release's step exactly for masks and the same idea (measured part from the noised
y, the rest from the chain) for every other operator with A⁺; ``tests/test_ilvr_repaint.py``
checks the inpainting trajectory against a literal re-creation of the release's loop to 1e-4.

Settings of the release (``confs/*.yml``): 250 steps (``timestep_respacing: '250'``),
jump_length 10, jump_n_sample 10 — 250 + 25·9·10 = 2 500 network evaluations per image (dmir's
defaults). Deviation, as for DPS and ILVR: the DDPM step uses β̃ (``fixed_small``) instead of
the checkpoints' learned-range variance. Noise: σ_y is recorded, unused (RePaint has no noise
model). Units: images in [-1, 1].
"""
from __future__ import annotations

import torch

from .base import Sampler
from .dps import ddpm_step
from .ilvr import noisy_range_replace
from .schedules import check_steps


class RePaint(Sampler):
    """RePaint: DDPM steps with the known part replaced by the noised measurement, plus
    resampling (time travel with forward steps, Eq. 9).

    Args:
        steps: default 250 (the release's respacing).
        jump_length, jump_n_sample: the release's resampling (defaults 10, 10); (1, 1) or
            jump_n_sample 1 turns resampling off. Same as ``travel_length`` /
            ``travel_repeat`` of the other samplers (those names are accepted too).
        eta: 1 (default) = DDPM; < 1 the DDIM-form variant of the step.
        clip: clamp x̂0 to [-1, 1] (release: True).
    """

    method = "repaint"

    def __init__(self, model, op, steps=250, eta=1.0, sigma_y=0.0, jump_length=None,
                 jump_n_sample=None, clip: bool = True, **kw):
        jl = kw.pop("travel_length", None) if jump_length is None else jump_length
        jn = kw.pop("travel_repeat", None) if jump_n_sample is None else jump_n_sample
        if jl is None and jn is None and check_steps(steps) <= 10:
            jl, jn = 1, 1                # too few steps for the release's jumps: none
        jl, jn = (10 if jl is None else jl), (10 if jn is None else jn)
        super().__init__(model, op, steps=steps, eta=eta, sigma_y=sigma_y,
                         travel_length=jl, travel_repeat=jn, **kw)
        self.jump_length, self.jump_n_sample, self.clip = int(jl), int(jn), bool(clip)

    def before_step(self, x, t, first, y, state, generator):
        """The release's replacement at the start of ``p_sample`` (Eq. 8a, 8c at level t):
        the step's DDPM noise is drawn first and kept for :meth:`update`."""
        state["z"] = self.noise_like(x, generator)
        if first:                       # pred_xstart is None on the first step
            return x
        e = self.noise_like(x, generator)
        return noisy_range_replace(x, y, self.op, self.alpha_bar(t), e)

    def update(self, x_t, x0, eps, t, t_next, y, state, generator):
        a_t, a_s = self.alpha_bar(t), self.alpha_bar(t_next)
        if self.clip:
            x0 = x0.clamp(-1, 1)
        return ddpm_step(x_t, x0, a_t, a_s, self.eta, state.pop("z"))   # Eq. 8b

    def time_travel(self, x, x0, t, t_next, generator):
        """One forward step t → t_next of the (respaced) chain (Eq. 9)."""
        beta = 1 - self.alpha_bar(t_next) / self.alpha_bar(t)
        return (1 - beta) ** 0.5 * x + beta ** 0.5 * self.noise_like(x, generator)
