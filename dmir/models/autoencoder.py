"""First-stage autoencoders of latent diffusion, in plain torch, in the official state-dict layout.

Reference: R. Rombach, A. Blattmann, D. Lorenz, P. Esser, B. Ommer, "High-Resolution Image
Synthesis with Latent Diffusion Models", CVPR 2022 (arXiv 2112.10752), §3.1 (perceptual image
compression) and App. G; code github.com/CompVis/latent-diffusion:
``ldm/modules/diffusionmodules/model.py`` (``Encoder``, ``Decoder``), ``ldm/models/autoencoder.py``
(``VQModel`` / ``VQModelInterface``, ``AutoencoderKL``) and taming-transformers'
``VectorQuantizer2`` (``taming/modules/vqvae/quantize.py``).

The module tree, and so every state-dict key, is the reference's: ``encoder.conv_in``,
``encoder.down.{i}.block.{j}.{norm1,conv1,norm2,conv2,nin_shortcut}``,
``encoder.down.{i}.attn.{j}.{norm,q,k,v,proj_out}``, ``encoder.down.{i}.downsample.conv``,
``encoder.mid.{block_1,attn_1,block_2}``, ``encoder.norm_out``, ``encoder.conv_out``; the decoder
mirrored (``decoder.up.{i}...``, ``up.{i}.upsample.conv``); ``quant_conv``, ``post_quant_conv``
and, for VQ models, ``quantize.embedding.weight``. A standalone first-stage checkpoint also
holds its training loss (``loss.*``: LPIPS and discriminator); those keys are ignored. Inside a
latent-diffusion checkpoint the same keys sit under ``first_stage_model.``.

The interface (:class:`Autoencoder`) that latent solvers use:

* ``encode(x)``: images (B, C, H, W) in [-1, 1] → latents h (B, C_z, H/f, W/f), *unscaled*
  (the LDM multiplies by its ``scale_factor``; :class:`~dmir.models.ldm.LatentPrior` does).
  For VQ models this is ``VQModelInterface.encode``: ``quant_conv(encoder(x))``, *before*
  quantisation. For KL models it is the posterior mean (``sample=True`` draws from it, as
  ``LatentDiffusion.get_first_stage_encoding`` does during training).
* ``decode(h)``: latents → images (B, C, H, W), nominally in [-1, 1] (not clamped). VQ models
  quantise first — ``VQModelInterface.decode(h, force_not_quantize=False)``, which is what
  ``LatentDiffusion.decode_first_stage`` calls — with the straight-through gradient of the
  reference (z_q = h + sg(e_k - h)), so gradients through ``decode`` reach h unchanged at the
  quantiser; ``quantize=False`` skips the quantiser (``force_not_quantize``).
* ``factor`` f = 2^(len(ch_mult) - 1) and ``latent_channels`` (``embed_dim``).

Named configs (``CONFIGS``): ``vq-f4`` (Z = 8192 codes of d = 3; 55.3 M parameters) and
``kl-f8`` (d = 4), from ``models/first_stage_models/{vq-f4,kl-f8}/config.yaml``.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from ..rng import randn
from ..errors import ParameterError, ShapeError
from .adm import GroupNorm32

#: ``ddconfig`` of the first-stage YAMLs; ``type`` vq|kl, ``embed_dim``, ``n_embed`` (VQ only)
CONFIGS: dict = {
    "vq-f4": {"type": "vq", "embed_dim": 3, "n_embed": 8192,
              "ddconfig": {"double_z": False, "z_channels": 3, "resolution": 256,
                           "in_channels": 3, "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4],
                           "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}},
    "kl-f8": {"type": "kl", "embed_dim": 4,
              "ddconfig": {"double_z": True, "z_channels": 4, "resolution": 256,
                           "in_channels": 3, "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4, 4],
                           "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}},
}
_DD_KEYS = ("double_z", "z_channels", "resolution", "in_channels", "out_ch", "ch", "ch_mult",
            "num_res_blocks", "attn_resolutions", "dropout")
#: ddconfig entries that do not change the network at inference (dropped)
_DD_IGNORED = ("give_pre_end", "tanh_out", "resamp_with_conv", "use_linear_attn", "attn_type")


def full_config(config: dict) -> dict:
    """A validated first-stage config {type, embed_dim, n_embed?, ddconfig}."""
    if not isinstance(config, dict) or "ddconfig" not in config:
        raise ParameterError(f"autoencoder config must be a dict with 'type', 'embed_dim' and "
                             f"'ddconfig', got {config!r}")
    kind = config.get("type", "vq")
    if kind not in ("vq", "kl"):
        raise ParameterError(f"autoencoder type must be 'vq' or 'kl', got {kind!r}")
    dd = {k: v for k, v in dict(config["ddconfig"]).items() if k not in _DD_IGNORED}
    unknown = set(dd) - set(_DD_KEYS)
    if unknown:
        raise ParameterError(f"unknown ddconfig key(s) {', '.join(sorted(unknown))}; known: "
                             f"{', '.join(_DD_KEYS)}")
    missing = [k for k in _DD_KEYS if k not in dd and k not in ("dropout", "attn_resolutions")]
    if missing:
        raise ParameterError(f"ddconfig lacks {', '.join(missing)}")
    dd.setdefault("dropout", 0.0)
    dd.setdefault("attn_resolutions", [])
    dd["ch_mult"] = [int(m) for m in dd["ch_mult"]]
    dd["attn_resolutions"] = [int(r) for r in dd["attn_resolutions"]]
    for k in ("z_channels", "resolution", "in_channels", "out_ch", "ch", "num_res_blocks"):
        dd[k] = int(dd[k])
        if dd[k] < 1:
            raise ParameterError(f"ddconfig {k} must be ≥ 1, got {dd[k]}")
    if dd["ch"] % 32 or not dd["ch_mult"]:
        raise ParameterError(f"ddconfig ch must be a multiple of 32 (GroupNorm with 32 groups) "
                             f"and ch_mult non-empty, got ch={dd['ch']}, ch_mult={dd['ch_mult']}")
    if kind == "kl" and not dd["double_z"]:
        raise ParameterError("a KL autoencoder needs double_z: true (mean and log-variance)")
    out = {"type": kind, "embed_dim": int(config["embed_dim"]), "ddconfig": dd}
    if kind == "vq":
        out["n_embed"] = int(config.get("n_embed", 0))
        if out["n_embed"] < 1:
            raise ParameterError("a VQ autoencoder needs n_embed ≥ 1 (codebook size)")
    return out


# ---------------------------------------------------------------------------- layers
def _norm(c: int) -> GroupNorm32:
    """``Normalize``: GroupNorm(32 groups, ε = 1e-6), computed in float32."""
    return GroupNorm32(32, c, eps=1e-6)


class ResnetBlock(nn.Module):
    """norm1–swish–conv1–norm2–swish–dropout–conv2 plus a (1×1 ``nin_shortcut``) skip; the
    first stage has no timestep embedding (``temb_channels = 0``: no ``temb_proj``)."""

    def __init__(self, cin: int, cout: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = _norm(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over positions with 1×1 ``q``/``k``/``v``/``proj_out``
    convolutions: x + proj_out(softmax(qᵀk/√C) v)."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v = (nn.Conv2d(c, c, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (m(h).reshape(B, 1, C, H * W).transpose(-1, -2) for m in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(B, C, H, W)
        return x + self.proj_out(a)


class Downsample(nn.Module):
    """Pad (0, 1, 0, 1) with zeros, then a stride-2 3×3 convolution (``conv``)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest 2× upsampling, then a 3×3 convolution (``conv``)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level(blocks, attns, resample=None, name=None) -> nn.Module:
    m = nn.Module()
    m.block, m.attn = nn.ModuleList(blocks), nn.ModuleList(attns)
    if resample is not None:
        setattr(m, name, resample)
    return m


