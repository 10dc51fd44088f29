"""``models.load``: one entry point for built-in priors, named checkpoints, files and folders.

Resolution order for ``name_or_path``:

1. a built-in prior (``natural``, ``patch-gmm``);
2. a registry name (``adm-imagenet256-uncond``, ``ddpm-celebahq256``, …; see
   :mod:`dmir.checkpoints.registry`), found in ``$DMIR_HOME`` or ``~/.cache/dmir``;
3. a Hugging Face hub id (``google/ddpm-ema-celebahq-256``) that is not a local path: the
   model folder from huggingface_hub's cache (downloaded unless ``HF_HUB_OFFLINE``; needs
   ``pip install 'dmir[hub]'``), see :mod:`dmir.hub`;
4. a path: a checkpoint file (``.pt``/``.pth``/``.ckpt``/``.bin``/``.safetensors``), a diffusers
   folder (``config.json`` with ``_class_name: UNet2DModel``, or a pipeline folder with
   ``unet/`` and ``scheduler/``), or a dmir folder (``config.json`` holding
   ``{"format": ..., "config": {...}}`` next to one weights file).

The format is detected from the state-dict keys unless ``format=`` is given. The configuration
is, in order of precedence: ``config=`` (a named config or a dict of overrides), the registry
entry / a known official file name, a ``config.json`` next to the weights, and finally what can
be inferred from the tensor shapes — the inferred settings are listed in ``prior.info["notes"]``
and reported once with a warning.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Any

import torch

from ..errors import ParameterError, UnknownNameError
from ..checkpoints import registry
from ..checkpoints.registry import ModelNotFoundError
from .config_check import check_against_weights, check_bounds, check_diffusers_against_weights
from ..checkpoints.reading import (SAFETENSORS_SUFFIXES, TORCH_SUFFIXES, CheckpointError, fit_state_dict,
                         read_checkpoint)
from .builtin import LEARNED_PRIOR, builtin_names, learned_prior_path
from .network import NetworkPrior, parse_dtype
from ..types import Prior

FORMATS = ("adm", "ddpm", "diffusers", "cm", "ldm")
_ALIASES = {"guided-diffusion": "adm", "openai": "adm", "adm": "adm", "ddpm": "ddpm",
            "cm": "cm", "consistency": "cm", "consistency-model": "cm", "edm": "cm",
            "simple": "ddpm", "sdedit": "ddpm", "ddim": "ddpm", "diffusers": "diffusers",
            "ldm": "ldm", "latent-diffusion": "ldm", "compvis": "ldm"}


class InferredConfigWarning(UserWarning):
    """A checkpoint was loaded with settings inferred from its tensor shapes."""


#: formats registered with :func:`register_format`: name → format module
_USER_FORMATS: dict = {}

#: what a format module provides (see dmir.models.nets.ddpm_unet for a complete example)
FORMAT_PROTOCOL = ("FORMAT", "CONFIGS", "matches", "infer_config", "full_config", "build",
                   "prior")


def register_format(module, aliases=(), *, replace: bool = False) -> None:
    """Make :func:`load` (and so ``--model PATH`` of the CLI and the bench) read checkpoints of
    a new architecture. ``module`` (a module or any object) provides:

    - ``FORMAT`` — its name; ``CONFIGS`` — named configurations (a dict, may be empty);
    - ``matches(keys) -> bool`` — whether a state dict's keys have its layout (detection);
    - ``infer_config(state_dict, image_size=None) -> (config, notes)`` and
      ``full_config(partial) -> config`` — the configuration, from the tensor shapes or a
      config.json next to the weights;
    - ``build(config) -> nn.Module`` (called on the meta device; weights are then assigned);
    - ``prior(net, config, name=..., info=..., class_labels=None) -> NetworkPrior``;
    - optionally ``size_multiple(config) -> int`` (default 1) and
      ``select_weights(sd, config, notes, ema=True)``.

    Detection tries the built-in formats first, then registered ones in registration order."""
    missing = [a for a in FORMAT_PROTOCOL if not hasattr(module, a)]
    if missing:
        raise ParameterError(f"a checkpoint format must provide {', '.join(FORMAT_PROTOCOL)}; "
                             f"missing: {', '.join(missing)}")
    name = str(module.FORMAT).lower()
    if (name in _ALIASES or name in _USER_FORMATS) and not replace:
        raise ParameterError(f"checkpoint format {name!r} already exists (replace=True "
                             f"overrides a registered one)")
    if name in FORMATS:
        raise ParameterError(f"{name!r} is a built-in checkpoint format")
    _USER_FORMATS[name] = module
    for a in (name, *aliases):
        _ALIASES[str(a).lower()] = name


def formats() -> list[str]:
    """The checkpoint formats :func:`load` reads: built-in, then registered."""
    return list(FORMATS) + list(_USER_FORMATS)


def _format_module(fmt: str):
    if fmt in _USER_FORMATS:
        return _USER_FORMATS[fmt]
    if fmt == "ldm":
        from .nets import ldm
        return ldm
    if fmt == "cm":
        from .nets import consistency
        return consistency
    if fmt == "adm":
        from .nets import adm
        return adm
    if fmt == "ddpm":
        from .nets import ddpm_unet
        return ddpm_unet
    from .nets import diffusers_unet
    return diffusers_unet


def _canonical_format(fmt):
    if fmt is None:
        return None
    key = str(fmt).lower()
    if key not in _ALIASES:
        raise ParameterError(f"unknown checkpoint format {fmt!r}; supported: "
                             f"{', '.join(formats())} (aliases: {', '.join(sorted(_ALIASES))})")
    return _ALIASES[key]


def detect_format(keys) -> str | None:
    """The format whose key layout ``keys`` has, or ``None``."""
    from .nets import adm, consistency, ddpm_unet, ldm
    if ldm.matches(keys):               # model.diffusion_model.* + first_stage_model.*
        return "ldm"
    if consistency.matches(keys):       # needs the tensors: ADM keys with 4-D attention convs
        return "cm"
    keys = set(keys)
    if adm.matches(keys):
        return "adm"
    if ddpm_unet.matches(keys):
        return "ddpm"
    from .nets import diffusers_unet
    if diffusers_unet.matches(keys):
        return "diffusers"
    for name, mod in _USER_FORMATS.items():
        if mod.matches(keys):
            return name
    return None


def _describe_keys(keys) -> str:
    keys = sorted(keys)
    head = ", ".join(keys[:4])
    return f"{len(keys)} tensors, e.g. {head}" if keys else "no tensors"


def _entry_for_file(path) -> registry.Entry | None:
    base = os.path.basename(path)
    for e in registry.ENTRIES.values():
        if not e.is_folder and os.path.basename(e.main_file.name) == base:
            return e
    return None


# --------------------------------------------------------------------------- public entry
def load(name_or_path: str | os.PathLike[str], format: str | None = None,
         config: str | dict[str, Any] | None = None, dtype: Any = None, device: Any = None,
         **kwargs: Any) -> Prior:
    """Load a prior. See the module docstring for how ``name_or_path`` is resolved.

    Args:
        format: ``adm`` (guided-diffusion), ``ddpm`` (DDPM/SDEdit/DDIM "simple" UNet) or
            ``diffusers``; detected from the keys when ``None``.
        config: a named config of that format (e.g. ``"adm-ffhq256"``) or a dict overriding
            the detected/inferred one.
        dtype: ``float32`` (default), ``float16`` or ``bfloat16``: weights and inference dtype.
            ε is returned in the input's dtype.
        device: where the weights go (``"cpu"``, ``"cuda"``, …).
        kwargs: for built-in priors, their constructor options; for checkpoints,
            ``class_labels=`` (class-conditional models), ``image_size=`` (helps inference).
    """
    if not isinstance(name_or_path, (str, os.PathLike)) or not os.fspath(name_or_path):
        raise ParameterError(f"models.load takes a name (built-in: {', '.join(builtin_names())}; "
                             f"or see `dmir models`), a hub id or a checkpoint path, got "
                             f"{name_or_path!r}")
    if isinstance(name_or_path, str) and name_or_path in builtin_names():
        if format is not None or config is not None:
            raise ParameterError(f"{name_or_path!r} is a built-in prior; format/config do "
                                 f"not apply to it")
        if name_or_path != LEARNED_PRIOR:      # analytic priors: exact, computed in float64
            if dtype is not None and parse_dtype(dtype) not in (torch.float32, torch.float64):
                raise ParameterError(f"{name_or_path!r} is an analytic prior computed in "
                                     f"float64; dtype {dtype} applies to network checkpoints "
                                     f"only (use float32, or a checkpoint model)")
            if kwargs.get("class_labels") is not None:
                raise ParameterError(f"{name_or_path!r} is not class-conditional; class labels "
                                     f"apply to class-conditional checkpoints only")
            kwargs.pop("class_labels", None)
            try:
                prior = _load_builtin(name_or_path, **kwargs)
            except TypeError as e:           # an option the prior does not take
                raise ParameterError(f"{name_or_path}: {e}") from None
            if dtype is not None and parse_dtype(dtype) == torch.float64:
                prior = prior.to(torch.float64)       # float32: as built (float64 inside)
            return prior.to(device) if device is not None else prior
        prior = _load_builtin(name_or_path, dtype=dtype, device=device, **kwargs)
        return prior
    dtype = parse_dtype(dtype)
    if dtype == torch.float64:
        raise ParameterError("checkpoints load as float32, float16 or bfloat16, not float64")
    entry = None
    path = os.fspath(name_or_path)
    if isinstance(name_or_path, str) and name_or_path in registry.ENTRIES:
        entry = registry.ENTRIES[name_or_path]
        if entry.format == "autoencoder":
            raise ParameterError(f"{entry.name} is a first-stage autoencoder, not a diffusion "
                                 f"prior: load it with dmir.models.nets.autoencoder.load("
                                 f"{entry.name!r})")
        local = registry.local_path(entry)
        if local is None:
            raise ModelNotFoundError(registry.not_downloaded(entry))
        path = local
    elif not os.path.exists(path) and _hub_id(path):
        from .. import hub

        try:
            path = hub.resolve(path)
        except hub.HubError as e:
            raise ModelNotFoundError(str(e)) from None
    elif not os.path.exists(path):
        raise ModelNotFoundError(
            f"unknown model {path!r}: not a built-in prior ({', '.join(builtin_names())}), not a "
            f"named model ({', '.join(registry.names())}; see `dmir models`), not a hub id "
            f"(org/name), and no such file or folder")
    else:
        entry = _entry_for_file(path) if os.path.isfile(path) else None
    prior = _load_path(path, _canonical_format(format), config, dtype, device, entry, kwargs)
    if entry is not None:
        prior.name = entry.name
    if entry is not None and os.path.isfile(path):
        prior.info["sha256"] = (registry.recorded_sha256(entry, path)
                                or registry.remember_sha256(entry, path))
    return prior


def _load_builtin(name, **kwargs):
    if name == LEARNED_PRIOR:
        path = learned_prior_path()
        if not os.path.exists(os.path.join(path, "config.json")):
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


def _hub_id(name) -> bool:
    from .. import hub

    return hub.is_hub_id(name)


def _load_path(path, fmt, config, dtype, device, entry, kw):
    if os.path.isdir(path):
        return _load_folder(path, fmt, config, dtype, device, kw)
    obj = read_checkpoint(path)
    return _from_object(obj, path, fmt, config, dtype, device, entry, kw, sidecar=None)


def _read_json(path):
    """A JSON config file, which must hold an object, its size-like values within bounds."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except RecursionError:
        raise CheckpointError(f"cannot read {path!r}: nested too deeply") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path!r}: {e}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path!r} must hold a JSON object ({{...}}), not a "
                              f"{type(obj).__name__}")
    check_bounds(obj, repr(path), CheckpointError)
    return obj


