"""Priors: anything with ``eps(x_t, t)`` and ``alphas_cumprod`` (see :mod:`dmir.models.base`).

- analytic priors with exact scores: :class:`GaussianPrior`, :class:`GMMPrior`;
- built-in priors that ship with dmir: ``natural``, ``patch-gmm``;
- pretrained checkpoints in their original formats (guided-diffusion ADM, DDPM/SDEdit/DDIM,
  diffusers), by registry name or path: :func:`load`, wrapped as :class:`NetworkPrior`.
"""
from __future__ import annotations

from . import registry
from .analytic import GaussianPrior, GMMPrior, operator_matrix
from .base import DiffusionModel, cosine_betas, linear_betas, make_schedule
from .checkpoint import CheckpointError, read_checkpoint, read_safetensors, write_safetensors
from .loading import FORMATS, InferredConfigWarning, ModelNotFoundError, load, num_parameters
from .network import NetworkPrior

__all__ = ["DiffusionModel", "GaussianPrior", "GMMPrior", "NetworkPrior", "linear_betas",
           "cosine_betas", "make_schedule", "operator_matrix", "load", "builtin_names",
           "registry", "read_checkpoint", "read_safetensors", "write_safetensors",
           "num_parameters", "CheckpointError", "ModelNotFoundError", "InferredConfigWarning",
           "FORMATS"]


#: The learned natural-image prior shipped in the package (trained with ``dmir train``, see
#: docs/prior.md): a DDPM UNet folder (config.json + model.safetensors) under dmir/data/.
LEARNED_PRIOR = "dmir-ddpm"
DEFAULT_MODEL = LEARNED_PRIOR


def learned_prior_path() -> str:
    import os

    return os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", LEARNED_PRIOR)


def builtin_names() -> list[str]:
    """Priors that ship with dmir (no download)."""
    return [LEARNED_PRIOR, "natural", "patch-gmm"]


def _builtin(name, **kwargs) -> DiffusionModel:
    if name == LEARNED_PRIOR:
        import os

        path = learned_prior_path()
        if not os.path.exists(os.path.join(path, "model.safetensors")):
            raise ModelNotFoundError(f"the built-in prior {LEARNED_PRIOR} is missing from this "
                                     f"installation ({path}); reinstall dmir")
        prior = load(path, **kwargs)
        prior.name = LEARNED_PRIOR
        return prior
    if name == "natural":
        from .natural import NaturalImagePrior

        return NaturalImagePrior(**kwargs)
    from .patch_gmm import PatchGMMPrior

    return PatchGMMPrior(**kwargs)
