"""Models hosted on the Hugging Face hub, loaded by hub id through ``huggingface_hub``.

``models.load("google/ddpm-ema-celebahq-256")`` resolves the id with
``huggingface_hub.snapshot_download`` — its cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``,
else ``~/.cache/huggingface/hub``; ``models--org--name/snapshots/<commit>/…`` with
``refs/<branch>``), its offline mode (``HF_HUB_OFFLINE=1``: only the cache is read, nothing is
downloaded), its token and endpoint settings — and loads the returned folder like any local
diffusers or dmir folder. Only the files a model folder needs are fetched (configs and weights,
not sample images). ``huggingface_hub`` is an optional dependency: ``pip install 'dmir[hub]'``.

Revisions: :data:`PINNED` records the commit a known hub model is loaded at, so a model
changing upstream does not change results silently; ids not listed use ``main`` (or the
``revision=`` given).
"""
from __future__ import annotations

import os
import re

from .errors import DmirError, ParameterError
from .log import get_logger

__all__ = ["is_hub_id", "resolve", "cache_dir", "offline", "PINNED", "HubError",
           "INSTALL_HINT"]

_log = get_logger(__name__)

INSTALL_HINT = "install it with: pip install 'dmir[hub]'"

#: hub models dmir knows: id → the commit to load (None: not pinned, ``main`` is used).
#: The commit of google/ddpm-ema-celebahq-256 could not be looked up from this offline
#: environment; record it (``huggingface_hub.model_info(id).sha``) before relying on it.
PINNED: dict[str, str | None] = {
    "google/ddpm-ema-celebahq-256": None,
}

#: what a model folder needs (flat diffusers repo, pipeline repo, dmir folder)
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt",
                  "unet/*", "scheduler/*"]

# one part of ``org/name``: 1–96 characters, alphanumeric at both ends (huggingface_hub's
# rule); matched with fullmatch, so a trailing newline is no part of an id
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9])?"
_ID = re.compile(_PART + "/" + _PART)


class HubError(DmirError, FileNotFoundError):
    """A hub model that cannot be resolved (not cached while offline, unknown id, no network)."""


_FILE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".json", ".npz", ".npy",
                  ".png", ".jpg", ".jpeg", ".zip")


def is_hub_id(name) -> bool:
    """``org/name`` that is not an existing local path (nor looks like a missing file)."""
    return (isinstance(name, str) and _ID.fullmatch(name) is not None
            and ".." not in name and "--" not in name and not name.endswith(".git")
            and not name.lower().endswith(_FILE_SUFFIXES) and not os.path.exists(name))


def _truthy(v: str | None) -> bool:
    return (v or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def offline() -> bool:
    """huggingface_hub's offline mode (``HF_HUB_OFFLINE``), read when called."""
    return _truthy(os.environ.get("HF_HUB_OFFLINE"))


def cache_dir() -> str:
    """huggingface_hub's cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub`` (read when called, as huggingface_hub does at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    from .cache import xdg_cache_home
    return os.path.join(xdg_cache_home(), "huggingface", "hub")


def _require():
    try:
        import huggingface_hub
    except ImportError:
        raise ParameterError(f"loading models by hub id needs huggingface_hub; "
                             f"{INSTALL_HINT}") from None
    return huggingface_hub


def resolve(repo_id: str, revision: str | None = None, *, local_only: bool | None = None,
            cache: str | None = None) -> str:
    """The local folder of hub model ``repo_id`` at ``revision`` (default: :data:`PINNED`,
    else ``main``), from huggingface_hub's cache, downloading what is missing unless offline.

    ``local_only``: read the cache only (default: ``HF_HUB_OFFLINE``). Raises
    :class:`HubError` with what was looked for and how to get it."""
    if not is_hub_id(repo_id) and not (isinstance(repo_id, str) and os.path.exists(repo_id)):
        raise HubError(f"{repo_id!r} is not a valid hub id: expected org/name, each part 1-96 "
                       f"letters, digits, '-', '_' or '.', starting and ending with a letter or "
                       f"digit, without '--' or '..'")
    hf = _require()
    rev = revision or PINNED.get(repo_id) or "main"
    local_only = offline() if local_only is None else bool(local_only)
    cache = cache or cache_dir()
    from huggingface_hub import errors as hfe
    try:
        path = hf.snapshot_download(repo_id, revision=rev, cache_dir=cache,
                                    local_files_only=local_only, allow_patterns=ALLOW_PATTERNS,
                                    library_name="dmir")
    except hfe.HFValidationError as e:
        raise HubError(f"hub model {repo_id!r} (revision {rev}): huggingface_hub refuses it "
                       f"({str(e).splitlines()[0][:200]}); check the id and revision") from None
    except hfe.LocalEntryNotFoundError:
        how = ("unset HF_HUB_OFFLINE to download it, or fetch it where there is a network "
               "(huggingface-cli download " + repo_id + ")") if local_only else \
            "no network? set HF_HUB_OFFLINE=1 to use the cache only"
        raise HubError(f"{repo_id!r} is no local file or folder, and as a hub model (revision "
                       f"{rev}) it is not in the huggingface_hub cache {cache}; {how}") from None
    except (hfe.RepositoryNotFoundError, hfe.RevisionNotFoundError) as e:
        raise HubError(f"hub model {repo_id!r} (revision {rev}): {type(e).__name__}; check the "
                       f"id and revision (private or gated repos need `hf auth login`)") from None
    except (hfe.HfHubHTTPError, OSError) as e:
        raise HubError(f"hub model {repo_id!r} (revision {rev}) could not be fetched "
                       f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
                       f"no network? set HF_HUB_OFFLINE=1 to use the cache only") from None
    _log.debug("hub model %s@%s -> %s", repo_id, rev, path)
    return os.fspath(path)
