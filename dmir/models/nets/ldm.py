"""Latent diffusion (CompVis LDM) checkpoints as priors in latent space: :class:`LatentPrior`.

Reference: R. Rombach, A. Blattmann, D. Lorenz, P. Esser, B. Ommer, "High-Resolution Image
Synthesis with Latent Diffusion Models", CVPR 2022 (arXiv 2112.10752); code
github.com/CompVis/latent-diffusion: ``ldm/models/diffusion/ddpm.py`` (``LatentDiffusion``),
``ldm/modules/diffusionmodules/openaimodel.py`` (``UNetModel``), ``ldm/modules/attention.py``
(``SpatialTransformer``), ``ldm/modules/encoders/modules.py`` (``ClassEmbedder``),
``ldm/modules/ema.py`` (``LitEma``), configs ``configs/latent-diffusion/*.yaml``.

A latent diffusion model is a diffusion model on z = s·E(x), the scaled latents of a frozen
first-stage autoencoder (:mod:`dmir.models.nets.autoencoder`; s = ``scale_factor``, 1.0 for both
configs below); images are x = D(z / s). Its checkpoint (a Lightning ``model.ckpt``, weights
under ``state_dict``) holds, with these key prefixes:

* ``model.diffusion_model.*`` — the UNet (``UNetModel``: guided-diffusion's UNet plus
  ``SpatialTransformer`` cross-attention blocks; ε-prediction, ``parameterization: eps``);
* ``first_stage_model.*`` — the autoencoder (VQ-f4 for both models below);
* ``cond_stage_model.embedding.weight`` — ``ClassEmbedder`` of class-conditional models: the
  cross-attention context is embedding(y)[:, None] (B, 1, context_dim);
* ``model_ema.*`` — ``LitEma`` shadow copies of the UNet, named without dots
  (``model_ema.diffusion_modelinput_blocks00weight``) plus ``model_ema.decay`` /
  ``model_ema.num_updates``, present when trained with ``use_ema`` (the default).
  The official samplers run inside ``ema_scope()``, i.e. with these EMA weights, so dmir
  uses them when present (``ema=False`` takes the raw weights). Whether a released file still
  carries them could not be checked here (no download); both layouts load. ``cin256-v2``
  sets ``use_ema: False`` — its raw weights are the ones to use.
* schedule buffers (``betas``, ``alphas_cumprod``, ``posterior_*`` …) — dmir recomputes ᾱ
  from the config and checks it against ``alphas_cumprod`` when the checkpoint has it.

Noise schedule: LDM's "linear" is β_t = (linspace(√β_start, √β_end, T)_t)², with β_start =
0.0015, β_end = 0.0195 and T = 1000 in both configs.

Named configs (``configs/latent-diffusion/ffhq-ldm-vq-4.yaml`` and ``cin256-v2.yaml``):

* ``ldm-ffhq256-vq4`` — unconditional FFHQ 256, on VQ-f4 latents 3×64×64: UNet
  model_channels 224, channel_mult (1, 2, 3, 4), attention at downsampling 8, 4, 2 (latent
  resolutions 8, 16, 32) with 32 channels per head; 274.06 M UNet parameters (the paper's
  274 M) + 55.32 M for VQ-f4.
* ``ldm-cin256-v2`` — class-conditional ImageNet 256 (LDM-4, cross-attention): VQ-f4
  latents 3×64×64, model_channels 192, channel_mult (1, 2, 3, 5), one-head
  ``SpatialTransformer`` blocks (depth 1, context_dim 512) at downsampling 8, 4, 2;
  ``ClassEmbedder`` with 1001 classes, class 1000 being the null class that classifier-free
  guidance uses (and DCDP-LDM conditions on). 400.92 M UNet parameters (the paper's 400 M).
  Without ``class_labels`` the null class 1000 is used (unconditional).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ParameterError, ShapeError
from . import autoencoder as ae
from .adm import (AttentionBlock, Downsample, GroupNorm32, ResBlock, Upsample,
                  timestep_embedding)
from ..base import DiffusionModel
from ..network import NetworkPrior

FORMAT = "ldm"

_VQ_F4 = ae.CONFIGS["vq-f4"]
_UNET_DEFAULTS = {
    "image_size": 64, "in_channels": 3, "out_channels": 3, "model_channels": 128,
    "attention_resolutions": [], "num_res_blocks": 2, "channel_mult": [1, 2, 4, 8],
    "dropout": 0.0, "conv_resample": True, "num_classes": None, "num_heads": -1,
    "num_head_channels": -1, "num_heads_upsample": -1, "use_scale_shift_norm": False,
    "resblock_updown": False, "use_new_attention_order": False,
    "use_spatial_transformer": False, "transformer_depth": 1, "context_dim": None,
    "legacy": True,
}
#: ``UNetModel`` flags that do not change the network at inference (dropped)
_UNET_IGNORED = ("use_checkpoint", "use_fp16", "dims", "n_embed")

#: the top-level ``LatentDiffusion`` params dmir uses, plus ``unet`` (``unet_config.params``),
#: ``first_stage`` (an :mod:`~dmir.models.nets.autoencoder` config) and ``cond_stage``
#: (``{"n_classes", "embed_dim"}`` of a ``ClassEmbedder``, or None)
DEFAULTS = {
    "timesteps": 1000, "beta_schedule": "linear", "linear_start": 1e-4, "linear_end": 2e-2,
    "scale_factor": 1.0, "parameterization": "eps", "conditioning_key": None,
    "unet": _UNET_DEFAULTS, "first_stage": _VQ_F4, "cond_stage": None,
}

CONFIGS: dict = {
    "ldm-ffhq256-vq4": {
        "linear_start": 0.0015, "linear_end": 0.0195, "timesteps": 1000,
        "unet": {"image_size": 64, "in_channels": 3, "out_channels": 3, "model_channels": 224,
                 "attention_resolutions": [8, 4, 2], "num_res_blocks": 2,
                 "channel_mult": [1, 2, 3, 4], "num_head_channels": 32},
        "first_stage": _VQ_F4, "cond_stage": None},
    "ldm-cin256-v2": {
        "linear_start": 0.0015, "linear_end": 0.0195, "timesteps": 1000,
        "conditioning_key": "crossattn",
        "unet": {"image_size": 64, "in_channels": 3, "out_channels": 3, "model_channels": 192,
                 "attention_resolutions": [8, 4, 2], "num_res_blocks": 2,
                 "channel_mult": [1, 2, 3, 5], "num_heads": 1, "use_spatial_transformer": True,
                 "transformer_depth": 1, "context_dim": 512},
        "first_stage": _VQ_F4, "cond_stage": {"n_classes": 1001, "embed_dim": 512}},
}
#: the cin256-v2 ClassEmbedder's null class (``n_classes - 1``), used for classifier-free
#: guidance and as the default label here
NULL_CLASS = 1000

_SCHEDULE_BUFFERS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                     "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod",
                     "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
                     "posterior_variance", "posterior_log_variance_clipped",
                     "posterior_mean_coef1", "posterior_mean_coef2", "logvar", "lvlb_weights",
                     "scale_factor", "cond_ids")


# ---------------------------------------------------------------------------- configuration
def full_config(config: dict | None = None) -> dict:
    """A complete, validated config from a partial one (missing keys: ``DEFAULTS``)."""
    config = copy.deepcopy(dict(config or {}))
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ParameterError(f"unknown ldm config key(s) {', '.join(sorted(unknown))}; known: "
                             f"{', '.join(DEFAULTS)}")
    cfg = {**copy.deepcopy(DEFAULTS), **config}
    unet = {k: v for k, v in dict(config.get("unet") or {}).items() if k not in _UNET_IGNORED}
    bad = set(unet) - set(_UNET_DEFAULTS)
    if bad:
        raise ParameterError(f"unknown unet config key(s) {', '.join(sorted(bad))}; known: "
                             f"{', '.join(_UNET_DEFAULTS)}")
    u = {**_UNET_DEFAULTS, **unet}
    u["attention_resolutions"] = [int(r) for r in u["attention_resolutions"]]
    u["channel_mult"] = [int(m) for m in u["channel_mult"]]
    for k in ("in_channels", "out_channels", "model_channels", "num_res_blocks",
              "transformer_depth"):
        u[k] = int(u[k])
        if u[k] < 1:
            raise ParameterError(f"ldm unet {k} must be ≥ 1, got {u[k]}")
    if u["model_channels"] % 32:
        raise ParameterError(f"ldm unet model_channels must be a multiple of 32 (GroupNorm), "
                             f"got {u['model_channels']}")
    if u["num_heads"] == -1 and u["num_head_channels"] == -1:
        raise ParameterError("ldm unet: set num_heads or num_head_channels (as UNetModel asks)")
    if u["use_spatial_transformer"] != (u["context_dim"] is not None):
        raise ParameterError("ldm unet: use_spatial_transformer and context_dim go together")
    if u["num_classes"] is not None:
        raise ParameterError("ldm unet: num_classes (conditioning_key 'adm') is not supported; "
                             "class-conditional LDMs use a ClassEmbedder and cross-attention")
    if not u["legacy"]:
        raise ParameterError("ldm unet: only legacy=True (the UNetModel default) is supported")
    cfg["unet"] = u
    cfg["first_stage"] = ae.full_config(cfg["first_stage"])
    if cfg["first_stage"]["embed_dim"] != u["in_channels"]:
        raise ParameterError(f"the UNet takes {u['in_channels']} channels but the first stage "
                             f"gives {cfg['first_stage']['embed_dim']}")
    if cfg["beta_schedule"] != "linear" or cfg["parameterization"] != "eps":
        raise ParameterError("ldm: only beta_schedule 'linear' and parameterization 'eps' (both "
                             "released configs) are supported")
    if cfg["conditioning_key"] not in (None, "crossattn"):
        raise ParameterError(f"ldm: conditioning_key must be None or 'crossattn', got "
                             f"{cfg['conditioning_key']!r}")
    cs = cfg["cond_stage"]
    if (cs is None) != (cfg["conditioning_key"] is None):
        raise ParameterError("ldm: a cond_stage (ClassEmbedder) needs conditioning_key "
                             "'crossattn' and vice versa")
    if cs is not None:
        cs = {"n_classes": int(cs["n_classes"]), "embed_dim": int(cs["embed_dim"])}
        cfg["cond_stage"] = cs
        if cs["embed_dim"] != u["context_dim"]:
            raise ParameterError(f"ldm: ClassEmbedder embed_dim {cs['embed_dim']} must equal the "
                                 f"UNet context_dim {u['context_dim']}")
    cfg["scale_factor"] = float(cfg["scale_factor"])
    if not cfg["scale_factor"] > 0:
        raise ParameterError(f"ldm: scale_factor must be > 0, got {cfg['scale_factor']}")
    return cfg


def schedule(config: dict) -> torch.Tensor:
    """ᾱ_t (float64) of LDM's "linear" schedule β_t = linspace(√β_start, √β_end, T)²."""
    c = full_config(config)
    betas = torch.linspace(c["linear_start"] ** 0.5, c["linear_end"] ** 0.5, c["timesteps"],
                           dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


def size_multiple(config: dict) -> int:
    """Image H, W must be multiples of f · 2^(UNet levels − 1) (f: the autoencoder's factor)."""
    c = full_config(config)
    levels = len(c["first_stage"]["ddconfig"]["ch_mult"]) + len(c["unet"]["channel_mult"])
    return 2 ** (levels - 2)


def _latent_multiple(c: dict) -> int:
    return 2 ** (len(c["unet"]["channel_mult"]) - 1)


# ---------------------------------------------------------------------------- cross-attention
class CrossAttention(nn.Module):
    """softmax(q kᵀ/√d) v with ``heads`` heads of width d; k, v from ``context`` (self-attention
    when it is None). Keys ``to_q``/``to_k``/``to_v`` (no bias), ``to_out.0``."""

    def __init__(self, dim: int, context_dim: int | None, heads: int, d_head: int):
        super().__init__()
        inner = heads * d_head
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(0.0))

    def forward(self, x, context=None):
        ctx = x if context is None else context
        B, h = x.shape[0], self.heads
        q, k, v = (t.reshape(B, t.shape[1], h, -1).transpose(1, 2)
                   for t in (self.to_q(x), self.to_k(ctx), self.to_v(ctx)))
        a = F.scaled_dot_product_attention(q, k, v)              # (B, heads, N, d)
        return self.to_out(a.transpose(1, 2).reshape(B, x.shape[1], -1))


