"""The names of the priors that ship with dmir (no download). Imports nothing heavy: the command
line's help reads the default from here."""
from __future__ import annotations

import os

#: The learned natural-image prior shipped in the package (trained with ``dmir train``, see
#: docs/prior.md): a folder of two DDPM UNet timestep experts (dmir.models.experts) under
#: dmir/data/.
LEARNED_PRIOR = "dmir-ddpm"
DEFAULT_MODEL = LEARNED_PRIOR


def learned_prior_path() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", LEARNED_PRIOR)


def builtin_names() -> list[str]:
    """Priors that ship with dmir (no download)."""
    return [LEARNED_PRIOR, "natural", "patch-gmm"]


#: one line per built-in prior (``dmir models``; kept here so listing loads no network)
DESCRIPTIONS = {
    LEARNED_PRIOR: "learned DDPM UNet timestep experts (2 × 4.2 M parameters: ε below "
                   "t = 700, v above) trained by dmir on natural photos; runs at any size; "
                   "the default",
    "natural": "stationary power-law Gaussian image prior: exact, instant, far weaker",
    "patch-gmm": "32-component colour 6x6 patch Gaussian mixture (EPLL-style), learned by EM",
}


def builtin_files(name: str) -> list[str]:
    """The files a built-in prior's parameters ship in (none for the analytic ``natural``)."""
    data = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")
    if name == LEARNED_PRIOR:
        folder = learned_prior_path()       # one network, or timestep experts in subfolders
        return sorted(os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs
                      if f in ("config.json", "model.safetensors"))
    if name == "patch-gmm":
        return [os.path.join(data, "patch_gmm.npz")]
    return []


def builtin_info(name: str) -> dict:
    """{"description", "size" (bytes of its shipped files; 0: analytic), "files"} of a built-in
    prior, read from the file system only: nothing is loaded or built."""
    files = builtin_files(name)
    return {"description": DESCRIPTIONS[name], "files": files,
            "size": sum(os.path.getsize(f) for f in files if os.path.isfile(f))}
