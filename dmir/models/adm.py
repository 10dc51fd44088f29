"""The ADM UNet of OpenAI's guided-diffusion, in plain torch, loading the original checkpoints.

Reference: P. Dhariwal and A. Nichol, "Diffusion Models Beat GANs on Image Synthesis", NeurIPS
2021 (arXiv 2105.05233), code github.com/openai/guided-diffusion (``unet.py``,
``script_util.py``). This is the network behind ``256x256_diffusion_uncond.pt`` (the DDNM, DDRM,
EquS and DeqIR ImageNet experiments), the LSUN checkpoints, and the FFHQ checkpoint of DPS and
DiffPIR (``ffhq_10m.pt``), which uses the same code base.

The module tree, and therefore every state-dict key, is the reference's (``time_embed.0``,
``input_blocks.N.M.in_layers.2``, ``...emb_layers.1``, ``...out_layers.3``, ``...skip_connection``,
attention ``norm`` / ``qkv`` / ``proj_out`` as 1-D convolutions, ``label_emb``, ``middle_block``,
``output_blocks``, ``out.0`` / ``out.2``), so checkpoints load unchanged with ``strict=True``.

Architecture in brief: a sinusoidal timestep embedding (cos half first, then sin) goes through a
2-layer MLP of width 4·C; the encoder has ``len(channel_mult)`` levels of ``num_res_blocks``
residual blocks (with self-attention at the listed resolutions), separated by 2× downsampling (a
strided convolution, or a residual block with average pooling inside when ``resblock_updown``);
a middle ResBlock–attention–ResBlock; a mirrored decoder with skip concatenations and one extra
block per level. With ``use_scale_shift_norm`` the timestep enters each residual block as a FiLM
modulation GroupNorm(h)·(1 + s) + b; otherwise it is added before the second normalisation.
With ``learn_sigma`` the output has 2·C channels: ε, then the variance interpolation v.

The config dictionaries use guided-diffusion's own flag names (``model_and_diffusion_defaults``),
with ``attention_resolutions`` given as feature-map *resolutions* ("32,16,8") and converted to
downsampling factors ``image_size // res`` as ``script_util.create_model`` does.
"""
from __future__ import annotations

import math
import re
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ParameterError
from .base import make_schedule
from .network import NetworkPrior

FORMAT = "adm"

#: guided-diffusion ``model_and_diffusion_defaults()`` (the keys that define the network and
#: its training schedule), plus two dmir keys fixed by ``create_model`` there: ``in_channels``
#: (always 3 in the reference) and ``num_classes`` (1000, used when ``class_cond``).
DEFAULTS: dict = {
    "image_size": 64,
    "num_channels": 128,
    "num_res_blocks": 2,
    "num_heads": 4,
    "num_heads_upsample": -1,
    "num_head_channels": -1,
    "attention_resolutions": "16,8",
    "channel_mult": "",
    "dropout": 0.0,
    "class_cond": False,
    "use_scale_shift_norm": True,
    "resblock_updown": False,
    "use_fp16": False,
    "use_new_attention_order": False,
    "learn_sigma": False,
    "diffusion_steps": 1000,
    "noise_schedule": "linear",
    "in_channels": 3,
    "num_classes": 1000,
}

#: guided-diffusion / DPS option names that do not change the network's function at inference
#: (training memory, training loss, sampler respacing, file location); accepted and dropped.
IGNORED_KEYS = ("use_checkpoint", "use_kl", "rescale_learned_sigmas", "timestep_respacing",
                "model_path")
#: Options that change what the network's output means; only their default (False) is supported.
_MUST_BE_FALSE = ("predict_xstart", "rescale_timesteps")

# channel_mult "" → by image size, as script_util.create_model.
_DEFAULT_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4),
                 64: (1, 2, 3, 4)}

_IMAGENET256 = dict(attention_resolutions="32,16,8", class_cond=False, diffusion_steps=1000,
                    image_size=256, learn_sigma=True, noise_schedule="linear", num_channels=256,
                    num_head_channels=64, num_res_blocks=2, resblock_updown=True, use_fp16=True,
                    use_scale_shift_norm=True)