class GEGLU(nn.Module):
    """``proj`` to 2·inner, then x·GELU(gate)."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class BasicTransformerBlock(nn.Module):
    """x + attn1(norm1 x) (self), + attn2(norm2 x, context) (cross), + ff(norm3 x); the gated
    feed-forward ``ff.net`` = [GEGLU(dim → 4·dim), Dropout, Linear(4·dim → dim)]."""

    def __init__(self, dim: int, heads: int, d_head: int, context_dim: int | None):
        super().__init__()
        self.attn1 = CrossAttention(dim, None, heads, d_head)
        self.ff = nn.Module()
        self.ff.net = nn.Sequential(GEGLU(dim, 4 * dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim))
        self.attn2 = CrossAttention(dim, context_dim, heads, d_head)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(dim) for _ in range(3))

    def forward(self, x, context=None):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff.net(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """GroupNorm(ε 1e-6) → 1×1 ``proj_in`` → ``depth`` transformer blocks over the H·W tokens →
    1×1 ``proj_out`` → + input."""

    def __init__(self, channels: int, heads: int, d_head: int, depth: int, context_dim: int):
        super().__init__()
        inner = heads * d_head
        self.norm = GroupNorm32(32, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, d_head, context_dim) for _ in range(depth)])
        self.proj_out = nn.Conv2d(inner, channels, 1)

    def forward(self, x, context=None):
        B, C, H, W = x.shape
        h = self.proj_in(self.norm(x))
        h = h.reshape(B, h.shape[1], H * W).transpose(1, 2)
        for block in self.transformer_blocks:
            h = block(h, context)
        return x + self.proj_out(h.transpose(1, 2).reshape(B, -1, H, W))


# ---------------------------------------------------------------------------- the UNet
class _Seq(nn.Sequential):
    """``TimestepEmbedSequential``: residual blocks get the embedding, transformers the context."""

    def forward(self, x, emb, context=None):
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class LDMUNet(nn.Module):
    """``openaimodel.UNetModel`` (2-D, legacy head rule), keys as under
    ``model.diffusion_model.``; residual blocks, self-attention and resampling are the ADM
    ones (:mod:`dmir.models.nets.adm`, same keys), cross-attention the :class:`SpatialTransformer`.

    Heads (legacy): with ``num_head_channels`` = c ≠ -1 a block of width ch has ch/c heads of
    width c; otherwise ``num_heads`` heads of width ch/num_heads (``num_heads_upsample`` for
    self-attention in the decoder). ``forward(z, t, context)`` → ε (B, out_channels, h, w).
    """

    def __init__(self, cfg: dict):
        super().__init__()
        u = cfg
        mc, emb_ch = u["model_channels"], 4 * u["model_channels"]
        self.model_channels = mc
        nhc, nh = u["num_head_channels"], u["num_heads"]
        nh_up = nh if u["num_heads_upsample"] == -1 else u["num_heads_upsample"]

        def res(cin, cout, resample=None):
            return ResBlock(cin, emb_ch, cout, u["dropout"], u["use_scale_shift_norm"], resample)

        def attn(ch, heads):
            n = ch // nhc if nhc != -1 else heads
            if u["use_spatial_transformer"]:
                return SpatialTransformer(ch, n, ch // n, u["transformer_depth"], u["context_dim"])
            return AttentionBlock(ch, n, u["use_new_attention_order"])

        def down(ch):
            if u["resblock_updown"]:
                return res(ch, ch, "down")
            return Downsample(ch) if u["conv_resample"] else nn.AvgPool2d(2)

        def up(ch):
            if u["resblock_updown"]:
                return res(ch, ch, "up")
            return Upsample(ch) if u["conv_resample"] else nn.Upsample(scale_factor=2.0)

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        ch, ds, skips = mc, 1, [mc]
        self.input_blocks = nn.ModuleList([_Seq(nn.Conv2d(u["in_channels"], mc, 3, padding=1))])
        for level, mult in enumerate(u["channel_mult"]):
            for _ in range(u["num_res_blocks"]):
                layers = [res(ch, mult * mc)]
                ch = mult * mc
                if ds in u["attention_resolutions"]:
                    layers.append(attn(ch, nh))
                self.input_blocks.append(_Seq(*layers))
                skips.append(ch)
            if level != len(u["channel_mult"]) - 1:
                self.input_blocks.append(_Seq(down(ch)))
                skips.append(ch)
                ds *= 2
        self.middle_block = _Seq(res(ch, ch), attn(ch, nh), res(ch, ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(u["channel_mult"]))):
            for i in range(u["num_res_blocks"] + 1):
                layers = [res(ch + skips.pop(), mc * mult)]
                ch = mc * mult
                if ds in u["attention_resolutions"]:
                    layers.append(attn(ch, nh if u["use_spatial_transformer"] else nh_up))
                if level and i == u["num_res_blocks"]:
                    layers.append(up(ch))
                    ds //= 2
                self.output_blocks.append(_Seq(*layers))
        self.out = nn.Sequential(GroupNorm32(32, ch), nn.SiLU(),
                                 nn.Conv2d(mc, u["out_channels"], 3, padding=1))

    def forward(self, x, t, context=None):
        w = self.time_embed[0].weight
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(w.dtype))
        h, skips = x, []
        for block in self.input_blocks:
            h = block(h, emb, context)
            skips.append(h)
        h = self.middle_block(h, emb, context)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
        return self.out(h)


class ClassEmbedder(nn.Module):
    """``cond_stage_model``: class y → context embedding(y)[:, None] (B, 1, embed_dim)."""

    def __init__(self, n_classes: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_classes, embed_dim)

    def forward(self, y):
        return self.embedding(y)[:, None]


class LatentDiffusionNet(nn.Module):
    """The module tree of a ``LatentDiffusion`` checkpoint (its state-dict keys less the EMA
    copies and schedule buffers): ``model.diffusion_model`` (:class:`LDMUNet`),
    ``first_stage_model`` (:mod:`~dmir.models.nets.autoencoder`), ``cond_stage_model``
    (:class:`ClassEmbedder`, class-conditional models only).

    ``forward(z_t, t, y=None)`` is the noise network ``apply_model``: ε(z_t, t[, context(y)]).
    """

    def __init__(self, config: dict):
        super().__init__()
        cfg = full_config(config)
        self.model = nn.Module()
        self.model.diffusion_model = LDMUNet(cfg["unet"])
        self.first_stage_model = ae.build(cfg["first_stage"])
        if cfg["cond_stage"] is not None:
            self.cond_stage_model = ClassEmbedder(**cfg["cond_stage"])

    def forward(self, z, t, y=None):
        ctx = self.cond_stage_model(y) if hasattr(self, "cond_stage_model") else None
        unet = self.model.diffusion_model
        z = z.to(unet.time_embed[0].weight.dtype)
        return unet(z, t, ctx).to(z.dtype)


def build(config: dict) -> LatentDiffusionNet:
    """The network for a (partial) config; ``with torch.device("meta")`` allocates nothing."""
    return LatentDiffusionNet(config)


# ---------------------------------------------------------------------------- checkpoints
_PREFIX = "model.diffusion_model."


def matches(keys) -> bool:
    """Whether state-dict keys are those of a latent-diffusion checkpoint."""
    keys = set(keys)
    return (_PREFIX + "input_blocks.0.0.weight" in keys and _PREFIX + "out.2.weight" in keys
            and ae.matches(keys, "first_stage_model."))


def _ema_name(name: str) -> str:
    """``LitEma``'s buffer name of parameter ``model.<name>``: dots removed."""
    return "model_ema." + name[len("model."):].replace(".", "")