def _weights_in(folder, stem_prefix=""):
    files = sorted(f for f in os.listdir(folder)
                   if f.endswith(TORCH_SUFFIXES + SAFETENSORS_SUFFIXES)
                   and not f.endswith(".part") and f.startswith(stem_prefix))
    st = [f for f in files if f.endswith(SAFETENSORS_SUFFIXES)]
    return os.path.join(folder, (st or files)[0]) if files else None


def _load_folder(folder, fmt, config, dtype, device, kw):
    cfg_path = os.path.join(folder, "config.json")
    if os.path.isfile(os.path.join(folder, "unet", "config.json")):       # diffusers pipeline
        sched = os.path.join(folder, "scheduler", "scheduler_config.json")
        return _load_diffusers(os.path.join(folder, "unet"), sched, config, dtype, device, kw)
    if not os.path.isfile(cfg_path):
        w = _weights_in(folder)
        if w is None:
            raise CheckpointError(f"folder {folder!r} holds no config.json and no weights file "
                                  f"({', '.join(TORCH_SUFFIXES + SAFETENSORS_SUFFIXES)})")
        return _from_object(read_checkpoint(w), w, fmt, config, dtype, device, None, kw, None)
    meta = _read_json(cfg_path)
    if meta.get("_class_name") == "UNet2DModel" or fmt == "diffusers":
        sched = os.path.join(folder, "scheduler_config.json")
        if not os.path.isfile(sched):
            sched = os.path.join(os.path.dirname(os.path.abspath(folder)), "scheduler",
                                 "scheduler_config.json")
        return _load_diffusers(folder, sched, config, dtype, device, kw)
    if meta.get("format") == "experts":           # timestep experts (dmir.models.experts)
        from . import experts

        if fmt is not None or config is not None:
            raise ParameterError(f"{folder!r} is an expert prior: format/config do not apply")
        if set(kw) - {"image_size"}:
            raise ParameterError(f"unknown option(s) for an expert prior: "
                                 f"{', '.join(sorted(set(kw) - {'image_size'}))}")
        return experts.load_folder(folder, load, dtype=dtype, device=device)
    if "format" not in meta:
        raise CheckpointError(f"{cfg_path!r} is neither a diffusers UNet2DModel config nor a "
                              f"dmir folder config ({{'format': ..., 'config': {{...}}}})")
    if not isinstance(meta["format"], str) or not isinstance(meta.get("config", {}), dict):
        raise CheckpointError(f"{cfg_path!r}: 'format' must be a string and 'config' an "
                              f"object ({{'format': 'ddpm', 'config': {{...}}}})")
    w = _weights_in(folder)
    if w is None:
        raise CheckpointError(f"folder {folder!r} has a config.json but no weights file")
    return _from_object(read_checkpoint(w), w, fmt or _canonical_format(meta["format"]),
                        config, dtype, device, None, kw, sidecar=meta.get("config"))