def _mid(c: int, dropout: float) -> nn.Module:
    m = nn.Module()
    m.block_1, m.attn_1 = ResnetBlock(c, c, dropout), AttnBlock(c)
    m.block_2 = ResnetBlock(c, c, dropout)
    return m


class Encoder(nn.Module):
    """x (B, in_channels, H, W) → (B, (2 if double_z else 1)·z_channels, H/f, W/f)."""

    def __init__(self, *, ch, ch_mult, num_res_blocks, attn_resolutions, dropout, in_channels,
                 resolution, z_channels, double_z, **_):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        res, cin = resolution, ch
        self.down = nn.ModuleList()
        for i, mult in enumerate(ch_mult):
            cout = ch * mult
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(cin, cout, dropout))
                cin = cout
                if res in attn_resolutions:
                    attns.append(AttnBlock(cin))
            last = i == len(ch_mult) - 1
            self.down.append(_level(blocks, attns, None if last else Downsample(cin), "downsample"))
            res = res if last else res // 2
        self.mid = _mid(cin, dropout)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, (2 if double_z else 1) * z_channels, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for lvl in self.down:
            for j, block in enumerate(lvl.block):
                h = block(h)
                if len(lvl.attn):
                    h = lvl.attn[j](h)
            if hasattr(lvl, "downsample"):
                h = lvl.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """z (B, z_channels, h, w) → (B, out_ch, f·h, f·w); ``up`` is indexed by level like the
    encoder (``up[0]`` works at full resolution) and run from the last level to the first."""

    def __init__(self, *, ch, out_ch, ch_mult, num_res_blocks, attn_resolutions, dropout,
                 resolution, z_channels, **_):
        super().__init__()
        n = len(ch_mult)
        cin = ch * ch_mult[-1]
        res = resolution // 2 ** (n - 1)
        self.conv_in = nn.Conv2d(z_channels, cin, 3, padding=1)
        self.mid = _mid(cin, dropout)
        levels = [None] * n
        for i in reversed(range(n)):
            cout = ch * ch_mult[i]
            blocks, attns = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(cin, cout, dropout))
                cin = cout
                if res in attn_resolutions:
                    attns.append(AttnBlock(cin))
            levels[i] = _level(blocks, attns, Upsample(cin) if i else None, "upsample")
            res = res * 2 if i else res
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, out_ch, 3, padding=1)

    def forward(self, z):
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for lvl in reversed(self.up):
            for j, block in enumerate(lvl.block):
                h = block(h)
                if len(lvl.attn):
                    h = lvl.attn[j](h)
            if hasattr(lvl, "upsample"):
                h = lvl.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """taming's ``VectorQuantizer2`` at inference: each latent vector (over channels) is replaced
    by its nearest codebook entry ``embedding.weight[k]`` (squared Euclidean distance), with the
    straight-through estimator z_q = h + sg(e_k − h) (gradient identity w.r.t. h)."""

    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)

    def indices(self, h: torch.Tensor) -> torch.Tensor:
        """(B, d, H, W) → (B, H, W) int64 code indices."""
        flat = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])
        e = self.embedding.weight.to(flat.dtype)
        d = flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * flat @ e.T
        return d.argmin(1).reshape(h.shape[0], h.shape[2], h.shape[3])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            q = self.embedding(self.indices(h)).permute(0, 3, 1, 2).to(h.dtype)
        return h + (q - h).detach()