def select_weights(sd: dict, config: dict, notes: list, ema: bool = True) -> dict:
    """The checkpoint's state dict → exactly the keys of :func:`build` (config).

    Uses the ``model_ema.*`` copies of the UNet when present and ``ema`` (as ``ema_scope()``
    does), drops the schedule buffers after checking ``alphas_cumprod`` against the config,
    and ignores the training-only ``first_stage_model.loss.*`` entries."""
    cfg = full_config(config)
    if "alphas_cumprod" in sd:
        ref = schedule(cfg).to(torch.float32)
        got = sd["alphas_cumprod"].float().reshape(-1)
        if got.shape != ref.shape or (got - ref).abs().max() > 1e-5:
            raise ParameterError(
                f"the checkpoint's alphas_cumprod ({got.numel()} steps, ᾱ_0 {float(got[0]):.6f}, "
                f"ᾱ_T {float(got[-1]):.6f}) does not match the config (linear_start "
                f"{cfg['linear_start']}, linear_end {cfg['linear_end']}, {cfg['timesteps']} steps)")
    if "scale_factor" in sd and abs(float(sd["scale_factor"]) - cfg["scale_factor"]) > 1e-6:
        raise ParameterError(f"the checkpoint's scale_factor {float(sd['scale_factor']):g} differs "
                             f"from the config's {cfg['scale_factor']:g}")
    drop = ("model_ema.", "first_stage_model.loss.")
    out = {k: v for k, v in sd.items() if k not in _SCHEDULE_BUFFERS and not k.startswith(drop)}
    ema_keys = [k for k in sd if k.startswith("model_ema.")]
    if ema_keys and ema:
        unet_keys = [k for k in out if k.startswith("model.")]
        missing = [k for k in unet_keys if _ema_name(k) not in sd]
        if missing:
            raise ParameterError(f"the checkpoint's model_ema holds no copy of {len(missing)} "
                                 f"UNet weights (e.g. {missing[0]}); load with ema=False")
        for k in unet_keys:
            out[k] = sd[_ema_name(k)]
        notes.append(f"used the EMA weights (model_ema, {len(unet_keys)} tensors), as the "
                     f"official ema_scope() sampling does")
    elif ema_keys:
        notes.append("ema=False: used the raw UNet weights, not model_ema")
    else:
        notes.append("no model_ema in the checkpoint: used model.diffusion_model as stored")
    return out


