"""diffusers ``UNet2DModel`` folders (``config.json`` + weights, with a scheduler config).

Pixel-space noise predictors published in the Hugging Face diffusers layout, for example the
DDPM checkpoints of Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020
(arXiv 2006.11239) converted by the diffusers team (``google/ddpm-ema-celebahq-256``,
``google/ddpm-cifar10-32``, ``google/ddpm-ema-church-256`` …), and models trained with the
diffusers training scripts. The samplers that consume them are those of DDIM (Song, Meng &
Ermon, ICLR 2021, arXiv 2010.02502) and the restoration methods built on it.

The network is diffusers' own ``UNet2DModel`` (an optional dependency, imported lazily:
``pip install 'dmir[diffusers]'``); this module only turns it into the ``forward(x, t, y=None)``
protocol of :mod:`dmir.models.network` and turns the scheduler config into ᾱ_t. It reads no
files: the loader passes the parsed ``config.json``, the parsed scheduler config and the state
dict.

Folder layouts (see :func:`find_scheduler_config`):

- flat model repo — ``config.json`` (the UNet), ``diffusion_pytorch_model.safetensors`` or
  ``diffusion_pytorch_model.bin``, ``scheduler_config.json`` next to them, ``model_index.json``;
  this is the current layout of ``google/ddpm-ema-celebahq-256`` (its first commits used the
  pipeline layout below, with ``unet/diffusion_model.pt``);
- pipeline repo — ``model_index.json``, ``unet/config.json`` + ``unet/diffusion_pytorch_model.*``
  and ``scheduler/scheduler_config.json``.

Tensors: x (B, in_channels, H, W) in [-1, 1] (``center_input_sample`` configs take [0, 1] and
centre internally); t (B,) timesteps 0..T-1; output (B, out_channels, H, W).
"""
from __future__ import annotations

import functools
import re
from typing import Any
from collections.abc import Iterable, Mapping

import torch

from ..errors import ParameterError
from .base import cosine_betas, make_schedule
from .network import PREDICTIONS

FORMAT = "diffusers"
INSTALL_HINT = "install it with: pip install 'dmir[diffusers]'"

#: Weight file names of a diffusers model folder, in order of preference.
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                "diffusion_model.pt")

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")

#: diffusers' scheduler defaults (DDPMScheduler/DDIMScheduler), used for absent fields.
SCHEDULER_DEFAULTS = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
                      "beta_schedule": "linear", "trained_betas": None,
                      "prediction_type": "epsilon"}

# schedulers of variance-exploding or continuous-time models: not an ε(x_t, t) with ᾱ_t
_NOT_DISCRETE_VP = ("ScoreSdeVeScheduler", "KarrasVeScheduler", "ScoreSdeVpScheduler",
                    "CMStochasticIterativeScheduler")


def _require_diffusers():
    try:
        import diffusers
    except ImportError:
        raise ParameterError(f"loading diffusers model folders needs the diffusers library; "
                             f"{INSTALL_HINT}") from None
    return diffusers


@functools.lru_cache(maxsize=None)
def _unet_class():
    """``UNet2DModel`` with the dmir forward protocol (same parameters and state-dict keys)."""
    UNet2DModel = _require_diffusers().UNet2DModel

    class DmirUNet2DModel(UNet2DModel):
        """diffusers ``UNet2DModel`` whose ``forward(x, t, y=None)`` returns the output tensor."""

        def forward(self, x, t, y=None):  # noqa: D401 - protocol of dmir.models.network
            if self.config.time_embedding_type == "learned":
                t = torch.as_tensor(t, device=x.device).long()   # an nn.Embedding lookup
            return super().forward(x, t, class_labels=y, return_dict=False)[0]

    return DmirUNet2DModel


def _check_unet_config(unet_config) -> dict:
    if not isinstance(unet_config, Mapping):
        raise ParameterError(f"the UNet config must be a dict (parsed config.json), got "
                             f"{type(unet_config).__name__}")
    name = unet_config.get("_class_name", "UNet2DModel")
    if name != "UNet2DModel":
        raise ParameterError(f"only diffusers UNet2DModel folders are supported (unconditional "
                             f"or class-conditional pixel-space models); this config is "
                             f"{name!r}")
    return dict(unet_config)


def build(unet_config: Mapping):
    """``UNet2DModel.from_config(unet_config)`` with ``forward(x, t, y=None) -> (B, C', H, W)``.

    ``y`` (B,) int64 class labels go to ``class_labels`` (``num_class_embeds`` models).
    The module's ``state_dict()`` keys are diffusers' (``conv_in.weight``,
    ``down_blocks.0.resnets.0.norm1.weight`` …); older checkpoints need
    :func:`normalize_state_dict` first. Works under ``with torch.device("meta"):``.
    """
    cfg = _check_unet_config(unet_config)
    try:
        return _unet_class().from_config(cfg)
    except (TypeError, ValueError, KeyError) as e:
        raise ParameterError(f"invalid UNet2DModel config: {e}") from None