def _load_diffusers(folder, sched_path, config, dtype, device, kw):
    from .nets import diffusers_unet as mod
    unet_cfg = _read_json(os.path.join(folder, "config.json"))
    if isinstance(config, dict):
        check_bounds(config, "config=")
        unet_cfg = {**unet_cfg, **config}
    sched_cfg = _read_json(sched_path) if sched_path and os.path.isfile(sched_path) else None
    w = _weights_in(folder, "diffusion_pytorch_model") or _weights_in(folder)
    if w is None:
        raise CheckpointError(f"diffusers folder {folder!r} has no diffusion_pytorch_model."
                              f"safetensors/.bin")
    sd, notes = mod.normalize_state_dict(read_checkpoint(w))
    check_diffusers_against_weights(unet_cfg, sd, f"{os.path.join(folder, 'config.json')!r}",
                                    CheckpointError)
    net = _build(mod, unet_cfg)
    fit_state_dict(net, sd, f"diffusers weights {w!r}", dtype, device)
    pkw = {"name": os.path.basename(os.path.abspath(folder)), **_prior_kw(kw)}
    prior = mod.prior(net, unet_cfg, sched_cfg, **pkw)
    prior.info.setdefault("notes", [])
    prior.info["notes"] = notes + list(prior.info["notes"])
    prior.size_multiple = 2 ** (len(unet_cfg.get("block_out_channels", (0,))) - 1)
    prior.compute_dtype = dtype
    prior.info.setdefault("path", folder)
    return prior