def _indices(keys, prefix):
    n = len(prefix)
    return sorted({int(k[n:].split(".", 1)[0]) for k in keys
                   if k.startswith(prefix) and k[n:].split(".", 1)[0].isdigit()})


def infer_config(sd: dict, image_size: int | None = None) -> tuple[dict, list[str]]:
    """The config of a state dict from its shapes. Head counts and the noise schedule's
    end points leave no trace in the UNet's shapes: a named config with the same shapes is
    used when there is one; otherwise the heads default to 32 channels each and the
    schedule is read from the ``betas`` buffer when present."""
    p = _PREFIX
    mc = sd[p + "input_blocks.0.0.weight"].shape[0]
    in_ch = sd[p + "input_blocks.0.0.weight"].shape[1]
    mult, nrb, attn, ds, spatial, ctx, depth = [], 0, [], 1, False, None, 1
    level_blocks = 0
    for b in _indices(sd, p + "input_blocks.")[1:]:
        res = f"{p}input_blocks.{b}.0.in_layers.2.weight"
        if res not in sd or f"{p}input_blocks.{b}.0.op.weight" in sd:   # downsampling
            level_blocks = 0
            ds *= 2
            continue
        if level_blocks == 0:
            mult.append(sd[res].shape[0] // mc)
        level_blocks += 1
        nrb = max(nrb, level_blocks)
        st = f"{p}input_blocks.{b}.1.transformer_blocks."
        if st + "0.attn2.to_k.weight" in sd:
            spatial = True
            ctx = sd[st + "0.attn2.to_k.weight"].shape[1]
            depth = len(_indices(sd, st))
        if (spatial or f"{p}input_blocks.{b}.1.qkv.weight" in sd) and \
                f"{p}input_blocks.{b}.1.norm.weight" in sd and ds not in attn:
            attn.append(ds)
    unet = {"image_size": image_size or 64, "in_channels": in_ch,
            "out_channels": sd[p + "out.2.weight"].shape[0], "model_channels": mc,
            "attention_resolutions": attn, "num_res_blocks": nrb, "channel_mult": mult,
            "use_spatial_transformer": spatial, "transformer_depth": depth, "context_dim": ctx}
    first = ae.infer_config(sd, "first_stage_model.")
    cond = None
    if "cond_stage_model.embedding.weight" in sd:
        n, d = sd["cond_stage_model.embedding.weight"].shape
        cond = {"n_classes": int(n), "embed_dim": int(d)}
    shapes = {"unet": unet, "first_stage": first, "cond_stage": cond}
    for name, named in CONFIGS.items():
        full = full_config(named)
        same = (lambda k, v: sorted(full["unet"][k]) == sorted(v) if k == "attention_resolutions"
                else full["unet"][k] == v)
        if (all(same(k, v) for k, v in unet.items() if k != "image_size")
                and full["first_stage"] == first and full["cond_stage"] == cond):
            cfg = full_config(named)
            notes = [f"config {name} (recognised from the tensor shapes)"]
            return _schedule_from_buffers(cfg, sd, notes)
    unet.update(num_head_channels=32) if not spatial else unet.update(num_heads=8)
    cfg = full_config({**shapes, "conditioning_key": "crossattn" if cond else None})
    notes = ["UNet, first stage and class embedder inferred from the tensor shapes",
             "attention heads assumed (" + ("8 heads" if spatial else "32 channels per head")
             + "): the shapes do not record them; pass config= if the training config differs"]
    return _schedule_from_buffers(cfg, sd, notes)


def _schedule_from_buffers(cfg, sd, notes):
    if "betas" in sd:
        b = sd["betas"].double().reshape(-1)
        mine = 1 - schedule(cfg) / torch.cat([torch.ones(1, dtype=torch.float64),
                                             schedule(cfg)[:-1]])
        if mine.shape == b.shape and float((mine - b).abs().max()) < 1e-6:
            notes.append("schedule checked against the checkpoint's betas")
        else:
            cfg = full_config({**cfg, "linear_start": float(b[0]), "linear_end": float(b[-1]),
                               "timesteps": b.numel()})
            notes.append(f"schedule from the checkpoint's betas ({b.numel()} steps, "
                         f"{float(b[0]):.4g} → {float(b[-1]):.4g})")
    else:
        notes.append(f"schedule assumed: linear {cfg['linear_start']} → {cfg['linear_end']}, "
                     f"{cfg['timesteps']} steps")
    if "scale_factor" in sd:
        cfg["scale_factor"] = float(sd["scale_factor"])
    return cfg, notes


# ---------------------------------------------------------------------------- the prior
class LatentPrior(DiffusionModel):
    """A diffusion prior over scaled latents z = s·E(x) of an autoencoder.

    ``eps(z_t, t)`` and ``alphas_cumprod`` are those of ``latent_model`` (any dmir prior over
    latents: a loaded LDM UNet as :class:`~dmir.models.network.NetworkPrior`, or an analytic
    prior); ``encode(x)`` = s·E(x) and ``decode(z)`` = D(z/s) map between images (B, C, H, W)
    in [-1, 1] and latents (B, C_z, H/f, W/f) — ``LatentDiffusion.get_first_stage_encoding ∘
    encode_first_stage`` and ``decode_first_stage``. ``quantize``: a VQ decoder snaps to the
    codebook first (the reference default); gradients pass straight through.
    """

    def __init__(self, latent_model, autoencoder, scale_factor: float = 1.0,
                 quantize: bool = True, latent_size_multiple: int = 1, name: str = "ldm",
                 info: dict | None = None):
        super().__init__(latent_model.alphas_cumprod)
        self.latent_model = latent_model
        self.autoencoder = autoencoder
        self.scale_factor = float(scale_factor)
        self.quantize = bool(quantize)
        self.latent_size_multiple = int(latent_size_multiple)
        self.name = name
        self.info = dict(info or {})

    # the loader sets these on every prior; they belong to the latent network
    @property
    def compute_dtype(self):
        return getattr(self.latent_model, "compute_dtype", None)

    @compute_dtype.setter
    def compute_dtype(self, dtype):
        if hasattr(self.latent_model, "compute_dtype"):
            self.latent_model.compute_dtype = dtype

    @property
    def size_multiple(self) -> int:
        """Image H, W must be multiples of this (f · UNet multiple)."""
        return self.autoencoder.factor * self.latent_size_multiple

    @size_multiple.setter
    def size_multiple(self, m):
        self.latent_size_multiple = max(1, int(m) // self.autoencoder.factor)

    def set_class_labels(self, labels) -> "LatentPrior":
        self.latent_model.set_class_labels(labels)
        return self

    def latent_shape(self, x_shape) -> tuple:
        """Image shape (C, H, W) → latent shape; a ShapeError naming the needed multiple."""
        C, H, W = (int(s) for s in x_shape)
        m = self.size_multiple
        if H % m or W % m:
            raise ShapeError(f"{self.name}: image H and W must be multiples of {m} (autoencoder "
                             f"factor {self.autoencoder.factor} × UNet {self.latent_size_multiple}"
                             f"), got {H}x{W}")
        return self.autoencoder.latent_shape((C, H, W))

    def eps(self, z_t, t):
        return self.latent_model.eps(z_t, t)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] → z = s·E(x)."""
        return self.scale_factor * self.autoencoder.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents → images D(z/s) (unclamped)."""
        kw = {"quantize": self.quantize} if isinstance(self.autoencoder, ae.VQModel) else {}
        return self.autoencoder.decode(z / self.scale_factor, **kw)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"name={self.name!r}, scale_factor={self.scale_factor:g}, quantize={self.quantize}"


def prior(net: LatentDiffusionNet, config: dict, class_labels=None, name: str = FORMAT,
          info: dict | None = None) -> LatentPrior:
    """Wrap a loaded :class:`LatentDiffusionNet` as a :class:`LatentPrior` (ε in latent space
    via :class:`NetworkPrior`; class-conditional models default to the null class)."""
    cfg = full_config(config)
    info = {"format": FORMAT, "config": cfg, **(info or {})}
    info.setdefault("notes", [])
    n_classes = cfg["cond_stage"]["n_classes"] if cfg["cond_stage"] else None
    if n_classes is not None and class_labels is None:
        class_labels = n_classes - 1
        info["notes"].append(f"class-conditional: no class label given, used the null class "
                             f"{class_labels} (unconditional)")
    u = cfg["unet"]
    inner = NetworkPrior(net, schedule(cfg), in_channels=u["in_channels"],
                         image_size=u["image_size"], num_classes=n_classes,
                         class_labels=class_labels, size_multiple=_latent_multiple(cfg),
                         name=name, info=info)
    return LatentPrior(inner, net.first_stage_model, cfg["scale_factor"],
                       latent_size_multiple=_latent_multiple(cfg), name=name, info=info)


__all__ = ["LatentPrior", "LatentDiffusionNet", "LDMUNet", "SpatialTransformer", "ClassEmbedder",
           "CONFIGS", "DEFAULTS", "NULL_CLASS", "build", "full_config", "infer_config",
           "matches", "prior", "schedule", "select_weights", "size_multiple"]