_DEPRECATED_ATTN = re.compile(r"^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$")
_NEW_NAME = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def normalize_state_dict(state_dict: Mapping) -> tuple[dict, list[str]]:
    """Rename the attention keys of checkpoints saved before diffusers' attention refactor.

    The 2022 conversions (``google/ddpm-*``) store ``….attentions.N.query/key/value/proj_attn``;
    current ``UNet2DModel`` names them ``to_q/to_k/to_v/to_out.0`` (shapes unchanged; diffusers'
    ``from_pretrained`` does the same renaming). ``module.`` prefixes are removed too.
    Returns (state dict, notes).
    """
    out, renamed, prefixed = {}, 0, 0
    for k, v in state_dict.items():
        nk = k
        while nk.startswith("module."):
            nk = nk[len("module."):]
        prefixed += nk != k
        m = _DEPRECATED_ATTN.match(nk)
        if m:
            nk = f"{m.group(1)}.{_NEW_NAME[m.group(2)]}.{m.group(3)}"
            renamed += 1
        out[nk] = v
    notes = []
    if renamed:
        notes.append(f"renamed {renamed} deprecated attention keys (query/key/value/proj_attn "
                     f"-> to_q/to_k/to_v/to_out.0)")
    if prefixed:
        notes.append(f"removed the 'module.' prefix from {prefixed} keys")
    return out, notes


def matches(keys) -> bool:
    """Whether state-dict ``keys`` look like a diffusers ``UNet2DModel``."""
    ks = set(keys)
    return ("conv_in.weight" in ks and "time_embedding.linear_1.weight" in ks
            and any(k.startswith("down_blocks.0.") for k in ks))


def find_scheduler_config(files: Iterable[str], unet_dir: str = "") -> str | None:
    """The scheduler config among a model folder's ``files`` (relative POSIX paths), or None.

    Pure path logic — the caller lists the folder. Looked for, in order:
    ``{unet_dir}/scheduler_config.json`` (flat repos such as ``google/ddpm-ema-celebahq-256``:
    next to the UNet's ``config.json``), then ``scheduler/scheduler_config.json`` at the pipeline
    root (pipeline repos: ``unet/`` and ``scheduler/`` subfolders; when ``unet_dir`` is
    ``unet`` the root is its parent), then ``{unet_dir}/scheduler/scheduler_config.json``.
    """
    fs = {f.replace("\\", "/").removeprefix("./") for f in files}
    d = unet_dir.strip("/")
    parent = d.rsplit("/", 1)[0] if "/" in d else ""
    join = lambda *p: "/".join(x for x in p if x)  # noqa: E731
    for cand in (join(d, "scheduler_config.json"),
                 join(parent, "scheduler", "scheduler_config.json"),
                 join(d, "scheduler", "scheduler_config.json")):
        if cand in fs:
            return cand
    return None


def _betas(sc: dict) -> torch.Tensor:
    T = int(sc["num_train_timesteps"])
    if sc.get("trained_betas") is not None:
        return torch.as_tensor(sc["trained_betas"], dtype=torch.float64).reshape(-1)
    b0, b1 = float(sc["beta_start"]), float(sc["beta_end"])
    kind = sc["beta_schedule"]
    if kind == "linear":
        return torch.linspace(b0, b1, T, dtype=torch.float64)
    if kind == "scaled_linear":           # latent-diffusion schedule: linspace of √β, squared
        return torch.linspace(b0 ** 0.5, b1 ** 0.5, T, dtype=torch.float64) ** 2
    if kind == "squaredcos_cap_v2":       # improved-DDPM cosine, s = 0.008, β ≤ 0.999
        return cosine_betas(T, s=0.008, max_beta=0.999)
    if kind == "sigmoid":                 # GeoDiff
        return torch.sigmoid(torch.linspace(-6, 6, T, dtype=torch.float64)) * (b1 - b0) + b0
    raise ParameterError(f"beta_schedule must be one of {', '.join(BETA_SCHEDULES)}, "
                         f"got {kind!r}")


