"""Where dmir keeps downloaded and converted files: the cache folders users already have.

Search order (:func:`home_dirs`): ``$DMIR_HOME`` if set, then ``$XDG_CACHE_HOME/dmir`` if
``XDG_CACHE_HOME`` is set, then ``~/.cache/dmir`` (the XDG default). Files are written to the
first of them (:func:`download_dir`). Named checkpoints live at the top of that folder, the
converted LPIPS / FID networks in its ``metrics/`` subfolder.

Standard files other tools already downloaded are looked up where those tools keep them:
torch.hub's checkpoints folder (:func:`torch_hub_dir`: ``$TORCH_HOME/hub/checkpoints``, else
``$XDG_CACHE_HOME/torch/hub/checkpoints``, else ``~/.cache/torch/hub/checkpoints``), and the
Hugging Face hub cache through ``huggingface_hub`` itself (:mod:`dmir.hub`).
"""
from __future__ import annotations

import hashlib
import os

__all__ = ["home_dirs", "download_dir", "xdg_cache_home", "torch_hub_dir", "file_digest"]


def file_digest(path, algorithm: str = "sha256", chunk: int = 1 << 22) -> str:
    """Hex digest of a file, streamed (torch-free: ``dmir models`` lists without torch)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def xdg_cache_home() -> str:
    """``$XDG_CACHE_HOME`` if set (and absolute, as the XDG spec asks), else ``~/.cache``."""
    x = os.environ.get("XDG_CACHE_HOME", "")
    return x if x and os.path.isabs(os.path.expanduser(x)) else os.path.join(
        os.path.expanduser("~"), ".cache")


def home_dirs() -> list[str]:
    """Where dmir's files are searched, in order (see the module docstring); no duplicates."""
    dirs = []
    if os.environ.get("DMIR_HOME"):
        dirs.append(os.path.expanduser(os.environ["DMIR_HOME"]))
    dirs.append(os.path.join(os.path.expanduser(xdg_cache_home()), "dmir"))
    dirs.append(os.path.join(os.path.expanduser("~"), ".cache", "dmir"))
    out: list[str] = []
    for d in dirs:
        if os.path.abspath(d) not in (os.path.abspath(o) for o in out):
            out.append(d)
    return out


def download_dir() -> str:
    """Where new files are written: the first of :func:`home_dirs`."""
    return home_dirs()[0]


def torch_hub_dir() -> str:
    """torch.hub's checkpoints folder (where torchvision / pytorch-fid weights are downloaded)."""
    th = os.environ.get("TORCH_HOME")
    base = os.path.expanduser(th) if th else os.path.join(xdg_cache_home(), "torch")
    return os.path.join(base, "hub", "checkpoints")
