"""Priors: anything with ``eps(x_t, t)`` and ``alphas_cumprod`` (see :mod:`dmir.models.base`).

- analytic priors with exact scores: :class:`GaussianPrior`, :class:`GMMPrior`;
- built-in priors that ship with dmir: ``dmir-ddpm`` (learned), ``natural``, ``patch-gmm``;
- pretrained checkpoints in their original formats (guided-diffusion ADM, DDPM/SDEdit/DDIM,
  diffusers, consistency models, latent diffusion), by registry name or path: :func:`load`,
  wrapped as :class:`NetworkPrior`.

Layout (docs/architecture.md): the priors and their wrappers live here (``base``, ``analytic``,
``natural``, ``patch_gmm``, ``network``, ``tiled``, ``fast``, ``loading``); the network
architectures in :mod:`dmir.models.nets`; checkpoint reading and the registry / download cache
in :mod:`dmir.checkpoints`. Names are imported on first use, so ``import dmir.models`` is cheap.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exports
from .builtin import DEFAULT_MODEL, LEARNED_PRIOR, builtin_names, learned_prior_path

if TYPE_CHECKING:     # the lazy names below, for type checkers
    from ..checkpoints import reading as checkpoint, registry
    from ..checkpoints.reading import (CheckpointError, read_checkpoint, read_safetensors,
                                       write_safetensors)
    from ..checkpoints.registry import ModelNotFoundError
    from .analytic import GaussianPrior, GMMPrior, operator_matrix
    from .base import DiffusionModel, cosine_betas, linear_betas, make_schedule
    from .loading import (FORMATS, InferredConfigWarning, formats, load, num_parameters,
                          register_format)
    from .network import NetworkPrior
    from .nets import adm, autoencoder, consistency, ddpm_unet, diffusers_unet, ldm

__all__ = ["DiffusionModel", "GaussianPrior", "GMMPrior", "NetworkPrior", "linear_betas",
           "cosine_betas", "make_schedule", "operator_matrix", "load", "builtin_names",
           "registry", "read_checkpoint", "read_safetensors", "write_safetensors",
           "num_parameters", "CheckpointError", "ModelNotFoundError", "InferredConfigWarning",
           "FORMATS", "register_format", "formats", "DEFAULT_MODEL", "LEARNED_PRIOR",
           "learned_prior_path"]

#: public name → module that defines it (imported on first access)
_LAZY = {
    "GaussianPrior": ".analytic", "GMMPrior": ".analytic", "operator_matrix": ".analytic",
    "DiffusionModel": ".base", "cosine_betas": ".base", "linear_betas": ".base",
    "make_schedule": ".base",
    "CheckpointError": "..checkpoints.reading", "read_checkpoint": "..checkpoints.reading",
    "read_safetensors": "..checkpoints.reading", "write_safetensors": "..checkpoints.reading",
    "ModelNotFoundError": "..checkpoints.registry",
    "FORMATS": ".loading", "InferredConfigWarning": ".loading", "load": ".loading",
    "num_parameters": ".loading", "register_format": ".loading", "formats": ".loading",
    "NetworkPrior": ".network",
}
#: submodules reachable as attributes (``models.registry``, ``from dmir.models import adm``)
_MODULES = {"registry": "..checkpoints.registry", "checkpoint": "..checkpoints.reading",
            "adm": ".nets.adm", "ddpm_unet": ".nets.ddpm_unet", "ldm": ".nets.ldm",
            "autoencoder": ".nets.autoencoder", "consistency": ".nets.consistency",
            "diffusers_unet": ".nets.diffusers_unet"}


__getattr__, __dir__ = exports(__name__, _LAZY, _MODULES)
