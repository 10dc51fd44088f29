"""dmir — zero-shot image restoration with pretrained diffusion models.

Conventions: tensors are (B, C, H, W) float in the model domain [-1, 1]; measurement noise
σ_y is given in [0, 1] pixel units; timesteps are integer indices of the model's schedule
(-1 = clean). See README.md and docs/architecture.md.

``dmir.models``, ``dmir.operators`` and ``dmir.solvers`` are registries that import their
implementations (and torch) on first use; the other subpackages load when first accessed
(``dmir.pipeline``, ``dmir.io``, ``dmir.metrics``, …).
"""
import importlib

from . import log  # noqa: F401  (first: the NullHandler of the "dmir" logger)
from . import errors, models, operators, solvers  # noqa: F401
from .errors import DmirError  # noqa: F401

__version__ = "0.1.0"

_SUBMODULES = ("bench", "checkpoints", "cli", "data", "demo", "io", "metrics", "pipeline",
               "plot", "posterior_eval", "train")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module("." + name, __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
