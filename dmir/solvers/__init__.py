"""Diffusion solvers for y = A x + n, and their registry.

``build(method, model, op, steps=, eta=, sigma_y=, **options)`` returns a sampler with
``.sample(y, x_T=None, generator=None, progress=None)``. Method names combine a base solver
with the EquS options: ``ddnm``, ``ddnm-equs`` (EquS: transformed network frame on alternate
steps), ``ddnm-equs+`` (EquS + the quadratic Timestep-Aware Schedule). Every option of the
base solver can also be passed explicitly (``equs="vflip"``, ``schedule="quadratic"``, …).
"""
from __future__ import annotations

from typing import Any

from ..errors import ParameterError, UnknownNameError
from .base import Sampler
from .cddb import CDDB
from .ddnm import DDNM
from .dcdp import DCDP
from .dcdp_latent import LatentDCDP, is_latent_prior
from .ddrm import DDRM
from .deqir import DeqIR
from .diffpir import DiffPIR
from .dps import DPS
from .equivariance import GROUPS as EQUS_GROUPS
from .pigdm import PiGDM
from .schedules import jump_schedule, make_plan

__all__ = ["build", "names", "describe", "Sampler", "DDNM", "DDRM", "PiGDM", "make_plan",
           "jump_schedule", "EQUS_GROUPS", "DPS", "CDDB", "DiffPIR", "DeqIR", "DCDP",
           "LatentDCDP"]

_BASE = {
    "ddnm": (DDNM, "DDNM (noise-free range–null-space projection) / DDNM+ when sigma_y > 0"),
    "ddrm": (DDRM, "DDRM (spectral variational sampler; operators with an SVD; 20 steps, "
                   "eta 0.85, eta_b 1)"),
    "pigdm": (PiGDM, "ΠGDM (pseudoinverse guidance, a VJP through the network; 100 steps, "
                     "eta 1)"),
    "dps": (DPS, "DPS (DDPM + gradient of ||y - A x0_hat|| through the network; 1000 steps, "
                 "scale per task 0.3/0.5)"),
    "cddb": (CDDB, "CDDB data consistency (one A^T gradient step) in the DDNM sampler "
                   "(step_size 1.0)"),
    "diffpir": (DiffPIR, "DiffPIR (HQS: closed-form/CG data step + zeta re-noising; 100 steps, "
                         "20 for inpainting, diffpir_quad schedule)"),
    "deqir": (DeqIR, "DeqIR (the DDNM chain as one fixed point over all steps, Anderson "
                     "acceleration, batched network calls; 25 steps, nw 0, etw 0.1)"),
}
#: methods with no EquS variants (their structure is not one network call per step)
_STANDALONE = {
    "dcdp": (DCDP, "DCDP (decoupled data consistency: SGD on mean ||A(x) - y||^2, then "
                   "diffusion purification from a decaying t*: DDIM <= 20 steps, one Tweedie "
                   "step, or one consistency-model step (--purifier); presets per task; "
                   "--steps sets K; with a latent-diffusion prior (ldm) it runs in latent "
                   "space, consistency latent|pixel)"),
}
_VARIANTS = {
    "": ({}, ""),
    "-equs": ({"equs": "hflip"}, " + EquS (hflip on alternate steps)"),
    "-equs+": ({"equs": "hflip", "schedule": "quadratic"},
               " + EquS+ (hflip + quadratic timestep-aware schedule)"),
}


def names() -> list[str]:
    return [b + v for b in _BASE for v in _VARIANTS] + list(_STANDALONE)


def describe() -> dict[str, str]:
    d = {b + v: h + vh for b, (_, h) in _BASE.items() for v, (_, vh) in _VARIANTS.items()}
    d.update({m: h for m, (_, h) in _STANDALONE.items()})
    return d


def build(method: str, model, op, steps: int | None = None, eta: float | None = None,
          sigma_y: float = 0.0, **options) -> Sampler | DeqIR | DCDP:
    """Build sampler ``method`` for ``model`` and operator ``op`` (see :func:`names`).

    ``steps`` and ``eta`` default to the method's own published defaults (DDNM 100 / 0.85)
    when left as ``None``.
    """
    for b, (cls, _) in _BASE.items():
        for v, (preset, _) in _VARIANTS.items():
            if method == b + v:
                kw: dict[str, Any] = dict(preset)
                kw.update(options)
                if steps is not None:
                    kw["steps"] = steps
                if eta is not None:
                    kw["eta"] = eta
                try:
                    return cls(model, op, sigma_y=sigma_y, **kw)
                except TypeError as e:  # unexpected keyword
                    raise ParameterError(f"{method}: {e}") from None
    if method in _STANDALONE:
        kw = dict(options)
        if steps is not None:
            kw["steps"] = steps
        if eta is not None:
            kw["eta"] = eta
        try:
            cls = _STANDALONE[method][0]
            if cls is DCDP and is_latent_prior(model):   # a latent-diffusion prior
                cls = LatentDCDP
            return cls(model, op, sigma_y=sigma_y, **kw)
        except TypeError as e:  # unexpected keyword
            raise ParameterError(f"{method}: {e}") from None
    raise UnknownNameError(f"unknown method {method!r}; available: {', '.join(names())}")