#: Official checkpoints used by the papers, with the flags of their READMEs / configs:
#:
#: ======================  ===========================  =======================  ===========
#: name                    file                         flags from                parameters
#: ======================  ===========================  =======================  ===========
#: adm-imagenet256-uncond  256x256_diffusion_uncond.pt  guided-diffusion README  552,814,086
#: adm-imagenet256-cond    256x256_diffusion.pt         guided-diffusion README  553,838,086
#: adm-lsun-bedroom256     lsun_bedroom.pt              guided-diffusion README  552,814,086
#: adm-ffhq256             ffhq_10m.pt                  DPS model_config.yaml     93,563,910
#: ======================  ===========================  =======================  ===========
#:
#: Counts measured with :func:`build` on the meta device; the class-conditional model adds the
#: 1000 × 1024 label embedding. ``use_fp16`` records how the reference ran the checkpoint.
CONFIGS: dict[str, dict] = {
    "adm-imagenet256-uncond": {**DEFAULTS, **_IMAGENET256},
    "adm-imagenet256-cond": {**DEFAULTS, **_IMAGENET256, "class_cond": True},
    "adm-lsun-bedroom256": {**DEFAULTS, **_IMAGENET256, "dropout": 0.1},
    "adm-ffhq256": {**DEFAULTS, **dict(
        image_size=256, num_channels=128, num_res_blocks=1, channel_mult="", learn_sigma=True,
        class_cond=False, attention_resolutions="16", num_heads=4, num_head_channels=64,
        num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.0, resblock_updown=True,
        use_fp16=False, use_new_attention_order=False, diffusion_steps=1000,
        noise_schedule="linear")},
}

_GROUPS = 32          # GroupNorm groups in every normalisation layer of the reference


# ---------------------------------------------------------------------------- configuration
def _int_list(value, key: str) -> tuple:
    """"32,16,8" / 16 / [32, 16, 8] → (32, 16, 8); "" → ()."""
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,\s]+", value.strip()) if p]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        parts = [value]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise ParameterError(f"{key} must be a comma-separated string or a list of numbers, "
                             f"got {value!r}")
    out = []
    for p in parts:
        try:
            v = float(p)
        except (TypeError, ValueError):
            raise ParameterError(f"{key}: {p!r} is not a number (got {value!r})") from None
        if not 0 < v < math.inf:
            raise ParameterError(f"{key} entries must be positive, got {value!r}")
        out.append(int(v) if v == int(v) else v)
    return tuple(out)


def _check_int(cfg: dict, key: str, lo: int, allow_minus_one: bool = False) -> None:
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, int) or not (
            v >= lo or (allow_minus_one and v == -1)):
        extra = " or -1" if allow_minus_one else ""
        raise ParameterError(f"{key} must be an integer >= {lo}{extra}, got {v!r}")


