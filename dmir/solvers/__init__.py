"""Diffusion solvers for y = A x + n, and their registry (:mod:`.registry`).

``build(method, model, op, steps=, eta=, sigma_y=, **options)`` returns a sampler with
``.sample(y, x_T=None, generator=None, progress=None)``. Method names combine a base solver
with the EquS options: ``ddnm``, ``ddnm-equs`` (EquS: transformed network frame on alternate
steps), ``ddnm-equs+`` (EquS + the quadratic Timestep-Aware Schedule). Every option of the
base solver can also be passed explicitly (``equs="vflip"``, ``schedule="quadratic"``, …).
:func:`register` adds your own method. One module per method, readable next to its paper.

Names are imported on first use, so ``import dmir.solvers`` does not load torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exports
from .registry import build, describe, names, register, unregister

if TYPE_CHECKING:     # the lazy names below, for type checkers
    from ..rng import BatchGenerator
    from .base import Sampler
    from .cddb import CDDB
    from .dcdp import DCDP
    from .dcdp_latent import LatentDCDP, is_latent_prior
    from .ddnm import DDNM
    from .ddrm import DDRM
    from .deqir import DeqIR
    from .diffpir import DiffPIR
    from .dps import DPS
    from .equivariance import GROUPS as EQUS_GROUPS
    from .pigdm import PiGDM
    from .schedules import TAS_MIN_STEPS, FewStepsWarning, jump_schedule, make_plan

__all__ = ["build", "names", "describe", "register", "unregister", "Sampler", "DDNM", "DDRM",
           "PiGDM", "make_plan", "jump_schedule", "EQUS_GROUPS", "DPS", "CDDB", "DiffPIR",
           "DeqIR", "DCDP", "LatentDCDP", "BatchGenerator", "FewStepsWarning",
           "TAS_MIN_STEPS"]

#: public name → (module, attribute) imported on first access
_LAZY = {
    "Sampler": (".base", "Sampler"), "CDDB": (".cddb", "CDDB"), "DDNM": (".ddnm", "DDNM"),
    "DCDP": (".dcdp", "DCDP"), "LatentDCDP": (".dcdp_latent", "LatentDCDP"),
    "is_latent_prior": (".dcdp_latent", "is_latent_prior"), "DDRM": (".ddrm", "DDRM"),
    "DeqIR": (".deqir", "DeqIR"), "DiffPIR": (".diffpir", "DiffPIR"), "DPS": (".dps", "DPS"),
    "EQUS_GROUPS": (".equivariance", "GROUPS"), "PiGDM": (".pigdm", "PiGDM"),
    "jump_schedule": (".schedules", "jump_schedule"), "make_plan": (".schedules", "make_plan"),
    "BatchGenerator": ("..rng", "BatchGenerator"),
    "FewStepsWarning": (".schedules", "FewStepsWarning"),
    "TAS_MIN_STEPS": (".schedules", "TAS_MIN_STEPS"),
}


__getattr__, __dir__ = exports(__name__, _LAZY)