def _build(mod, cfg):
    with torch.device("meta"):
        return mod.build(cfg)


def _prior_kw(kw):
    allowed = {"class_labels", "name", "info"}
    bad = set(kw) - allowed - {"image_size", "ema"}
    if bad:
        raise ParameterError(f"unknown option(s) for a checkpoint: {', '.join(sorted(bad))}; "
                             f"allowed: class_labels, image_size")
    return {k: v for k, v in kw.items() if k in allowed}


def _from_object(obj, path, fmt, config, dtype, device, entry, kw, sidecar):
    from .nets import ddpm_unet
    sd, notes = ddpm_unet.normalize_state_dict(obj)
    detected = detect_format(sd)
    if fmt is None:
        fmt = entry.format if entry is not None else detected
        if fmt is None:
            raise CheckpointError(
                f"{path!r} is not a checkpoint of a supported format ({', '.join(formats())}): "
                f"its state dict has {_describe_keys(sd.keys())}. Other architectures: build the "
                f"network yourself and wrap it in dmir.models.NetworkPrior")
    elif detected != fmt:
        raise CheckpointError(
            f"{path!r} is not a {fmt} checkpoint: its keys look like "
            f"{detected or 'none of the supported formats'} ({_describe_keys(sd.keys())})")
    if fmt == "diffusers":
        raise CheckpointError(f"{path!r} holds diffusers UNet2DModel weights; load the folder "
                              f"that holds it with its config.json instead")
    mod = _format_module(fmt)
    cfg, cfg_notes = _resolve_config(mod, sd, config, entry, sidecar, kw.get("image_size"))
    notes += cfg_notes
    if sidecar is not None or isinstance(config, dict):     # settings not read from the weights
        where = (f"the config {os.path.join(os.path.dirname(os.fspath(path)), 'config.json')!r}"
                 if sidecar is not None and not isinstance(config, dict) else "the config")
        check_against_weights(fmt, mod, cfg, sd, where,
                              CheckpointError if sidecar is not None else ParameterError)
    if fmt in ("adm", "cm"):
        # the reference runs the ADM torso in float16 (use_fp16); dmir keeps float32 weights
        # unless float16 is asked for
        cfg = dict(cfg, use_fp16=(dtype == torch.float16))
    net = _build(mod, cfg)
    if hasattr(mod, "select_weights"):   # ldm: EMA copies of the UNet, schedule buffers
        sd = mod.select_weights(sd, cfg, notes, ema=kw.get("ema", True))
    fit_state_dict(net, sd, f"checkpoint {path!r}", dtype, device)
    info = {"format": fmt, "path": os.fspath(path), "config": cfg, "notes": notes}
    name = entry.name if entry is not None else os.path.basename(os.fspath(path))
    prior = mod.prior(net, cfg, **_prior_kw(kw), name=name, info=info)
    prior.size_multiple = (mod.size_multiple(cfg) if hasattr(mod, "size_multiple") else
                           1 if fmt in _USER_FORMATS else
                           2 ** (len(cfg["ch_mult" if fmt == "ddpm" else "channel_mult"]) - 1))
    if dtype is not None:
        prior.compute_dtype = dtype
    inferred = [n for n in cfg_notes if n]
    if inferred and config is None and sidecar is None and entry is None:
        warnings.warn(f"{name}: configuration inferred from the state dict: "
                      + "; ".join(inferred), InferredConfigWarning, stacklevel=3)
    return prior