def schedule(scheduler_config: Mapping | None, unet_config: Mapping | None = None
             ) -> tuple[torch.Tensor, str, list[str]]:
    """(ᾱ_t float64 (T,), prediction_type, notes) from a parsed ``scheduler_config.json``.

    Uses ``num_train_timesteps``, ``beta_start``, ``beta_end``, ``beta_schedule`` (linear,
    scaled_linear, squaredcos_cap_v2, sigmoid), ``trained_betas`` and ``prediction_type``
    (epsilon, sample, v_prediction), with diffusers' defaults for absent fields. Sampler options
    (``clip_sample``, ``timestep_spacing``, ``variance_type`` …) do not change ᾱ and are ignored.
    Without a scheduler config: linear 1e-4..0.02 over 1000 steps (or the UNet config's
    ``num_train_timesteps``), epsilon prediction, and a note saying so.
    """
    notes: list[str] = []
    if scheduler_config is None:
        sc: dict[str, Any] = dict(SCHEDULER_DEFAULTS)
        T = (unet_config or {}).get("num_train_timesteps")
        if T:
            sc["num_train_timesteps"] = int(T)
        notes.append(f"no scheduler config: assumed the DDPM schedule (linear betas 1e-4..0.02, "
                     f"{sc['num_train_timesteps']} steps, epsilon prediction)")
    else:
        if not isinstance(scheduler_config, Mapping):
            raise ParameterError(f"the scheduler config must be a dict (parsed "
                                 f"scheduler_config.json), got {type(scheduler_config).__name__}")
        cls = scheduler_config.get("_class_name")
        if cls in _NOT_DISCRETE_VP:
            raise ParameterError(f"{cls} models are not discrete-time ε-prediction models with a "
                                 f"beta schedule; dmir loads DDPM-style (beta-schedule) "
                                 f"diffusers folders")
        sc = {**SCHEDULER_DEFAULTS,
              **{k: v for k, v in scheduler_config.items() if v is not None}}
        if sc.get("rescale_betas_zero_snr"):
            raise ParameterError("rescale_betas_zero_snr schedules (ᾱ_T = 0) are not supported")
        kind = "trained_betas" if sc["trained_betas"] is not None else sc["beta_schedule"]
        notes.append(f"schedule from {cls or 'the scheduler config'}: {kind}, "
                     f"{sc['num_train_timesteps']} steps, {sc['prediction_type']} prediction")
    pred = sc["prediction_type"]
    if pred not in PREDICTIONS:
        raise ParameterError(f"prediction_type must be one of {', '.join(PREDICTIONS)}, "
                             f"got {pred!r}")
    try:
        T = int(sc["num_train_timesteps"])
    except (TypeError, ValueError):
        raise ParameterError(f"num_train_timesteps must be an integer, got "
                             f"{sc['num_train_timesteps']!r}") from None
    if T < 1:
        raise ParameterError(f"num_train_timesteps must be >= 1, got {T}")
    betas = _betas(sc)
    if betas.shape[0] != T:
        notes.append(f"trained_betas has {betas.shape[0]} entries (num_train_timesteps says "
                     f"{T}): using the trained betas")
    return make_schedule(betas), pred, notes


def prior(net, unet_config: Mapping, scheduler_config: Mapping | None = None, **kw):
    """``net`` (from :func:`build`, weights loaded) as a :class:`NetworkPrior`.

    Channels, ``sample_size`` and ``num_class_embeds`` come from ``unet_config``; ᾱ and the
    prediction type from :func:`schedule` (NetworkPrior converts x̂0 / v outputs to ε); an
    output with twice the input channels is a learned-variance model (first half used).
    ``kw`` go to NetworkPrior (``name``, ``class_labels``, ``compute_dtype``, ``info`` …).
    """
    from .network import NetworkPrior

    uc = _check_unet_config(unet_config)
    if uc.get("time_embedding_type", "positional") == "fourier":
        raise ParameterError("UNet2DModel with Fourier time embedding (score-SDE NCSN++) takes "
                             "noise levels, not DDPM timesteps; it is not supported")
    if uc.get("class_embed_type") is not None and uc.get("num_class_embeds") is None:
        raise ParameterError(f"class_embed_type {uc['class_embed_type']!r} conditions on "
                             f"continuous values; only num_class_embeds label conditioning "
                             f"is supported")
    ab, pred, notes = schedule(scheduler_config, uc)
    c_in, c_out = int(uc.get("in_channels", 3)), int(uc.get("out_channels", 3))
    if c_out not in (c_in, 2 * c_in):
        raise ParameterError(f"out_channels ({c_out}) must be in_channels ({c_in}) or twice "
                             f"that (learned variance)")
    info = {"format": FORMAT, "unet_config": uc, "scheduler_config": scheduler_config,
            "notes": notes, **kw.pop("info", {})}
    kw.setdefault("name", FORMAT)
    n_cls = uc.get("num_class_embeds")
    return NetworkPrior(net, ab, in_channels=c_in, image_size=uc.get("sample_size"),
                        prediction=pred, learned_sigma=c_out == 2 * c_in,
                        num_classes=int(n_cls) if n_cls is not None else None, info=info, **kw)