# ---------------------------------------------------------------------------- the models
class Autoencoder(nn.Module):
    """Common interface of the first-stage models (see the module docstring)."""

    kind = "autoencoder"

    def __init__(self, config: dict):
        super().__init__()
        self.config = full_config(config)
        dd = self.config["ddconfig"]
        self.factor = 2 ** (len(dd["ch_mult"]) - 1)
        self.latent_channels = self.config["embed_dim"]
        self.image_channels = dd["in_channels"]
        self.encoder = Encoder(**dd)
        self.decoder = Decoder(**dd)

    @property
    def param_dtype(self) -> torch.dtype:
        return self.decoder.conv_in.weight.dtype

    def latent_shape(self, x_shape) -> tuple:
        """(C, H, W) of images → (C_z, H/f, W/f); a ShapeError when H or W is not a multiple of
        f or C is not the autoencoder's channel count."""
        C, H, W = (int(s) for s in x_shape)
        f = self.factor
        if C != self.image_channels or H % f or W % f:
            raise ShapeError(f"the {self.kind} autoencoder takes {self.image_channels}-channel "
                             f"images with H and W multiples of {f}, got {C}x{H}x{W}")
        return (self.latent_channels, H // f, W // f)

    def _check(self, x, channels, what):
        if x.dim() != 4 or x.shape[1] != channels:
            raise ShapeError(f"{self.kind} autoencoder: {what} must be (B, {channels}, H, W), "
                             f"got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor, **_) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, h: torch.Tensor, **_) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x):
        return self.decode(self.encode(x))


class VQModel(Autoencoder):
    """``VQModelInterface``: encode → pre-quantisation latents; decode quantises (default).

    Keys: ``encoder.*``, ``decoder.*``, ``quantize.embedding.weight`` (n_embed × embed_dim),
    ``quant_conv`` (z_channels → embed_dim, 1×1), ``post_quant_conv`` (embed_dim → z_channels).
    """

    kind = "vq"

    def __init__(self, config: dict):
        super().__init__(config)
        c, dd = self.config, self.config["ddconfig"]
        self.quantize = VectorQuantizer(c["n_embed"], c["embed_dim"])
        self.quant_conv = nn.Conv2d(dd["z_channels"], c["embed_dim"], 1)
        self.post_quant_conv = nn.Conv2d(c["embed_dim"], dd["z_channels"], 1)

    def encode(self, x: torch.Tensor, **_) -> torch.Tensor:
        """x (B, C, H, W) in [-1, 1] → h = quant_conv(encoder(x)) (B, embed_dim, H/f, W/f)."""
        self._check(x, self.image_channels, "x")
        return self.quant_conv(self.encoder(x.to(self.param_dtype))).to(x.dtype)

    def decode(self, h: torch.Tensor, quantize: bool = True, **_) -> torch.Tensor:
        """h → decoder(post_quant_conv(quantize(h))); ``quantize=False`` is the reference's
        ``force_not_quantize=True``."""
        self._check(h, self.latent_channels, "the latent")
        q = h.to(self.param_dtype)
        if quantize:
            q = self.quantize(q)
        return self.decoder(self.post_quant_conv(q)).to(h.dtype)


class AutoencoderKL(Autoencoder):
    """KL-regularised autoencoder: ``quant_conv`` gives 2·embed_dim moments (mean, log σ²
    clamped to [-30, 20] as in ``DiagonalGaussianDistribution``)."""

    kind = "kl"

    def __init__(self, config: dict):
        super().__init__(config)
        c, dd = self.config, self.config["ddconfig"]
        self.quant_conv = nn.Conv2d(2 * dd["z_channels"], 2 * c["embed_dim"], 1)
        self.post_quant_conv = nn.Conv2d(c["embed_dim"], dd["z_channels"], 1)

    def encode(self, x: torch.Tensor, sample: bool = False,
               generator: torch.Generator | None = None, **_) -> torch.Tensor:
        """x → the posterior mean (``sample=False``) or a draw mean + σ·n (``sample=True``)."""
        self._check(x, self.image_channels, "x")
        mean, logvar = self.quant_conv(self.encoder(x.to(self.param_dtype))).chunk(2, dim=1)
        if sample:
            std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
            mean = mean + std * randn(mean.shape, generator, mean.dtype, mean.device)
        return mean.to(x.dtype)

    def decode(self, h: torch.Tensor, **_) -> torch.Tensor:
        self._check(h, self.latent_channels, "the latent")
        return self.decoder(self.post_quant_conv(h.to(self.param_dtype))).to(h.dtype)


def build(config) -> Autoencoder:
    """A first-stage model for a named config or a config dict (meta-device friendly)."""
    if isinstance(config, str):
        if config not in CONFIGS:
            raise ParameterError(f"unknown autoencoder config {config!r}; named: "
                                 f"{', '.join(CONFIGS)}")
        config = CONFIGS[config]
    cfg = full_config(config)
    return (VQModel if cfg["type"] == "vq" else AutoencoderKL)(cfg)


# ---------------------------------------------------------------------------- checkpoints
def matches(keys, prefix: str = "") -> bool:
    """Whether state-dict ``keys`` hold a first stage (under ``prefix``)."""
    keys = set(keys)
    return {prefix + "encoder.conv_in.weight", prefix + "decoder.conv_out.weight",
            prefix + "quant_conv.weight", prefix + "post_quant_conv.weight"} <= keys


def _indices(keys, prefix):
    n = len(prefix)
    return sorted({int(k[n:].split(".", 1)[0]) for k in keys
                   if k.startswith(prefix) and k[n:].split(".", 1)[0].isdigit()})


def infer_config(sd: dict, prefix: str = "", resolution: int = 256) -> dict:
    """The first-stage config from tensor shapes (``resolution`` only decides which levels'
    ``attn_resolutions`` entries are named; the network is the same)."""
    p = prefix
    ch = sd[p + "encoder.conv_in.weight"].shape[0]
    levels = _indices(sd, p + "encoder.down.")
    mult = [sd[f"{p}encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in levels]
    nrb = len(_indices(sd, p + "encoder.down.0.block."))
    attn = [resolution // 2 ** i for i in levels if f"{p}encoder.down.{i}.attn.0.q.weight" in sd]
    z = sd[p + "decoder.conv_in.weight"].shape[1]
    emb = sd[p + "post_quant_conv.weight"].shape[1]
    double_z = sd[p + "encoder.conv_out.weight"].shape[0] == 2 * z
    dd = {"double_z": double_z, "z_channels": z, "resolution": resolution,
          "in_channels": sd[p + "encoder.conv_in.weight"].shape[1],
          "out_ch": sd[p + "decoder.conv_out.weight"].shape[0], "ch": ch, "ch_mult": mult,
          "num_res_blocks": nrb, "attn_resolutions": attn, "dropout": 0.0}
    if p + "quantize.embedding.weight" in sd:
        return full_config({"type": "vq", "embed_dim": emb,
                            "n_embed": sd[p + "quantize.embedding.weight"].shape[0],
                            "ddconfig": dd})
    return full_config({"type": "kl", "embed_dim": emb, "ddconfig": dd})


def load(name_or_path, config=None, dtype=None, device=None) -> Autoencoder:
    """A standalone first-stage checkpoint (``vq-f4`` … by registry name, or a path to its
    ``model.ckpt``) → :class:`Autoencoder`. The training loss (``loss.*``) is dropped; the
    config is ``config`` (name or dict), the registry's, or inferred from the shapes."""
    from . import registry
    from .checkpoint import fit_state_dict, read_checkpoint
    from .ddpm_unet import normalize_state_dict
    from .loading import ModelNotFoundError, _not_downloaded
    from .network import parse_dtype
    path, entry = os.fspath(name_or_path), None
    if isinstance(name_or_path, str) and name_or_path in registry.ENTRIES:
        entry = registry.ENTRIES[name_or_path]
        path = registry.local_path(entry)
        if path is None:
            raise ModelNotFoundError(_not_downloaded(entry))
    sd, _ = normalize_state_dict(read_checkpoint(path))
    sd = {k: v for k, v in sd.items() if not k.startswith("loss.")}
    if not matches(sd):
        raise ParameterError(f"{path!r} is not a first-stage (VQ/KL autoencoder) checkpoint")
    if config is None:
        config = entry.config if entry is not None and entry.config else infer_config(sd)
    with torch.device("meta"):
        net = build(config)
    out = fit_state_dict(net, sd, f"autoencoder {path!r}", parse_dtype(dtype), device).eval()
    return out  # type: ignore[return-value]  # fit_state_dict returns the module it was given


__all__ = ["Autoencoder", "VQModel", "AutoencoderKL", "Encoder", "Decoder", "VectorQuantizer",
           "CONFIGS", "build", "full_config", "infer_config", "matches", "load"]
