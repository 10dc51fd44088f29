"""Degradation operators y = A x (+ noise) and their registry.

``build(name, shape=(C, H, W), **params)`` constructs any registered operator
(:mod:`.registry`); the built-in ones are listed by :func:`describe` and defined in
:mod:`.builtin`. Two families:

* **Paper protocol** (DDNM/DDRM/EquS reference code, quirks included): ``sr_bicubic``,
  ``sr_averagepooling``, ``deblur_gauss``, ``deblur_aniso``, ``deblur_uni``, ``colorization``,
  ``denoising``, ``cs_walshhadamard``, ``cs_blockbased``, ``inpainting``.
* **For real photos** (no quirks): ``deblur`` (any 2-D kernel), ``sr_bicubic_aa``, plus the
  protocol operators that are already exact.

Your own operator: subclass :class:`LinearOperator`, or give two functions —
``FunctionOperator(A, At, x_shape, y_shape)`` (A⁺ by conjugate gradients) — and compose
operators with ``B @ A``; :func:`register` makes it a task of the CLI and the bench.
:func:`check` runs deepinv-style numerical checks on any operator (adjoint, the Penrose
conditions of A⁺, the norm; :mod:`.checks`).

Names are imported on first use, so ``import dmir.operators`` does not load torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exports
from . import builtin  # noqa: F401  (registers the built-in operators)
from .registry import build, describe, names, params, register, unregister

if TYPE_CHECKING:     # the lazy names below, for type checkers
    from .base import ComposedOperator, InexactPinvWarning, LinearOperator, cg_pinv
    from .checks import CheckReport, OperatorCheckError, check
    from .cs import BlockCS, WalshHadamardCS, random_orthogonal
    from .fft import CircularBlur
    from .functional import FunctionOperator
    from .nonlinear import NonlinearBlur, NonlinearOperator, PhaseRetrieval
    from .noise import GaussianNoise, PoissonNoise, sigma_from_model, sigma_to_model
    from .pointwise import AveragePooling, Colorization, Identity, Inpainting
    from .separable import ProtocolDeblur, SeparableSVD

__all__ = [
    "build", "names", "params", "describe", "register", "unregister", "LinearOperator",
    "FunctionOperator", "ComposedOperator", "GaussianNoise", "PoissonNoise", "sigma_to_model",
    "sigma_from_model", "SeparableSVD", "ProtocolDeblur", "AveragePooling", "Inpainting",
    "Colorization", "Identity", "WalshHadamardCS", "BlockCS", "CircularBlur", "check",
    "CheckReport", "OperatorCheckError", "InexactPinvWarning",
    "NonlinearOperator", "PhaseRetrieval", "NonlinearBlur",
]

#: public name → the module defining it (imported on first access)
_LAZY = {
    "LinearOperator": ".base", "FunctionOperator": ".functional",
    "ComposedOperator": ".base", "cg_pinv": ".base", "InexactPinvWarning": ".base",
    "check": ".checks", "CheckReport": ".checks", "OperatorCheckError": ".checks", "BlockCS": ".cs", "WalshHadamardCS": ".cs",
    "random_orthogonal": ".cs", "CircularBlur": ".fft", "GaussianNoise": ".noise",
    "PoissonNoise": ".noise", "sigma_from_model": ".noise", "sigma_to_model": ".noise",
    "AveragePooling": ".pointwise", "Colorization": ".pointwise", "Identity": ".pointwise",
    "Inpainting": ".pointwise", "ProtocolDeblur": ".separable", "SeparableSVD": ".separable",
    "NonlinearOperator": ".nonlinear", "PhaseRetrieval": ".nonlinear",
    "NonlinearBlur": ".nonlinear",
}
_MODULES = ("dps_protocol", "dct", "kernels", "base", "cs", "fft", "noise", "pointwise",
            "separable", "functional", "checks", "nonlinear")


__getattr__, __dir__ = exports(__name__, _LAZY, {m: "." + m for m in _MODULES})
