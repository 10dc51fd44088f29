"""dmir — zero-shot image restoration with pretrained diffusion models.

Conventions: tensors are (B, C, H, W) float in the model domain [-1, 1]; measurement noise
σ_y is given in [0, 1] pixel units; timesteps are integer indices of the model's schedule
(-1 = clean). See README.md.
"""
from . import log  # noqa: F401  (first: the NullHandler of the "dmir" logger)
from . import errors, models, operators, solvers  # noqa: F401
from .errors import DmirError  # noqa: F401

__version__ = "0.1.0"