def full_config(config: dict | None = None) -> dict:
    """:data:`DEFAULTS` updated with ``config``, validated and normalised.

    Returns a new dict with every key of :data:`DEFAULTS`; ``channel_mult`` becomes a tuple of
    numbers ("" resolved by ``image_size`` as guided-diffusion does) and
    ``attention_resolutions`` a tuple of ints (feature-map resolutions, as given). The keys in
    :data:`IGNORED_KEYS` are accepted and dropped. Idempotent: ``full_config(full_config(c))``
    equals ``full_config(c)``.

    Raises:
        ParameterError: an unknown key (the message lists the allowed ones) or a bad value.
    """
    given = dict(config or {})
    for key in _MUST_BE_FALSE:
        if given.pop(key, False):
            raise ParameterError(f"{key}=True is not supported by the adm format "
                                 f"(the network must predict ε at the original timesteps)")
    for key in IGNORED_KEYS:
        given.pop(key, None)
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ParameterError(
            f"unknown adm config key(s) {', '.join(map(repr, unknown))}; allowed: "
            f"{', '.join(DEFAULTS)} (ignored: {', '.join(IGNORED_KEYS + _MUST_BE_FALSE)})")
    cfg = {**DEFAULTS, **given}

    for key in ("image_size", "num_channels", "num_heads", "diffusion_steps", "in_channels",
                "num_classes"):
        _check_int(cfg, key, 1)
    _check_int(cfg, "num_res_blocks", 0)
    _check_int(cfg, "num_head_channels", 1, allow_minus_one=True)
    _check_int(cfg, "num_heads_upsample", 1, allow_minus_one=True)
    for key in ("class_cond", "use_scale_shift_norm", "resblock_updown", "use_fp16",
                "use_new_attention_order", "learn_sigma"):
        if not isinstance(cfg[key], bool):
            raise ParameterError(f"{key} must be True or False, got {cfg[key]!r}")
    if isinstance(cfg["dropout"], bool) or not isinstance(cfg["dropout"], (int, float)) or \
            not 0 <= cfg["dropout"] < 1:
        raise ParameterError(f"dropout must be a number in [0, 1), got {cfg['dropout']!r}")
    cfg["dropout"] = float(cfg["dropout"])
    if cfg["noise_schedule"] not in ("linear", "cosine"):
        raise ParameterError(f"noise_schedule must be 'linear' or 'cosine', "
                             f"got {cfg['noise_schedule']!r}")

    mult = cfg["channel_mult"]
    if isinstance(mult, str) and not mult.strip():
        if cfg["image_size"] not in _DEFAULT_MULT:
            raise ParameterError(
                f"channel_mult '' has a default only for image_size in "
                f"{sorted(_DEFAULT_MULT)}, got image_size {cfg['image_size']}; give channel_mult")
        mult = _DEFAULT_MULT[cfg["image_size"]]
    cfg["channel_mult"] = mult = _int_list(mult, "channel_mult")
    if not mult:
        raise ParameterError("channel_mult needs at least one level")
    cfg["attention_resolutions"] = _int_list(cfg["attention_resolutions"],
                                             "attention_resolutions")
    if any(not isinstance(r, int) for r in cfg["attention_resolutions"]):
        raise ParameterError(f"attention_resolutions must be integers, "
                             f"got {cfg['attention_resolutions']}")

    # Shapes the reference would only reject deep inside the constructor or forward pass.
    widths = [int(m * cfg["num_channels"]) for m in mult]
    if any(w < 1 or w % _GROUPS for w in widths):
        raise ParameterError(f"every level width int(channel_mult * num_channels) must be a "
                             f"positive multiple of {_GROUPS} (GroupNorm groups), got {widths}")
    ds_attn = {cfg["image_size"] // r for r in cfg["attention_resolutions"]}
    attn_widths = {w for level, w in enumerate(widths) if 2 ** level in ds_attn} | {widths[-1]}
    up_heads = cfg["num_heads_upsample"] if cfg["num_heads_upsample"] != -1 else cfg["num_heads"]
    for w in sorted(attn_widths):
        if cfg["num_head_channels"] != -1:
            if w % cfg["num_head_channels"]:
                raise ParameterError(f"attention width {w} is not divisible by "
                                     f"num_head_channels {cfg['num_head_channels']}")
        elif w % cfg["num_heads"] or w % up_heads:
            raise ParameterError(f"attention width {w} is not divisible by num_heads "
                                 f"{cfg['num_heads']} / num_heads_upsample {up_heads}")
    return cfg


# ---------------------------------------------------------------------------- layers
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B,) → (B, dim) float32: [cos(t·f_k), sin(t·f_k)], f_k =
    max_period^(-k/⌊dim/2⌋) for k = 0..⌊dim/2⌋-1, zero-padded when dim is odd."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period)
                      * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype; the result is cast back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


def _norm(channels: int) -> GroupNorm32:
    return GroupNorm32(_GROUPS, channels)


