"""The names of the priors that ship with dmir (no download). Imports nothing heavy: the command
line's help reads the default from here."""
from __future__ import annotations

import os

#: The learned natural-image prior shipped in the package (trained with ``dmir train``, see
#: docs/prior.md): a DDPM UNet folder (config.json + model.safetensors) under dmir/data/.
LEARNED_PRIOR = "dmir-ddpm"
DEFAULT_MODEL = LEARNED_PRIOR


def learned_prior_path() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", LEARNED_PRIOR)


def builtin_names() -> list[str]:
    """Priors that ship with dmir (no download)."""
    return [LEARNED_PRIOR, "natural", "patch-gmm"]
