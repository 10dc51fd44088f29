"""ILVR (Choi, Kim, Jeong, Gwon & Yoon, "ILVR: Conditioning Method for Denoising Diffusion
Probabilistic Models", ICCV 2021), as in its release (jychoi118/ilvr_adm,
``guided_diffusion/gaussian_diffusion.py``, ``p_sample_loop_progressive``).

Algorithm 1 of the paper (Iterative Latent Variable Refinement), per step t → t-1:

    x'_{t-1} ~ p_θ(x'_{t-1} | x_t)                                   (Alg. 1, l. 4; Eq. 2)
    y_{t-1}  ~ q(y_{t-1} | y)  = √ᾱ_{t-1} y + √(1-ᾱ_{t-1}) ε          (Alg. 1, l. 5; Eq. 1)
    x_{t-1}  = φ_N(y_{t-1}) + x'_{t-1} - φ_N(x'_{t-1})                (Alg. 1, l. 6; Eq. 6)

φ_N is a low-pass filter (the release: its bicubic ``Resizer`` down by N, then up by N), y the
full-resolution *reference image*, ε white noise of the image's shape.

**Any linear operator.** dmir sees only the measurement y = A x_ref, never the reference image.
With φ = A⁺A (the orthogonal projection onto the row space of A):

    φ(√ᾱ x_ref + √(1-ᾱ) ε) = A⁺(√ᾱ y + √(1-ᾱ) A ε),

so Eq. 6 becomes a range–null-space replacement (DDNM Eq. 13 with a noised measurement):

    x_{t-1} = A⁺(√ᾱ y + √(1-ᾱ) A ε) + (I - A⁺A) x'_{t-1}  =  project(x'_{t-1}, √ᾱ y + √(1-ᾱ) A ε)

— :func:`noisy_range_replace`, which RePaint (:mod:`dmir.solvers.repaint`) shares. For
``sr_averagepooling`` (scale N) A⁺A is exactly block averaging followed by nearest upsampling,
the release's φ_N with a box filter; ``tests/test_ilvr_repaint.py`` checks the trajectory
against a literal re-creation of the release's loop to 1e-4. For ``sr_bicubic`` A⁺A is the
projection onto the span of the strided bicubic kernel: a low-pass filter, but not the
release's resizer round trip (which is not a projection).

Release details kept (the defaults; ``ref_level="paper"`` gives Algorithm 1 instead):

* The reference is noised to the level of the step's *input*, ᾱ_t (``q_sample(ref_img, t)``
  with the index t of ``p_sample``), not ᾱ_{t-1} as in Alg. 1 l. 5.
* The refinement runs for t > ``range_t`` (default 0), so the last step (t = 0) is a plain
  DDPM step: the output is the clipped x̂0 of the last state. dmir compares ``range_t`` with the
  model timestep; the release compares it with the respaced index (the same for its 1000-step
  default and for range_t = 0).
* x̂0 is clipped to [-1, 1] (``clip_denoised=True``); one fresh ε per step, drawn after the
  DDPM noise.

Deviation: the DDPM step uses the posterior variance β̃ (``fixed_small``); the release's
ADM checkpoints use learned-range variances, which dmir's model protocol (ε only) does not
expose — as for DPS (:mod:`dmir.solvers.dps`). With fewer than 1000 steps the chain is respaced
as guided-diffusion's ``SpacedDiffusion`` does (β = 1 - ᾱ_t/ᾱ_s over each visited pair; the
same DDIM-form step as DPS, η = 1). DeqIR's tables run ILVR with 100 NFE, dmir's default.

Noise: σ_y is accepted and recorded; ILVR has no noise model (a noisy y is replaced into the
range as it is). Units: images in [-1, 1]; σ_y in [0, 1] pixel units.
"""
from __future__ import annotations

import torch

from ..errors import ParameterError
from .base import Sampler
from .dps import ddpm_step

REF_LEVELS = ("release", "paper")


def noisy_range_replace(x: torch.Tensor, y: torch.Tensor, op, a: float,
                        eps: torch.Tensor) -> torch.Tensor:
    """A⁺(√ᾱ y + √(1-ᾱ) A ε) + (I - A⁺A) x: the range of x replaced by the measurement noised
    to level ᾱ (ILVR Eq. 6 with φ = A⁺A; RePaint Eq. 8a–c for inpainting).

    ``eps``: white noise of the image's shape (the release noises the full-resolution
    reference); ``a`` = ᾱ in (0, 1]."""
    return op.project(x, a ** 0.5 * y + (1 - a) ** 0.5 * op.A(eps))


class ILVR(Sampler):
    """Iterative latent variable refinement on DDPM ancestral sampling.

    Args:
        steps: default 100 (DeqIR's tables); the release's default is the full 1000.
        eta: 1 (default) = DDPM ancestral steps; < 1 the DDIM-form variant.
        range_t: refine only for model timesteps t > range_t (release default 0).
        ref_level: 'release' (reference noised to ᾱ_t, the step's input level) or 'paper'
            (ᾱ_{t-1}, Alg. 1 l. 5).
        clip: clamp x̂0 to [-1, 1] (release: True).
    """

    method = "ilvr"

    def __init__(self, model, op, steps=100, eta=1.0, sigma_y=0.0, range_t: int = 0,
                 ref_level: str = "release", clip: bool = True, **kw):
        super().__init__(model, op, steps=steps, eta=eta, sigma_y=sigma_y, **kw)
        if ref_level not in REF_LEVELS:
            raise ParameterError(f"ilvr: ref_level must be one of {', '.join(REF_LEVELS)}, "
                                 f"got {ref_level!r}")
        try:
            range_t = int(range_t)
        except (TypeError, ValueError):
            raise ParameterError(f"ilvr: range_t must be an integer timestep, got "
                                 f"{range_t!r}") from None
        if not (0 <= range_t < model.num_timesteps):
            raise ParameterError(f"ilvr: range_t must be in 0..{model.num_timesteps - 1}, "
                                 f"got {range_t}")
        self.range_t, self.ref_level, self.clip = range_t, ref_level, bool(clip)

    def update(self, x_t, x0, eps, t, t_next, y, state, generator):
        a_t, a_s = self.alpha_bar(t), self.alpha_bar(t_next)
        if self.clip:
            x0 = x0.clamp(-1, 1)
        var = self.eta ** 2 * (1 - a_s) / (1 - a_t) * (1 - a_t / a_s)
        z = self.noise_like(x_t, generator) if var > 0 else None
        x_prev = ddpm_step(x_t, x0, a_t, a_s, self.eta, z)              # Alg. 1 l. 4
        if t <= self.range_t:
            return x_prev
        a_ref = a_t if self.ref_level == "release" else a_s              # Alg. 1 l. 5
        e = self.noise_like(x_t, generator)
        return noisy_range_replace(x_prev, y, self.op, a_ref, e)        # Alg. 1 l. 6
