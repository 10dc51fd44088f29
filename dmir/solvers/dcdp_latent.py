"""DCDP in the latent space of a latent diffusion model (Li et al., arXiv 2403.06054, the LDM
experiments), as in the release's ``DCDP-LDM/dcdp.py`` (``Diffusion_Purified_CSGM``,
``CSGM_Solver_Latent_Space``, ``CSGM_Solver_Pixel_Space``) and ``run_latent_sapce_dcdp.sh``.

The prior is a :class:`~dmir.models.nets.ldm.LatentPrior`: ε(z_t, t) over latents z = s·E(x) with an
encoder E and decoder D (images x = D(z/s)). Each outer iteration k = 0 … K-1 alternates the
same two decoupled phases as pixel DCDP (:mod:`dmir.solvers.dcdp`), with data consistency in
one of two spaces:

* ``consistency="latent"``: the state is a latent z (z_0 ~ N(0, I), the release's start).
  Reconstruction = τ optimiser steps on

      L(z) = mean((A(D(z)) - y)²)                                   (through the decoder)

  — pixel DCDP's reconstruction run on the composed operator A∘D (:class:`DecodedOperator`);
  a VQ decoder quantises with the straight-through gradient, as
  ``differentiable_decode_first_stage`` does. The result is re-encoded, z ← E(D(z)) (the
  release does this before purifying), then purified in latent space.
* ``consistency="pixel"``: the state is an image x (x_0 = 0). Reconstruction = τ steps on
  mean((A(x) - y)²) in pixel space, exactly pixel DCDP's; then z = E(x) is purified in latent
  space and decoded, x ← D(Purify(E(x))).

Purification is :meth:`DCDP.purify` on latents — re-noise to t*_k − 1 and run deterministic
DDIM (≤ 20 steps) or one Tweedie step with the latent ε — so the NFE count is pixel DCDP's:
Σ_k min(20, t*_k) or K. Encoder and decoder calls are not network evaluations of the prior and
are not counted. The output is D(z_K) (latent) or x_K = D(z_K) (pixel).

Released settings (FFHQ LDM-VQ-4; all SGD with momentum 0.9, linear purification schedule,
DDIM ≤ 20 steps or Tweedie); as in pixel DCDP an omitted ``lr`` is the released value scaled by
M/M_ref, the released step per measurement entry:

=====================  ===========  ==  ===  =====  ====  =====
preset                 consistency  K   τ    lr     T0    T_end
=====================  ===========  ==  ===  =====  ====  =====
sr4                    latent       10  100  1e3    400   0
inpainting             latent       20  50   1e3    500   0
deblur_gauss           pixel        4   250  1e5    400   0
deblur_motion          pixel        10  100  1e5    400   0
nonlinear_deblur       latent       10  100  5e3    1000  50
nonlinear_deblur_cin   latent       20  100  5e3    300   50
=====================  ===========  ==  ===  =====  ====  =====

(``nonlinear_deblur_cin``: ``dcdp_imagenet.py`` with the cin256-v2 LDM conditioned on the
null class, which :func:`dmir.models.load` uses by default.)

Deviations from the release, on purpose:

* DDIM grid: pixel DCDP's (guided-diffusion spacing of 0 … t*-1, last step to the clean
  latent, the 1 → 2 bump); the LDM release spaces min(20, t*) steps over 1 … t*-1 and stops at
  ᾱ_0 (one training step short of clean).
* x̂0 is not clipped in latent space (``clip=False``; LDM's samplers do not clip latents).
* Batches: per-sample mean losses summed, as in pixel DCDP (the release runs batch size 1).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ..rng import randn
from ..errors import ParameterError, ShapeError, UnknownNameError
from .base import FiniteWatch, check_result
from .dcdp import _OP_PRESET, DCDP, _float

#: released latent-DCDP settings (DCDP-LDM run_latent_sapce_dcdp.sh / README); M_ref as in
#: :data:`dmir.solvers.dcdp.DCDP_PRESETS` (256×256 RGB; 3×64×64 for ×4 SR)
LATENT_PRESETS: dict[str, dict[str, Any]] = {
    "sr4": {"consistency": "latent", "K": 10, "tau": 100, "lr": 1e3, "T0": 400, "T_end": 0,
            "M_ref": 3 * 64 * 64},
    "inpainting": {"consistency": "latent", "K": 20, "tau": 50, "lr": 1e3, "T0": 500,
                   "T_end": 0, "M_ref": 3 * 256 * 256},
    "deblur_gauss": {"consistency": "pixel", "K": 4, "tau": 250, "lr": 1e5, "T0": 400,
                     "T_end": 0, "M_ref": 3 * 256 * 256},
    "deblur_motion": {"consistency": "pixel", "K": 10, "tau": 100, "lr": 1e5, "T0": 400,
                      "T_end": 0, "M_ref": 3 * 256 * 256},
    "nonlinear_deblur": {"consistency": "latent", "K": 10, "tau": 100, "lr": 5e3, "T0": 1000,
                         "T_end": 50, "M_ref": 3 * 256 * 256},
    "nonlinear_deblur_cin": {"consistency": "latent", "K": 20, "tau": 100, "lr": 5e3, "T0": 300,
                             "T_end": 50, "M_ref": 3 * 256 * 256},
}
LATENT_DEFAULT_PRESET = "sr4"
CONSISTENCY = ("latent", "pixel")
LATENT_INITS = ("randn", "zeros", "pinv")


def is_latent_prior(model) -> bool:
    """A prior with an autoencoder: ``encode``, ``decode`` and ``latent_shape``."""
    return all(callable(getattr(model, a, None)) for a in ("encode", "decode", "latent_shape"))


class DecodedOperator:
    """A∘D: the image operator applied to decoded latents, y = A(D(z)) (differentiable in z
    through the decoder). ``pinv(y)`` = E(A⁺y)."""

    def __init__(self, op, prior, latent_shape):
        self.op, self.prior = op, prior
        self.name = getattr(op, "name", "operator")
        self.x_shape, self.y_shape = tuple(latent_shape), tuple(op.y_shape)

    def A(self, z):
        return self.op.A(self.prior.decode(z))

    def pinv(self, y):
        return self.prior.encode(self.op.pinv(y))


class LatentDCDP(DCDP):
    """DCDP with a latent diffusion prior (see the module docstring).

    Args (beyond :class:`~dmir.solvers.dcdp.DCDP`'s, which keep their meaning):
        model: a :class:`~dmir.models.nets.ldm.LatentPrior` (``eps`` over latents, ``encode``,
            ``decode``, ``latent_shape``).
        op: the image operator (its ``x_shape`` is the image's; H, W multiples of the prior's
            ``size_multiple``).
        task: a :data:`LATENT_PRESETS` key (default: from the operator's name, else ×4 SR).
        consistency: ``"latent"`` (gradients through the decoder) or ``"pixel"`` (then
            encode); default: the preset's.
        init: ``"randn"`` (latent: z_0 ~ N(0, I) from ``generator`` or ``x_T``, the release),
            ``"zeros"`` (pixel: x_0 = 0, the release; latent: z_0 = 0) or ``"pinv"``
            (A⁺y, encoded in latent mode). Default: the release's for the mode.
        reencode: latent mode: z ← E(D(z)) before purifying (release: True).
        clip: clip x̂0 in the purification (default False: latents are not in [-1, 1]).
    """

    def __init__(self, model, op, steps: int | None = None, eta: float = 0.0,
                 sigma_y: float = 0.0, task: str | None = None, consistency: str | None = None,
                 K: int | None = None, tau: int | None = None, lr: float | None = None,
                 T0: int | None = None, T_end: int | None = None, init: str | None = None,
                 reencode: bool = True, clip: bool = False, **options):
        if not is_latent_prior(model):
            raise ParameterError(f"dcdp (latent): the prior {getattr(model, 'name', '?')!r} has no "
                                 f"autoencoder (encode/decode); load a latent-diffusion "
                                 f"checkpoint, or use pixel DCDP")
        if task is not None and task not in LATENT_PRESETS:
            raise UnknownNameError(f"dcdp (latent): no preset for task {task!r}; known: "
                                   f"{', '.join(LATENT_PRESETS)}")
        if task is None:
            name = getattr(op, "name", "")
            task = name if name in LATENT_PRESETS else _OP_PRESET.get(name, LATENT_DEFAULT_PRESET)
        if task not in LATENT_PRESETS:
            task = LATENT_DEFAULT_PRESET
        p = LATENT_PRESETS[task]
        consistency = p["consistency"] if consistency is None else consistency
        if consistency not in CONSISTENCY:
            raise ParameterError(f"dcdp: consistency must be one of {', '.join(CONSISTENCY)}, "
                                 f"got {consistency!r}")
        init = init if init is not None else ("randn" if consistency == "latent" else "zeros")
        if init not in LATENT_INITS or (init == "randn" and consistency == "pixel"):
            allowed = LATENT_INITS if consistency == "latent" else ("zeros", "pinv")
            raise ParameterError(f"dcdp ({consistency} consistency): init must be one of "
                                 f"{', '.join(allowed)}, got {init!r}")
        self.image_op = op
        self.latent_shape = tuple(model.latent_shape(op.x_shape))
        inner = op if consistency == "pixel" else DecodedOperator(op, model, self.latent_shape)
        if steps is not None and K is None:
            K, steps = steps, None
        M = math.prod(op.y_shape)
        lr = _float("lr", p["lr"] * M / p["M_ref"] if lr is None else lr, positive=True)
        super().__init__(model, inner, steps=steps, eta=eta, sigma_y=sigma_y,
                         K=p["K"] if K is None else K, tau=p["tau"] if tau is None else tau,
                         lr=lr, T0=p["T0"] if T0 is None else T0,
                         T_end=p["T_end"] if T_end is None else T_end, clip=clip,
                         init="zeros", **options)
        self.task, self.consistency, self.init = task, consistency, init
        self.reencode = bool(reencode)

    # ------------------------------------------------------------------ one outer iteration
    def outer_step(self, v, y, k: int, generator=None, progress=None):
        """v_k → v_{k+1}; v is a latent (latent consistency) or an image (pixel consistency).

        latent:  z = argmin-ish_z mean((A(D(z)) − y)²)  (τ steps from v_k, through D)
                 v_{k+1} = Purify(E(D(z)), t*_k)
        pixel:   x = argmin-ish_x mean((A(x) − y)²)      (τ steps from v_k)
                 v_{k+1} = D(Purify(E(x), t*_k))
        """
        u = self.reconstruct(v, y)                                  # data consistency
        with torch.no_grad():
            if self.consistency == "latent":
                z = self.model.encode(self.model.decode(u)) if self.reencode else u
                return self.purify(z, self.levels[k], generator, progress)
            z = self.purify(self.model.encode(u), self.levels[k], generator, progress)
            return self.model.decode(z)

    # ------------------------------------------------------------------ entry point
    def initial_state(self, y, x_T, generator):
        """v_0: a latent (N(0, I), 0 or E(A⁺y)) or an image (0 or A⁺y)."""
        B = y.shape[0]
        shape = (B, *self.op.x_shape)
        if x_T is not None and tuple(x_T.shape) != shape:
            raise ShapeError(f"x_T must have shape {shape} (the "
                             f"{'latent' if self.consistency == 'latent' else 'image'} state), "
                             f"got {tuple(x_T.shape)}")
        if self.init == "randn":
            return (x_T if x_T is not None else
                    randn(shape, generator, y.dtype, y.device))
        if self.init == "zeros":
            return torch.zeros(shape, dtype=y.dtype, device=y.device)
        return self.op.pinv(y).detach().clone()

    def sample(self, y: torch.Tensor, x_T: torch.Tensor | None = None,
               generator: torch.Generator | None = None,
               progress: Callable[[int, int], None] | None = None,
               callback=None) -> torch.Tensor:
        """Restore the image (B, C, H, W) from y. ``x_T`` (latent consistency with
        ``init="randn"``): the initial latent z_0; otherwise only its shape is checked.
        ``callback(k, t*, tensors)`` after each outer iteration, as :meth:`DCDP.sample` (the
        tensors are latents with latent consistency)."""
        self.check_measurement(y)
        y = y.detach()
        with torch.no_grad():
            v = self.initial_state(y, x_T, generator)
        self.nfe, self._total, self._watch = 0, self.total_nfe, FiniteWatch()
        for k in range(self.K):
            v_in, v = v, self.outer_step(v, y, k, generator, progress)
            if callback is not None:
                callback(k, int(self.levels[k]), {"x_t": v_in.detach(), "x0": v.detach(),
                                                  "x_next": v.detach()})
        with torch.no_grad():
            return check_result(self.model.decode(v) if self.consistency == "latent" else v,
                                self.method, self.K, self._watch)


__all__ = ["LatentDCDP", "DecodedOperator", "LATENT_PRESETS", "is_latent_prior"]