def _resolve_config(mod, sd, config, entry, sidecar, image_size):
    """(full config, notes) by precedence: explicit > registry/sidecar > inferred."""
    if isinstance(config, str):
        if config not in mod.CONFIGS:
            raise UnknownNameError(f"unknown {mod.FORMAT} config {config!r}; named configs: "
                                   f"{', '.join(mod.CONFIGS)}")
        return dict(mod.CONFIGS[config]), [f"config {config} (given)"]
    if entry is not None and entry.config is not None:
        base, notes = dict(mod.CONFIGS[entry.config]), [f"config {entry.config} (registry)"]
    elif sidecar is not None:
        base, notes = mod.full_config(sidecar), ["config from config.json"]
    else:
        kws = {"image_size": image_size} if image_size is not None else {}
        base, notes = mod.infer_config(sd, **kws)
    if config is not None:
        if not isinstance(config, dict):
            raise ParameterError(f"config must be a named config or a dict, got "
                                 f"{type(config).__name__}")
        check_bounds(config, "config=")
        base = mod.full_config({**base, **config})
        notes = notes + [f"overridden: {', '.join(sorted(config))}"]
    return base, notes


def num_parameters(fmt: str, config) -> int:
    """Parameter count of a configuration, built on the meta device (no memory)."""
    mod = _format_module(_canonical_format(fmt))
    cfg = mod.CONFIGS[config] if isinstance(config, str) else mod.full_config(config)
    return sum(p.numel() for p in _build(mod, cfg).parameters())


__all__ = ["load", "detect_format", "num_parameters", "ModelNotFoundError", "NetworkPrior",
           "InferredConfigWarning", "FORMATS", "register_format", "formats"]
