"""The solver registry: method name → sampler class and a one-line description.

Method names combine a base solver with the EquS options: ``ddnm``, ``ddnm-equs`` (EquS:
transformed network frame on alternate steps), ``ddnm-equs+`` (EquS + the quadratic
Timestep-Aware Schedule). Classes are named as ``"module:Class"`` and imported when a method is
built, so listing the methods does not load torch. A user's solver joins with :func:`register`
and is then reachable from ``dmir.pipeline``, ``dmir restore --method`` and the bench.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..errors import ParameterError, UnknownNameError

if TYPE_CHECKING:     # types only: listing the methods must not import torch
    from ..types import Operator, Prior, Solver

__all__ = ["build", "names", "describe", "register", "unregister"]

_BASE = {
    "ddnm": (".ddnm:DDNM", "DDNM (noise-free range–null-space projection) / DDNM+ when sigma_y > 0"),
    "ddrm": (".ddrm:DDRM", "DDRM (spectral variational sampler; operators with an SVD; 20 steps, "
                   "eta 0.85, eta_b 1)"),
    "pigdm": (".pigdm:PiGDM", "ΠGDM (pseudoinverse guidance, a VJP through the network; 100 steps, "
                     "eta 1)"),
    "dps": (".dps:DPS", "DPS (DDPM + gradient of ||y - A x0_hat|| through the network; 1000 steps, "
                 "scale per task 0.3/0.5)"),
    "cddb": (".cddb:CDDB", "CDDB data consistency (one A^T gradient step) in the DDNM sampler "
                   "(step_size 1.0)"),
    "diffpir": (".diffpir:DiffPIR", "DiffPIR (HQS: closed-form/CG data step + zeta "
                                    "re-noising; 100 steps, 20 for inpainting, diffpir_quad "
                                    "schedule)"),
    "deqir": (".deqir:DeqIR", "DeqIR (the DDNM chain as one fixed point over all steps, Anderson "
                     "acceleration, batched network calls; 25 steps, nw 0, etw 0.1)"),
    "ilvr": (".ilvr:ILVR", "ILVR (DDPM + the low frequencies A+A replaced by the measurement "
                           "noised to the step's level; 100 steps, range_t 0)"),
    "repaint": (".repaint:RePaint", "RePaint (DDPM + known part replaced by the noised "
                                    "measurement before each step, resampling jumps; 250 "
                                    "steps, jump_length 10, jump_n_sample 10)"),
}
#: methods with no EquS variants (their structure is not one network call per step)
_STANDALONE = {
    "dcdp": (".dcdp:DCDP", "DCDP (decoupled data consistency: SGD on mean ||A(x) - y||^2, then "
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


def _resolve(target):
    """A registered class/factory, or ``".module:Name"`` imported now."""
    if not isinstance(target, str):
        return target
    mod, _, attr = target.partition(":")
    return getattr(importlib.import_module(mod, __package__), attr)


def register(name: str, factory, help: str = "", *, variants: bool = False,
             replace: bool = False):
    """Register ``factory(model, op, sigma_y=..., steps=..., eta=..., **options)`` (a sampler
    class or function returning an object with ``.sample(y, generator=, progress=)``) as
    method ``name``. ``variants=True`` also registers ``name-equs`` and ``name-equs+`` (the
    factory must then accept ``equs=`` and ``schedule=``). A taken name raises unless
    ``replace=True``."""
    if not isinstance(name, str) or not name or any(c in name for c in ", ="):
        raise ParameterError(f"method name must be a non-empty string without ',', ' ' or '=', "
                             f"got {name!r}")
    if not callable(factory):
        raise ParameterError(f"method {name!r}: the factory must be callable")
    taken = [n for n in ([name + v for v in _VARIANTS] if variants else [name]) if n in names()]
    if taken and not replace:
        raise ParameterError(f"method {taken[0]!r} is already registered (replace=True "
                             f"overrides it)")
    unregister(name)
    (_BASE if variants else _STANDALONE)[name] = (factory, help)


def unregister(name: str) -> None:
    """Remove a registered method (with its EquS variants)."""
    _BASE.pop(name, None)
    _STANDALONE.pop(name, None)


def names() -> list[str]:
    return [b + v for b in _BASE for v in _VARIANTS] + list(_STANDALONE)


def describe() -> dict[str, str]:
    d = {b + v: h + vh for b, (_, h) in _BASE.items() for v, (_, vh) in _VARIANTS.items()}
    d.update({m: h for m, (_, h) in _STANDALONE.items()})
    return d


def build(method: str, model: Prior, op: Operator, steps: int | None = None,
          eta: float | None = None, sigma_y: float = 0.0, **options: Any) -> Solver:
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
                    return _resolve(cls)(model, op, sigma_y=sigma_y, **kw)
                except TypeError as e:  # unexpected keyword
                    raise ParameterError(f"{method}: {e}") from None
    if method in _STANDALONE:
        kw = dict(options)
        if steps is not None:
            kw["steps"] = steps
        if eta is not None:
            kw["eta"] = eta
        try:
            factory: Any = _resolve(_STANDALONE[method][0])
            if method == "dcdp":
                from .dcdp_latent import LatentDCDP, is_latent_prior

                if is_latent_prior(model):      # a latent-diffusion prior
                    factory = LatentDCDP
            return factory(model, op, sigma_y=sigma_y, **kw)
        except TypeError as e:  # unexpected keyword
            raise ParameterError(f"{method}: {e}") from None
    raise UnknownNameError(f"unknown method {method!r}; available: {', '.join(names())}")
