"""The DDPM "simple" UNet, loading the original checkpoints with their keys unchanged.

This is the noise-prediction network of

- Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020 (arXiv 2006.11239),
  in its PyTorch port (pesser/pytorch_diffusion: the converted CIFAR-10 and LSUN
  bedroom/church/cat checkpoints),
- Song, Meng & Ermon, "Denoising Diffusion Implicit Models", ICLR 2021 (arXiv 2010.02502),
  whose code (ermongroup/ddim, ``models/diffusion.py`` class ``Model``) trains and loads it,
- Meng et al., "SDEdit: Guided Image Synthesis and Editing with Stochastic Differential
  Equations", ICLR 2022 (arXiv 2108.01073), which released ``celeba_hq.ckpt`` — the CelebA-HQ
  256×256 prior used by DDRM, DDNM, EquS and DeqIR for their face experiments.

Architecture (all from the checkpoints' structure; nothing here reads files):

- sinusoidal timestep embedding of width ``ch`` (sin half first, then cos; frequencies
  10000^(-i/(ch/2 - 1))), then Linear(ch, 4ch) → swish → Linear(4ch, 4ch) (``temb.dense.0/1``);
- ``conv_in`` 3×3, then ``len(ch_mult)`` levels of ``num_res_blocks`` residual blocks
  (GroupNorm(32, eps=1e-6) → swish → conv3×3, + projected embedding, GroupNorm → swish → dropout
  → conv3×3, 1×1 ``nin_shortcut`` when the width changes), single-head self-attention after each
  block of a level whose resolution is in ``attn_resolutions`` (1×1 convs ``q``/``k``/``v``/
  ``proj_out``, logits scaled by c^(-1/2)), and between levels a stride-2 3×3 conv after a
  zero pad of one pixel on the right and bottom only (``resamp_with_conv``) or a 2×2 average pool;
- middle: block, attention, block (``mid.block_1``, ``mid.attn_1``, ``mid.block_2``);
- decoder: per level ``num_res_blocks + 1`` blocks fed with the concatenated skip activations,
  the same attention rule, nearest-neighbour ×2 upsampling (+ 3×3 conv); ``norm_out`` → swish →
  ``conv_out``.
- ``type: bayesian`` adds a learned per-timestep ``logvar`` parameter (T,), not used for ε.

Checkpoint layouts handled by :func:`normalize_state_dict` (verified in the reference code):

- SDEdit / DDNM / DDRM ``celeba_hq.ckpt`` and the pytorch_diffusion LSUN/CIFAR-10 files
  (``ema_diffusion_lsun_bedroom_model/model-2388000.ckpt`` …): a plain state dict, loaded with a
  strict ``load_state_dict`` into the bare model, so the keys carry no prefix;
- DDIM training checkpoints (``ckpt.pth``, ``ckpt_{step}.pth``): a list
  ``[model_state, optimizer_state, epoch, step]`` with ``ema_state`` appended when
  ``config.model.ema`` is set; ``model_state`` comes from an ``nn.DataParallel`` wrapper
  (``module.`` prefix), the EMA shadow is keyed by the unwrapped parameter names. The DDIM
  sampler loads ``states[0]`` and then overwrites it with the EMA shadow ``states[-1]``.

Tensors: images (B, in_channels, H, W) in [-1, 1]; H and W divisible by 2^(len(ch_mult)-1);
timesteps (B,) float step indices 0..T-1; output (B, out_ch, H, W), the predicted noise ε.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ParameterError, ShapeError
from .base import make_schedule

FORMAT = "ddpm"

#: The ``model:`` section of the DDIM/SDEdit yaml configs (with the CelebA-HQ/LSUN values),
#: plus ``image_size`` (their ``data.image_size``) and the ``diffusion:`` section.
DEFAULTS: dict = {
    "type": "simple",            # "simple" or "bayesian" (adds the learned ``logvar`` (T,))
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 1, 2, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [16],   # feature-map sizes (pixels) where attention is applied
    "dropout": 0.0,
    "var_type": "fixedsmall",    # sampler variance (fixedsmall / fixedlarge); not used for ε
    "ema_rate": 0.999,           # training-only fields, kept so whole yaml sections validate
    "ema": True,
    "resamp_with_conv": True,
    "image_size": 256,
    "num_diffusion_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    # dmir's extension (absent from the published yaml files): what the network outputs,
    # "epsilon" (every published DDPM checkpoint) or "v_prediction" (v = √ᾱ ε − √(1−ᾱ) x0,
    # dmir-trained priors); NetworkPrior converts either to ε.
    "prediction": "epsilon",
}

_LSUN = {"ch": 128, "ch_mult": [1, 1, 2, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [16],
         "dropout": 0.0, "var_type": "fixedsmall", "ema_rate": 0.999, "image_size": 256}

#: Named configurations of the published checkpoints (from SDEdit ``configs/celeba.yml``,
#: DDNM ``configs/{celeba_hq,bedroom,church,cat}.yml``, DDIM ``configs/cifar10.yml`` and
#: ``Diffusion.from_pretrained`` of pytorch_diffusion). Linear β 1e-4..0.02, T = 1000.
CONFIGS: dict[str, dict] = {
    "ddpm-celebahq256": {**DEFAULTS, **_LSUN},
    "ddpm-cifar10": {**DEFAULTS, "ch": 128, "ch_mult": [1, 2, 2, 2], "num_res_blocks": 2,
                     "attn_resolutions": [16], "dropout": 0.1, "var_type": "fixedlarge",
                     "ema_rate": 0.9999, "image_size": 32},
    "ddpm-lsun-bedroom256": {**DEFAULTS, **_LSUN},
    "ddpm-lsun-church256": {**DEFAULTS, **_LSUN},
    "ddpm-lsun-cat256": {**DEFAULTS, **_LSUN},
}

#: Parameter counts of :data:`CONFIGS` (measured with :func:`build` on the meta device).
PARAM_COUNTS: dict[str, int] = {
    "ddpm-celebahq256": 113_673_219,
    "ddpm-cifar10": 35_746_307,
    "ddpm-lsun-bedroom256": 113_673_219,
    "ddpm-lsun-church256": 113_673_219,
    "ddpm-lsun-cat256": 113_673_219,
}

_TYPES = ("simple", "bayesian")
_VAR_TYPES = ("fixedsmall", "fixedlarge")
_BETA_SCHEDULES = ("linear", "quad", "const", "sigmoid")


# ---------------------------------------------------------------------------------- config
def _pos_int(name, v, minimum=1):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _int_list(name, v, minimum=1, allow_empty=False):
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, (list, tuple)) or (not v and not allow_empty):
        raise ParameterError(f"{name} must be a {'' if allow_empty else 'non-empty '}list of "
                             f"integers, got {v!r}")
    return [_pos_int(f"{name} entries", x, minimum) for x in v]


def _flatten_yaml(cfg: Mapping) -> dict:
    """A whole DDIM/SDEdit yaml (``model:``, ``data:``, ``diffusion:`` sections) → flat dict."""
    flat = dict(cfg["model"])
    data = cfg.get("data") or {}
    if "image_size" in data:
        flat["image_size"] = data["image_size"]
    if "channels" in data and "in_channels" not in flat:
        flat["in_channels"] = data["channels"]
    flat.update(cfg.get("diffusion") or {})
    return flat


def full_config(config: Mapping | None = None) -> dict:
    """All fields of :data:`DEFAULTS`, filled in and validated.

    Args:
        config: ``None`` (the CelebA-HQ defaults), a flat dict of :data:`DEFAULTS` keys, or a
            parsed DDIM/SDEdit yaml with ``model:``/``data:``/``diffusion:`` sections (other
            sections such as ``training:`` are ignored).

    Raises:
        ParameterError: unknown keys (the message lists the allowed ones) or invalid values.
    """
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise ParameterError(f"a ddpm config must be a dict, got {type(config).__name__}")
    if isinstance(config.get("model"), Mapping):
        config = _flatten_yaml(config)
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ParameterError(f"unknown ddpm config key(s) {', '.join(map(repr, unknown))}; "
                             f"allowed: {', '.join(DEFAULTS)}")
    c = {**DEFAULTS, **config}
    out = dict(c)
    if c["type"] not in _TYPES:
        raise ParameterError(f"type must be one of {', '.join(_TYPES)}, got {c['type']!r}")
    if c["var_type"] not in _VAR_TYPES:
        raise ParameterError(f"var_type must be one of {', '.join(_VAR_TYPES)}, "
                             f"got {c['var_type']!r}")
    for k in ("in_channels", "out_ch", "ch", "num_res_blocks", "image_size",
              "num_diffusion_timesteps"):
        out[k] = _pos_int(k, c[k])
    out["ch_mult"] = _int_list("ch_mult", c["ch_mult"])
    out["attn_resolutions"] = _int_list("attn_resolutions", c["attn_resolutions"],
                                        allow_empty=True)
    for m in out["ch_mult"]:
        if (out["ch"] * m) % 32:
            raise ParameterError(f"every ch * ch_mult must be divisible by 32 (GroupNorm with 32 "
                                 f"groups); got ch={out['ch']}, ch_mult={out['ch_mult']}")
    if out["ch"] % 32:
        raise ParameterError(f"ch must be divisible by 32 (GroupNorm with 32 groups), "
                             f"got {out['ch']}")
    try:
        out["dropout"] = float(c["dropout"])
    except (TypeError, ValueError):
        raise ParameterError(f"dropout must be a number in [0, 1), got {c['dropout']!r}") from None
    if not 0.0 <= out["dropout"] < 1.0:
        raise ParameterError(f"dropout must be in [0, 1), got {c['dropout']!r}")
    for k in ("resamp_with_conv", "ema"):
        if not isinstance(c[k], bool):
            raise ParameterError(f"{k} must be true or false, got {c[k]!r}")
    if c["prediction"] not in ("epsilon", "v_prediction"):
        raise ParameterError(f"prediction must be 'epsilon' or 'v_prediction', "
                             f"got {c['prediction']!r}")
    if c["beta_schedule"] not in _BETA_SCHEDULES:
        raise ParameterError(f"beta_schedule must be one of {', '.join(_BETA_SCHEDULES)}, "
                             f"got {c['beta_schedule']!r}")
    for k in ("beta_start", "beta_end", "ema_rate"):
        try:
            out[k] = float(c[k])
        except (TypeError, ValueError):
            raise ParameterError(f"{k} must be a number, got {c[k]!r}") from None
    if not 0 < out["beta_start"] <= out["beta_end"] < 1:
        raise ParameterError(f"need 0 < beta_start <= beta_end < 1, got beta_start="
                             f"{c['beta_start']!r}, beta_end={c['beta_end']!r}")
    return out


def schedule(config: Mapping | None = None) -> torch.Tensor:
    """ᾱ_t (float64, length ``num_diffusion_timesteps``) of the config's β schedule.

    β as in the DDIM code's ``get_beta_schedule``: ``linear`` linspace(β0, β1, T), ``quad``
    linspace(√β0, √β1, T)², ``const`` β1, ``sigmoid`` σ(linspace(-6, 6, T))·(β1-β0)+β0.
    """
    c = full_config(config)
    T, b0, b1 = c["num_diffusion_timesteps"], c["beta_start"], c["beta_end"]
    kind = c["beta_schedule"]
    if kind == "linear":
        betas = torch.linspace(b0, b1, T, dtype=torch.float64)
    elif kind == "quad":
        betas = torch.linspace(b0 ** 0.5, b1 ** 0.5, T, dtype=torch.float64) ** 2
    elif kind == "const":
        betas = torch.full((T,), b1, dtype=torch.float64)
    else:  # sigmoid
        betas = torch.sigmoid(torch.linspace(-6, 6, T, dtype=torch.float64)) * (b1 - b0) + b0
    return make_schedule(betas)


# ---------------------------------------------------------------------------------- network
def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6, affine=True)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding (B,) → (B, dim), float32: [sin(t ω_i), cos(t ω_i)], i < dim/2,
    ω_i = 10000^(-i/(dim/2 - 1)); an odd ``dim`` gets a zero last column."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device)
                      * -(math.log(10000) / (half - 1)))
    arg = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class Upsample(nn.Module):
    """Nearest-neighbour ×2, then a 3×3 conv (``conv``) if ``with_conv``."""

    def __init__(self, c: int, with_conv: bool):
        super().__init__()
        if with_conv:
            self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if hasattr(self, "conv") else x


class Downsample(nn.Module):
    """÷2: zero pad (left 0, right 1, top 0, bottom 1) + 3×3 stride-2 conv, or 2×2 avg-pool."""

    def __init__(self, c: int, with_conv: bool):
        super().__init__()
        if with_conv:
            self.conv = nn.Conv2d(c, c, 3, 2, 0)

    def forward(self, x):
        if hasattr(self, "conv"):
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return F.avg_pool2d(x, 2, 2)


class ResnetBlock(nn.Module):
    """GroupNorm → swish → conv, + Linear(swish(temb)), GroupNorm → swish → dropout → conv;
    residual through a 1×1 ``nin_shortcut`` when ``c_in != c_out``."""

    def __init__(self, c_in: int, c_out: int, temb_ch: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.temb_proj = nn.Linear(temb_ch, c_out)
        self.norm2 = _norm(c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        if c_in != c_out:
            self.nin_shortcut = nn.Conv2d(c_in, c_out, 1, 1, 0)

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1×1-conv projections, logits × c^(-1/2)."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = _norm(c)
        self.q = nn.Conv2d(c, c, 1)
        self.k = nn.Conv2d(c, c, 1)
        self.v = nn.Conv2d(c, c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.norm(x)
        # (B, 1, HW, C) each: one head over all positions
        q, k, v = (m(h).reshape(B, 1, C, H * W).transpose(-1, -2) for m in (self.q, self.k,
                                                                               self.v))
        a = F.scaled_dot_product_attention(q, k, v, scale=int(C) ** (-0.5))
        a = a.transpose(-1, -2).reshape(B, C, H, W)
        return x + self.proj_out(a)


class _Node(nn.Module):
    """A bare container (``temb``, ``mid``, one level of ``down``/``up`` with ``block``,
    ``attn`` and ``downsample``/``upsample``) so that the keys match the original."""

    if TYPE_CHECKING:   # its children are set dynamically
        def __getattr__(self, name: str) -> Any: ...


class DDPMUNet(nn.Module):
    """The DDPM/DDIM/SDEdit UNet; ``state_dict()`` keys equal the original checkpoints'.

    ``forward(x, t, y=None)``: x (B, in_channels, H, W), t (B,) float step indices (a scalar
    is broadcast), ``y`` must be ``None`` (unconditional); returns ε (B, out_ch, H, W).
    """

    temb: _Node          # containers of dynamically named children (see _Node)
    mid: _Node
    down: Any            # ModuleList of _Node levels
    up: Any

    def __init__(self, config: Mapping | None = None):
        super().__init__()
        c = self.config = full_config(config)
        ch, ch_mult, nrb = c["ch"], tuple(c["ch_mult"]), c["num_res_blocks"]
        drop, conv_rs = c["dropout"], c["resamp_with_conv"]
        self.ch, self.temb_ch = ch, 4 * ch
        self.num_resolutions, self.num_res_blocks = len(ch_mult), nrb
        self.in_channels, self.resolution = c["in_channels"], c["image_size"]
        if c["type"] == "bayesian":
            self.logvar = nn.Parameter(torch.zeros(c["num_diffusion_timesteps"]))

        self.temb = _Node()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, self.temb_ch),
                                         nn.Linear(self.temb_ch, self.temb_ch)])
        self.conv_in = nn.Conv2d(c["in_channels"], ch, 3, 1, 1)

        res = c["image_size"]
        attn_res = set(c["attn_resolutions"])
        in_mult = (1,) + ch_mult
        self.down = nn.ModuleList()
        b_in = ch
        for i, m in enumerate(ch_mult):
            lvl = _Node()
            lvl.block, lvl.attn = nn.ModuleList(), nn.ModuleList()
            b_in, b_out = ch * in_mult[i], ch * m
            for _ in range(nrb):
                lvl.block.append(ResnetBlock(b_in, b_out, self.temb_ch, drop))
                b_in = b_out
                if res in attn_res:
                    lvl.attn.append(AttnBlock(b_in))
            if i != len(ch_mult) - 1:
                lvl.downsample = Downsample(b_in, conv_rs)
                res //= 2
            self.down.append(lvl)

        self.mid = _Node()
        self.mid.block_1 = ResnetBlock(b_in, b_in, self.temb_ch, drop)
        self.mid.attn_1 = AttnBlock(b_in)
        self.mid.block_2 = ResnetBlock(b_in, b_in, self.temb_ch, drop)

        up: list[Any] = [None] * len(ch_mult)
        for i in reversed(range(len(ch_mult))):
            lvl = _Node()
            lvl.block, lvl.attn = nn.ModuleList(), nn.ModuleList()
            b_out = ch * ch_mult[i]
            for j in range(nrb + 1):
                skip = ch * (in_mult[i] if j == nrb else ch_mult[i])
                lvl.block.append(ResnetBlock(b_in + skip, b_out, self.temb_ch, drop))
                b_in = b_out
                if res in attn_res:
                    lvl.attn.append(AttnBlock(b_in))
            if i != 0:
                lvl.upsample = Upsample(b_in, conv_rs)
                res *= 2
            up[i] = lvl
        self.up = nn.ModuleList(up)

        self.norm_out = _norm(b_in)
        self.conv_out = nn.Conv2d(b_in, c["out_ch"], 3, 1, 1)

    def forward(self, x: torch.Tensor, t, y=None) -> torch.Tensor:
        if y is not None:
            raise ParameterError("the DDPM UNet is unconditional; it takes no class labels")
        f = 2 ** (self.num_resolutions - 1)
        if x.dim() != 4 or x.shape[-2] % f or x.shape[-1] % f:
            raise ShapeError(f"the DDPM UNet takes (B, {self.in_channels}, H, W) inputs with H "
                             f"and W divisible by {f}, got {tuple(x.shape)}")
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        dense = self.temb.dense
        temb = timestep_embedding(t, self.ch).to(dense[0].weight.dtype)
        temb = dense[1](F.silu(dense[0](temb)))

        hs = [self.conv_in(x)]
        for i, lvl in enumerate(self.down):
            for j, blk in enumerate(lvl.block):
                h = blk(hs[-1], temb)
                if len(lvl.attn):
                    h = lvl.attn[j](h)
                hs.append(h)
            if i != self.num_resolutions - 1:
                hs.append(lvl.downsample(hs[-1]))

        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], temb)), temb)

        for i in reversed(range(self.num_resolutions)):
            lvl = self.up[i]
            for j, blk in enumerate(lvl.block):
                h = blk(torch.cat([h, hs.pop()], dim=1), temb)
                if len(lvl.attn):
                    h = lvl.attn[j](h)
            if i != 0:
                h = lvl.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def build(config: Mapping | None = None) -> DDPMUNet:
    """The network for ``config`` (see :func:`full_config`), randomly initialised.

    Works under ``with torch.device("meta"):`` (counting parameters allocates nothing).
    """
    return DDPMUNet(config)


# ---------------------------------------------------------------------------------- checkpoints
_REQUIRED = ("temb.dense.0.weight", "conv_in.weight", "down.0.block.0.conv1.weight",
             "mid.attn_1.q.weight", "conv_out.weight")


def _strip(key: str) -> str:
    while key.startswith("module."):
        key = key[len("module."):]
    return key


def matches(keys) -> bool:
    """Whether state-dict ``keys`` look like this format (``module.`` prefixes tolerated)."""
    ks = {_strip(k) for k in keys}
    return all(k in ks for k in _REQUIRED)


def _is_state_dict(obj) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) for k in obj)
            and sum(isinstance(v, torch.Tensor) for v in obj.values()) >= len(obj) / 2)


_ENTRIES = (("ema", "EMA"), ("ema_model", "EMA"), ("ema_state_dict", "EMA"),
            ("state_dict", "model"), ("model", "model"), ("model_state_dict", "model"),
            ("net", "model"))


def normalize_state_dict(obj) -> tuple[dict, list[str]]:
    """A checkpoint object as ``torch.load`` returns it → (flat state dict, notes).

    Accepted: a state dict (``module.`` prefixes from DataParallel/DDP are removed); the DDIM
    training list ``[model, optimizer, epoch, step(, ema)]`` (the EMA shadow ``states[-1]``
    when present, else ``states[0]``); a dict with an ``ema``/``ema_model``/``ema_state_dict``
    entry (preferred) or ``state_dict``/``model``/``model_state_dict``/``net``. Non-tensor
    entries are dropped. Dtypes are left as stored.

    Raises:
        ParameterError: nothing resembling a state dict was found.
    """
    notes: list[str] = []
    sd = None
    if isinstance(obj, (list, tuple)):
        if len(obj) >= 5 and _is_state_dict(obj[-1]):
            sd = obj[-1]
            notes.append(f"DDIM training checkpoint (list of {len(obj)}): used the EMA weights "
                         f"(states[-1])")
        elif len(obj) >= 1 and _is_state_dict(obj[0]):
            sd = obj[0]
            notes.append(f"DDIM training checkpoint (list of {len(obj)}) without an EMA state: "
                         f"used the raw training weights (states[0])")
    elif _is_state_dict(obj):
        sd = obj
        notes.append("plain state dict")
    elif isinstance(obj, Mapping):
        for key, what in _ENTRIES:
            if key in obj and _is_state_dict(obj[key]):
                sd = obj[key]
                notes.append(f"dict checkpoint: used its {key!r} entry ({what} weights)")
                break
    if sd is None:
        kind = type(obj).__name__
        keys = f" with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else ""
        raise ParameterError(
            f"no state dict found in the checkpoint (a {kind}{keys}); expected a state dict, "
            f"a DDIM list [model, optimizer, epoch, step, ema] or a dict with one of the "
            f"entries {', '.join(k for k, _ in _ENTRIES)}")
    out, dropped, prefixed = {}, [], 0
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            dropped.append(k)
            continue
        nk = _strip(k)
        prefixed += nk != k
        out[nk] = v
    if prefixed:
        notes.append(f"removed the 'module.' (DataParallel) prefix from {prefixed} keys")
    if dropped:
        notes.append(f"dropped {len(dropped)} non-tensor entries ({', '.join(dropped[:4])})")
    return out, notes


def _indices(keys, prefix: str) -> list[int]:
    n = len(prefix)
    return sorted({int(k[n:].split(".", 1)[0]) for k in keys
                   if k.startswith(prefix) and k[n:].split(".", 1)[0].isdigit()})


def infer_config(state_dict: Mapping, image_size: int | None = None) -> tuple[dict, list[str]]:
    """The config of a (normalized) state dict, from tensor shapes only → (config, notes).

    Found from the weights: ``ch``, ``in_channels``, ``out_ch``, ``ch_mult``,
    ``num_res_blocks``, the levels with attention, ``resamp_with_conv`` (a ``downsample.conv``
    exists), ``type`` (``logvar`` exists → bayesian, its length → T). Attention *resolutions*
    are level sizes ``image_size // 2**level`` and so need ``image_size``: 256 unless given.
    ``dropout`` and the β schedule cannot be seen in weights (defaults: 0.0, linear).

    Raises:
        ParameterError: the keys are not those of this format or are inconsistent.
    """
    keys = [k for k in state_dict]
    if not matches(keys):
        missing = [k for k in _REQUIRED if k not in {_strip(k) for k in keys}]
        raise ParameterError(f"not a DDPM 'simple' UNet state dict: missing {', '.join(missing)}")
    sd = {_strip(k): v for k, v in state_dict.items()}
    notes: list[str] = []

    def shape(k):
        if k not in sd:
            raise ParameterError(f"inconsistent DDPM UNet state dict: {k!r} is missing")
        return tuple(sd[k].shape)

    ch, in_ch = shape("conv_in.weight")[:2]
    out_ch = shape("conv_out.weight")[0]
    levels = _indices(sd, "down.")
    if levels != list(range(len(levels))):
        raise ParameterError(f"inconsistent DDPM UNet state dict: down levels {levels}")
    ch_mult = []
    for i in levels:
        w = shape(f"down.{i}.block.0.conv1.weight")[0]
        if w % ch:
            raise ParameterError(f"level {i} width {w} is not a multiple of ch={ch}")
        ch_mult.append(w // ch)
    nrb = len(_indices(sd, "down.0.block."))
    if len(_indices(sd, "up.0.block.")) != nrb + 1:
        raise ParameterError(f"inconsistent DDPM UNet state dict: {nrb} down blocks but "
                             f"{len(_indices(sd, 'up.0.block.'))} up blocks at level 0 "
                             f"(expected {nrb + 1})")
    attn_levels = [i for i in levels if _indices(sd, f"down.{i}.attn.")]
    if image_size is None:
        image_size = DEFAULTS["image_size"]
        notes.append(f"image_size is not stored in the weights: assumed {image_size}, which "
                     f"fixes the attention resolutions (pass image_size= to change it)")
        if attn_levels:
            guess = 16 * 2 ** attn_levels[0]
            if guess != image_size:
                notes.append(f"the published DDPM models put attention at 16x16; if this one "
                             f"does too, its image size is {guess}")
    else:
        image_size = _pos_int("image_size", image_size)
    attn_res = [image_size // 2 ** i for i in attn_levels]
    if len(levels) > 1:
        resamp = "down.0.downsample.conv.weight" in sd
        if not resamp:
            notes.append("no downsample convs: average-pool downsampling (resamp_with_conv: "
                         "false)")
    else:
        resamp = DEFAULTS["resamp_with_conv"]
    config = {**DEFAULTS, "ch": ch, "in_channels": in_ch, "out_ch": out_ch,
              "ch_mult": ch_mult, "num_res_blocks": nrb, "attn_resolutions": attn_res,
              "resamp_with_conv": resamp, "image_size": image_size}
    if "logvar" in sd:
        config["type"] = "bayesian"
        config["num_diffusion_timesteps"] = int(shape("logvar")[0])
        notes.append(f"learned 'logvar' present: type bayesian, "
                     f"T = {config['num_diffusion_timesteps']}")
    notes.append("dropout and the beta schedule are not stored in the weights: using "
                 "dropout 0.0 and linear betas 1e-4..0.02 over T steps")
    return full_config(config), notes


def prior(net: nn.Module, config: Mapping | None = None, **kw):
    """``net`` (from :func:`build`, weights loaded) as a :class:`NetworkPrior` (ε from the
    network's ``prediction``: ε itself or v).

    ``kw`` go to :class:`~dmir.models.network.NetworkPrior` (``name``, ``compute_dtype``,
    ``info`` …); ``alphas_cumprod`` comes from :func:`schedule`.
    """
    from .network import NetworkPrior

    c = full_config(config)
    info = {"format": FORMAT, "config": c, **kw.pop("info", {})}
    kw.setdefault("name", FORMAT)
    learned = c["out_ch"] == 2 * c["in_channels"]
    if not learned and c["out_ch"] != c["in_channels"]:
        raise ParameterError(f"out_ch ({c['out_ch']}) must equal in_channels "
                             f"({c['in_channels']}) for a noise-prediction network")
    return NetworkPrior(net, schedule(c), in_channels=c["in_channels"],
                        image_size=c["image_size"], prediction=c["prediction"],
                        learned_sigma=learned, info=info, **kw)
