"""Priors: anything with ``eps(x_t, t)`` and ``alphas_cumprod`` (see :mod:`dmir.models.base`)."""
from __future__ import annotations

from ..errors import UnknownNameError
from .analytic import GaussianPrior, GMMPrior, operator_matrix
from .base import DiffusionModel, cosine_betas, linear_betas, make_schedule

__all__ = ["DiffusionModel", "GaussianPrior", "GMMPrior", "linear_betas", "cosine_betas",
           "make_schedule", "operator_matrix", "load", "builtin_names"]


def builtin_names() -> list[str]:
    """Priors that ship with dmir (no download)."""
    return ["natural", "patch-gmm"]


def load(name_or_path, **kwargs) -> DiffusionModel:
    """A prior by built-in name: ``natural`` (stationary power-law Gaussian, exact) or
    ``patch-gmm`` (learned EPLL-style colour patch mixture)."""
    if name_or_path == "natural":
        from .natural import NaturalImagePrior

        return NaturalImagePrior(**kwargs)
    if name_or_path == "patch-gmm":
        from .patch_gmm import PatchGMMPrior

        return PatchGMMPrior(**kwargs)
    raise UnknownNameError(
        f"unknown model {name_or_path!r}; available: {', '.join(builtin_names())} "
        f"(pretrained checkpoint formats are not supported in this version)")