class TimestepEmbedSequential(nn.Sequential):
    """A sequence of layers; the residual blocks among them also receive the embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class Downsample(nn.Module):
    """2× downsampling by a stride-2 3×3 convolution (key ``op``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """2× nearest-neighbour upsampling followed by a 3×3 convolution (key ``conv``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class ResBlock(nn.Module):
    """Residual block conditioned on the timestep embedding, optionally resampling 2×.

    Args:
        channels, out_channels: input / output feature channels.
        emb_channels: width of the embedding (4 × model channels).
        dropout: dropout before the last convolution (active only in training mode).
        scale_shift: FiLM conditioning GroupNorm(h)·(1 + s) + b instead of h + e.
        resample: ``"up"`` (nearest 2×) or ``"down"`` (2×2 average pooling), applied to both
            paths between the first normalisation+SiLU and the first convolution; or ``None``.
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: int, dropout: float,
                 scale_shift: bool, resample: str | None = None):
        super().__init__()
        self.scale_shift = scale_shift
        self.resample = resample
        self.in_layers = nn.Sequential(_norm(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, (2 if scale_shift else 1) * out_channels))
        self.out_layers = nn.Sequential(_norm(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W), emb: (B, emb_channels) → (B, out_channels, H', W')."""
        h = self.in_layers[1](self.in_layers[0](x))
        h = self.in_layers[2](self._resample(h))
        x = self._resample(x)
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        norm, rest = self.out_layers[0], self.out_layers[1:]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = rest(norm(h) * (1 + scale) + shift)
        else:
            h = rest(norm(h + e))
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all spatial positions, with a residual connection.

    ``qkv`` is a 1×1 Conv1d to 3·C channels. Its channels are split into heads in one of the
    two orders of the reference: legacy (``new_order=False``, QKVAttentionLegacy) reads them as
    [head][q|k|v][d]; the new order (QKVAttention) as [q|k|v][head][d]. The checkpoint
    determines which is right; the official 256×256 and FFHQ checkpoints use the legacy order.
    Attention weights are softmax(qᵀk / √d) with d = C / heads.

    ``conv2d=True``: ``qkv`` and ``proj_out`` are 1×1 ``Conv2d`` (weights (·, ·, 1, 1)) applied
    to the (B, C, H, W) map, as in OpenAI's consistency_models ``cm/unet.py`` (``conv_nd(dims,
    …)``); the same function as the 1-D form, only the state-dict shapes differ.
    """

    def __init__(self, channels: int, num_heads: int, new_order: bool, conv2d: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.new_order = new_order
        self.conv2d = conv2d
        self.norm = _norm(channels)
        conv = nn.Conv2d if conv2d else nn.Conv1d
        self.qkv = conv(channels, 3 * channels, 1)
        self.proj_out = conv(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) → (B, C, H, W)."""
        B, C, H, W = x.shape
        flat = x.reshape(B, C, H * W)
        qkv = (self.qkv(self.norm(x)).reshape(B, 3 * C, H * W) if self.conv2d
               else self.qkv(self.norm(flat)))
        heads, d = self.num_heads, C // self.num_heads
        if self.new_order:
            q, k, v = qkv.reshape(B, 3, heads, d, H * W).unbind(1)
        else:
            q, k, v = qkv.reshape(B, heads, 3, d, H * W).unbind(2)
        # (B, heads, HW, d) with unit stride on d, so the fused SDPA kernels apply
        q, k, v = (z.transpose(-1, -2).contiguous() for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v)                     # (B, heads, HW, d)
        a = a.transpose(-1, -2).reshape(B, C, H * W)
        if self.conv2d:
            return x + self.proj_out(a.reshape(B, C, H, W))
        return (flat + self.proj_out(a)).reshape(B, C, H, W)


# ---------------------------------------------------------------------------- the network
class ADMUNet(nn.Module):
    """guided-diffusion's ``UNetModel`` (2-D, ``conv_resample=True``), same state-dict keys.

    Args:
        in_channels, out_channels: image channels in; output channels (2·in with learned σ).
        model_channels: base width C; the timestep MLP has width 4·C.
        num_res_blocks: residual blocks per level in the encoder (the decoder has one more).
        channel_mult: width multiplier per level (level ℓ works at 1/2^ℓ of the input size).
        attention_ds: downsampling factors 2^ℓ at which attention blocks are inserted.
        dropout: dropout rate inside residual blocks (training only).
        num_classes: number of classes for a class-conditional model (``label_emb``), or None.
        num_heads, num_head_channels, num_heads_upsample: heads per attention block — a fixed
            width ``num_head_channels`` per head when it is not -1, else ``num_heads`` heads
            (``num_heads_upsample`` in the decoder; -1 means ``num_heads``).
        use_scale_shift_norm, resblock_updown, use_new_attention_order: as in the reference.
        use_fp16: store the convolutions of input/middle/output blocks in float16 and run the
            torso in float16, as the reference's ``convert_to_fp16`` does; the timestep MLP, the
            label embedding, the normalisations (computed in float32), the embedding
            projections of the residual blocks and the final ``out`` head stay float32.
        attention_conv2d: attention ``qkv``/``proj_out`` as 1×1 Conv2d (consistency models).

    Parameters keep PyTorch's default initialisation (the reference zero-initialises some
    convolutions for training); load a checkpoint before use.
    """

    def __init__(self, *, in_channels: int, model_channels: int, out_channels: int,
                 num_res_blocks: int, channel_mult: tuple, attention_ds: set,
                 dropout: float = 0.0, num_classes: int | None = None, num_heads: int = 1,
                 num_head_channels: int = -1, num_heads_upsample: int = -1,
                 use_scale_shift_norm: bool = False, resblock_updown: bool = False,
                 use_new_attention_order: bool = False, use_fp16: bool = False,
                 attention_conv2d: bool = False):
        super().__init__()
        self.model_channels = model_channels
        self.num_classes = num_classes
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        emb_ch = 4 * model_channels

        def res(cin, cout, resample=None):
            return ResBlock(cin, emb_ch, cout, dropout, use_scale_shift_norm, resample)

        def attn(ch, heads):
            n = ch // num_head_channels if num_head_channels != -1 else heads
            return AttentionBlock(ch, n, use_new_attention_order, attention_conv2d)

        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_ch), nn.SiLU(),
                                        nn.Linear(emb_ch, emb_ch))
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_ch)

        ch = first = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skip_chans = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            width = int(mult * model_channels)
            for _ in range(num_res_blocks):
                layers = [res(ch, width)]
                ch = width
                if ds in attention_ds:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(channel_mult) - 1:
                down = res(ch, ch, "down") if resblock_updown else Downsample(ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(res(ch, ch), attn(ch, num_heads), res(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            width = int(mult * model_channels)
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), width)]
                ch = width
                if ds in attention_ds:
                    layers.append(attn(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, "up") if resblock_updown else Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(_norm(ch), nn.SiLU(),
                                 nn.Conv2d(first, out_channels, 3, padding=1))
        if use_fp16:
            for part in (self.input_blocks, self.middle_block, self.output_blocks):
                for m in part.modules():
                    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                        m.half()

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None):
        """x: (B, C_in, H, W) with H, W divisible by 2^(levels-1); t: (B,) float timesteps
        0..T-1; y: (B,) int64 labels iff class-conditional → raw output (B, C_out, H, W) in
        the dtype of x."""
        if (y is None) != (self.num_classes is None):
            raise ParameterError("class labels y are required by a class-conditional ADM "
                                 "network and not accepted by an unconditional one")
        w = cast(torch.Tensor, self.time_embed[0].weight)
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(w.dtype))
        if y is not None:
            emb = emb + self.label_emb(y)
        h = x.to(cast(Any, self.input_blocks)[0][0].weight.dtype)   # float16 with use_fp16
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.to(x.dtype))


def build(config: dict, **variant) -> ADMUNet:
    """The UNet for a (partial) config, see :func:`full_config`. Parameters are created on the
    current default device, so ``with torch.device("meta"): build(cfg)`` allocates nothing.
    ``variant``: :class:`ADMUNet` options outside guided-diffusion's flags, overriding those
    derived from the config (``attention_conv2d``, ``use_new_attention_order`` — the
    consistency-model layout of :mod:`dmir.models.consistency`)."""
    cfg = full_config(config)
    kw = dict(
        in_channels=cfg["in_channels"], model_channels=cfg["num_channels"],
        out_channels=cfg["in_channels"] * (2 if cfg["learn_sigma"] else 1),
        num_res_blocks=cfg["num_res_blocks"], channel_mult=cfg["channel_mult"],
        attention_ds={cfg["image_size"] // r for r in cfg["attention_resolutions"]},
        dropout=cfg["dropout"], num_classes=cfg["num_classes"] if cfg["class_cond"] else None,
        num_heads=cfg["num_heads"], num_head_channels=cfg["num_head_channels"],
        num_heads_upsample=cfg["num_heads_upsample"],
        use_scale_shift_norm=cfg["use_scale_shift_norm"],
        resblock_updown=cfg["resblock_updown"],
        use_new_attention_order=cfg["use_new_attention_order"], use_fp16=cfg["use_fp16"])
    kw.update(variant)
    return ADMUNet(**kw)


# ---------------------------------------------------------------------------- checkpoints
def matches(state_dict_keys) -> bool:
    """Whether a state dict's keys are those of a guided-diffusion UNet."""
    keys = set(state_dict_keys)
    return {"time_embed.0.weight", "input_blocks.0.0.weight", "out.2.weight"} <= keys


def _block_indices(keys, prefix: str) -> list[int]:
    pat = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := pat.match(k))})


def infer_config(state_dict, image_size: int | None = None) -> tuple[dict, list[str]]:
    """The config of a guided-diffusion UNet, read from its tensor shapes.

    Args:
        state_dict: mapping key → tensor (real or meta) in the reference layout.
        image_size: the training resolution; not stored in the weights and needed to express
            where attention sits as resolutions (assumed 256 when ``None``).

    Returns:
        ``(config, notes)``: a :func:`full_config` dict whose network has exactly these keys
        and shapes (verified), and one human-readable note per setting that was inferred or
        assumed. Settings the shapes cannot tell — the head split (``num_head_channels`` /
        ``num_heads``), ``use_new_attention_order``, ``dropout``, ``use_fp16`` and the
        schedule — are set to the most common official values; the head split and attention
        order change the output, so override them when the checkpoint's flags are known.

    Raises:
        ParameterError: the keys are not an ADM UNet or the structure is inconsistent.
    """
    sd = dict(state_dict)
    keys = list(sd)
    if not matches(keys):
        raise ParameterError("not a guided-diffusion (ADM) UNet state dict: expected keys "
                             "time_embed.0.weight, input_blocks.0.0.weight and out.2.weight")
    notes = []
    shape = lambda k: tuple(sd[k].shape)  # noqa: E731
    has = lambda p: any(k.startswith(p) for k in keys)  # noqa: E731

    mc = shape("time_embed.0.weight")[1]
    in_ch = shape("input_blocks.0.0.weight")[1]
    out_ch = shape("out.2.weight")[0]
    if out_ch not in (in_ch, 2 * in_ch):
        raise ParameterError(f"out.2 has {out_ch} channels for {in_ch} input channels; "
                             f"expected {in_ch} or {2 * in_ch}")
    learn_sigma = out_ch == 2 * in_ch
    notes.append(f"num_channels={mc} (time_embed.0), in_channels={in_ch} "
                 f"(input_blocks.0.0), learn_sigma={learn_sigma} (out.2 has {out_ch} channels)")

    # The decoder has L levels of R+1 blocks; the last block of every level but the top one
    # ends in an upsampler (a ResBlock with in_layers, or an Upsample with conv).
    n_out = len(_block_indices(keys, "output_blocks"))
    if n_out == 0:
        raise ParameterError("ADM state dict without output_blocks")
    up_blocks = [j for j in range(n_out)
                 if any(has(f"output_blocks.{j}.{m}.in_layers.") or
                        f"output_blocks.{j}.{m}.conv.weight" in sd for m in (1, 2))]
    R = up_blocks[0] if up_blocks else n_out - 1
    L = n_out // (R + 1)
    if n_out != L * (R + 1) or up_blocks != [(R + 1) * k - 1 for k in range(1, L)]:
        raise ParameterError(f"output_blocks do not form the ADM level structure "
                             f"({n_out} blocks, upsamplers at {up_blocks})")
    mult = []
    for level in range(L):
        width = shape(f"output_blocks.{(L - 1 - level) * (R + 1)}.0.in_layers.2.weight")[0]
        m = width / mc
        mult.append(int(m) if m == int(m) else m)
    notes.append(f"channel_mult={','.join(map(str, mult))}, num_res_blocks={R} "
                 f"(from the {n_out} decoder blocks)")

    if L > 1:
        first_down = f"input_blocks.{R + 1}.0."
        resblock_updown = has(first_down + "in_layers.")
        notes.append(f"resblock_updown={resblock_updown} (downsampling by "
                     f"{'residual blocks' if resblock_updown else 'strided convolutions'})")
    else:
        resblock_updown = False
        notes.append("resblock_updown=False (assumed: a single level has no resampling)")

    scale_shift = (shape("middle_block.0.emb_layers.1.weight")[0]
                   == 2 * shape("middle_block.0.in_layers.2.weight")[0])
    notes.append(f"use_scale_shift_norm={scale_shift} (width of emb_layers.1)")

    if image_size is None:
        image_size = 256
        notes.append("image_size=256 (assumed: not stored in the weights; it only converts "
                     "where attention sits into resolutions)")
    attn_levels = sorted({lvl for lvl in range(L) for r in range(R + 1)
                          if f"output_blocks.{(L - 1 - lvl) * (R + 1) + r}.1.qkv.weight" in sd})
    attn_res = [image_size // 2 ** lvl for lvl in attn_levels]
    notes.append(f"attention_resolutions={','.join(map(str, attn_res)) or 'none'} "
                 f"(attention blocks at levels {attn_levels}, image_size {image_size})")

    class_cond = "label_emb.weight" in sd
    num_classes = shape("label_emb.weight")[0] if class_cond else DEFAULTS["num_classes"]
    notes.append(f"class_cond={class_cond}" +
                 (f" with {num_classes} classes (label_emb)" if class_cond else ""))

    widths = {int(mult[lvl] * mc) for lvl in attn_levels} | {int(mult[-1] * mc)}
    if all(w % 64 == 0 for w in widths):
        heads = {"num_head_channels": 64, "num_heads": 4}
        notes.append("num_head_channels=64 (assumed, as the official 256x256 checkpoints; the "
                     "head split is not stored in the weights but changes the output)")
    else:
        n = 4 if all(w % 4 == 0 for w in widths) else 1
        heads = {"num_head_channels": -1, "num_heads": n}
        notes.append(f"num_heads={n} (assumed: attention widths {sorted(widths)} are not "
                     f"multiples of 64; the head split is not stored but changes the output)")
    notes.append("use_new_attention_order=False (assumed: legacy head order, as the official "
                 "256x256 and FFHQ checkpoints; not stored in the weights)")
    notes.append("dropout=0.0, use_fp16=False (run in float32), diffusion_steps=1000, "
                 "noise_schedule=linear (assumed: not stored in the weights)")

    cfg = full_config({
        "image_size": image_size, "num_channels": mc, "num_res_blocks": R,
        "channel_mult": tuple(mult), "learn_sigma": learn_sigma, "class_cond": class_cond,
        "num_classes": num_classes, "attention_resolutions": tuple(attn_res),
        "use_scale_shift_norm": scale_shift, "resblock_updown": resblock_updown,
        "in_channels": in_ch, **heads})

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build(cfg).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in sd.items()}
    if expected != got:
        diff = sorted(set(expected.items()) ^ set(got.items()))[:5]
        raise ParameterError(f"the inferred ADM config does not reproduce the state dict "
                             f"(first differences: {diff}); pass the checkpoint's flags")
    return cfg, notes


def schedule(config: dict) -> torch.Tensor:
    """ᾱ_t (float64, length ``diffusion_steps``) of the config's training schedule."""
    cfg = full_config(config)
    return make_schedule(cfg["noise_schedule"], cfg["diffusion_steps"])


def prior(net: nn.Module, config: dict, **kw) -> NetworkPrior:
    """Wrap an ADM network as a :class:`NetworkPrior` (ε = the first ``in_channels`` outputs).

    ``kw`` goes to :class:`NetworkPrior` and overrides the defaults derived from the config
    (e.g. ``class_labels=...``, ``compute_dtype=...``, ``name=...``, ``info=...``).
    """
    cfg = full_config(config)
    args = dict(in_channels=cfg["in_channels"], image_size=cfg["image_size"],
                learned_sigma=cfg["learn_sigma"],
                num_classes=cfg["num_classes"] if cfg["class_cond"] else None,
                name=FORMAT, info={"format": FORMAT, "config": cfg})
    args.update(kw)
    return NetworkPrior(net, schedule(cfg), **args)
