"""Consistency models (and their EDM teachers) from OpenAI's ``consistency_models`` release.

Reference: Y. Song, P. Dhariwal, M. Chen and I. Sutskever, "Consistency Models", ICML 2023
(arXiv 2303.01469); code github.com/openai/consistency_models (``cm/karras_diffusion.py``,
``cm/unet.py``, ``cm/script_util.py``, launch flags in ``scripts/launch.sh``). The checkpoints
(``cd_bedroom256_lpips.pt``, ``ct_bedroom256.pt``, ``cd_imagenet64_l2.pt``, …) are plain
``state_dict`` files of that code's ``UNetModel``.

**The network** is guided-diffusion's ADM UNet (:mod:`dmir.models.nets.adm`, not copied here) with
two differences read from ``cm/unet.py``:

1. the attention ``qkv`` and ``proj_out`` layers are 1×1 ``Conv2d`` (``conv_nd(dims=2, …)``),
   so their weights are (3C, C, 1, 1) and (C, C, 1, 1) where guided-diffusion has Conv1d
   (3C, C, 1) — the same function, different state-dict shapes;
2. ``UNetModel`` never passes ``attention_type``, so every ``AttentionBlock`` uses its default
   ``"flash"`` path, ``QKVFlashAttention``, which splits the qkv channels as
   ``"b (three h d) s"``: [q|k|v] outermost, then heads — guided-diffusion's *new* order
   (``use_new_attention_order=True`` in :mod:`dmir.models.nets.adm`), whatever the
   ``use_new_attention_order`` flag says (the flash path ignores it; the later revision of
   ``QKVAttentionLegacy`` was changed to the same split). Scale 1/√d as FlashAttention's default.

Everything else (module tree and key names, ResBlocks with optional up/down sampling, GroupNorm
32 in float32, the cos-then-sin timestep embedding, ``label_emb``) is the ADM code, so
:func:`build` is ``adm.build(cfg, attention_conv2d=True, use_new_attention_order=True)``.

**The denoiser** (``KarrasDenoiser.denoise``, EDM preconditioning, σ_data = 0.5): for a
variance-exploding input x_σ = x_0 + σ z with σ ∈ [σ_min, σ_max] = [0.002, 80],

    D(x_σ, σ) = c_skip(σ) x_σ + c_out(σ) F(c_in(σ) x_σ, 250 · ln(σ + 1e-44))

with, for a consistency model (``distillation=True``, the boundary-condition scalings of the
paper's Eq. (3) / Appendix C, ``get_scalings_for_boundary_condition``)

    c_skip = σ_d² / ((σ − σ_min)² + σ_d²),  c_out = (σ − σ_min) σ_d / √(σ² + σ_d²),
    c_in = 1 / √(σ² + σ_d²),

so D(x, σ_min) = x exactly (c_skip = 1, c_out = 0), and for an EDM teacher
(``distillation=False``, ``get_scalings``) c_skip = σ_d²/(σ² + σ_d²), c_out = σ σ_d/√(σ² + σ_d²).
A consistency model maps any point of a probability-flow trajectory to its start: one network
evaluation gives a clean image. The network's "timestep" input is the float 250 ln σ (≈ −1554 …
1095), not an index.

**As a dmir prior** (``eps``, ``alphas_cumprod``) a CM is mapped onto a discrete
variance-preserving schedule ᾱ_t (default: the DDPM linear 1000-step schedule, configurable by
``diffusion_steps``/``noise_schedule``; it is *not* part of the checkpoint): a VP state
x_t = √ᾱ x_0 + √(1−ᾱ) ε is the VE state x_σ = x_t / √ᾱ at σ_t = √((1−ᾱ_t)/ᾱ_t) (same
signal-to-noise ratio), so

    x̂_0(x_t, t) = D(x_t/√ᾱ_t, σ_t),        ε(x_t, t) = (x_t − √ᾱ_t x̂_0) / √(1−ᾱ_t).

Every sampler of dmir then runs on a CM (one network evaluation per ``eps``). With the linear
schedule σ_t runs from 0.01 (t = 0) to 157 (t = 999); σ_t > σ_max = 80 (t ≳ 930) is outside the
trained range and evaluated as is (the preconditioning keeps the input at unit variance).
DCDP's ``purifier="consistency"`` calls :meth:`ConsistencyPrior.denoise` directly, once per
outer iteration.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ...errors import ParameterError, ShapeError
from . import adm
from ..base import make_schedule
from ..network import NetworkPrior

FORMAT = "cm"

#: ``cm/script_util.py`` ``model_and_diffusion_defaults()`` for the network (the defaults
#: differ from guided-diffusion's in ``attention_resolutions``), plus the KarrasDenoiser
#: settings (σ_data = 0.5 is fixed by ``create_model_and_diffusion``), ``distillation`` (True
#: for consistency models: boundary-condition scalings; False for the EDM teachers), and the
#: VP schedule that maps dmir's discrete timesteps onto σ (``diffusion_steps``,
#: ``noise_schedule``; dmir's own, not a setting of the checkpoint).
DEFAULTS: dict = {
    **adm.DEFAULTS,
    "attention_resolutions": "32,16,8",
    "sigma_min": 0.002,
    "sigma_max": 80.0,
    "sigma_data": 0.5,
    "distillation": True,
}
_KARRAS_KEYS = ("sigma_min", "sigma_max", "sigma_data", "distillation")
#: launch-script flags that do not change the network's function at inference; accepted and
#: dropped (``training_mode`` is read first: "consistency_*" ⇒ distillation=True, "edm" ⇒ False)
IGNORED_KEYS = adm.IGNORED_KEYS + ("weight_schedule", "training_mode", "teacher_dropout",
                                   "sampler", "steps", "ts", "generator", "clip_denoised")

# Flags of scripts/launch.sh (sampling commands) for the released models.
_LSUN256 = dict(image_size=256, num_channels=256, num_res_blocks=2, num_head_channels=64,
                attention_resolutions="32,16,8", resblock_updown=True,
                use_scale_shift_norm=False, class_cond=False, learn_sigma=False, use_fp16=True,
                dropout=0.0)
_IMAGENET64 = dict(image_size=64, num_channels=192, num_res_blocks=3, num_head_channels=64,
                   attention_resolutions="32,16,8", resblock_updown=True,
                   use_scale_shift_norm=True, class_cond=True, learn_sigma=False, use_fp16=True,
                   dropout=0.0)


def full_config(config: dict | None = None) -> dict:
    """:data:`DEFAULTS` updated with ``config``, validated and normalised (network keys as
    :func:`dmir.models.nets.adm.full_config`; σ_min < σ_max, σ_data > 0; ``learn_sigma`` must be
    False: the consistency-model output is the denoised image, not ε and a variance).

    Raises:
        ParameterError: an unknown key (the message lists the allowed ones) or a bad value.
    """
    given = dict(config or {})
    mode = given.pop("training_mode", None)
    if mode is not None and "distillation" not in given:
        given["distillation"] = "consistency" in str(mode)   # as scripts/image_sample.py
    for key in IGNORED_KEYS:
        given.pop(key, None)
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ParameterError(
            f"unknown cm config key(s) {', '.join(map(repr, unknown))}; allowed: "
            f"{', '.join(DEFAULTS)} (ignored: {', '.join(IGNORED_KEYS)})")
    cfg = {**DEFAULTS, **given}
    karras = {k: cfg.pop(k) for k in _KARRAS_KEYS}
    for key in ("sigma_min", "sigma_max", "sigma_data"):
        v = karras[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
            raise ParameterError(f"{key} must be a positive finite number, got {v!r}")
        karras[key] = float(v)
    if karras["sigma_min"] >= karras["sigma_max"]:
        raise ParameterError(f"sigma_min ({karras['sigma_min']}) must be < sigma_max "
                             f"({karras['sigma_max']})")
    if not isinstance(karras["distillation"], bool):
        raise ParameterError(f"distillation must be True (consistency model) or False (EDM "
                             f"denoiser), got {karras['distillation']!r}")
    if cfg.get("learn_sigma") is True:
        raise ParameterError("learn_sigma=True is not supported by the cm format: the network "
                             "output is used as the denoised image (3 channels), as in "
                             "KarrasDenoiser.denoise")
    return {**adm.full_config(cfg), **karras}


def _network_part(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k in adm.DEFAULTS}


#: Released checkpoints (README of openai/consistency_models) and their launch flags:
#:
#: ===============  ==========================================================  ===========
#: config           files                                                       parameters
#: ===============  ==========================================================  ===========
#: cm-lsun256       cd_bedroom256_{lpips,l2}.pt, ct_bedroom256.pt, cat256 same  526,304,771
#: cm-imagenet64    cd_imagenet64_{lpips,l2}.pt, ct_imagenet64.pt               295,899,267
#: edm-lsun256      edm_bedroom256_ema.pt, edm_cat256_ema.pt (EDM teachers)     526,304,771
#: edm-imagenet64   edm_imagenet64_ema.pt                                       295,899,267
#: ===============  ==========================================================  ===========
#:
#: Counts measured with :func:`build` on the meta device. ``tests/test_consistency.py`` derives
#: them independently: LSUN = guided-diffusion's LSUN ADM (552,814,086) minus the scale-shift
#: half of every ResBlock's embedding projection (no ``use_scale_shift_norm``) and the 3
#: learned-σ output channels; ImageNet-64 = guided-diffusion's class-conditional 64×64 ADM
#: (295,904,454, the network EDM reports as "296M") minus the 3 learned-σ output channels.
CONFIGS: dict[str, dict] = {
    "cm-lsun256": full_config(_LSUN256),
    "cm-imagenet64": full_config(_IMAGENET64),
    "edm-lsun256": full_config({**_LSUN256, "distillation": False, "dropout": 0.1}),
    "edm-imagenet64": full_config({**_IMAGENET64, "distillation": False, "dropout": 0.1}),
}


def build(config: dict) -> nn.Module:
    """The UNet of a (partial) config: :func:`dmir.models.nets.adm.build` with the 1×1 Conv2d
    attention projections and the flash (new) head order of ``cm/unet.py``. Built on the
    current default device (``with torch.device("meta")`` allocates nothing)."""
    cfg = full_config(config)
    return adm.build(_network_part(cfg), attention_conv2d=True, use_new_attention_order=True)


# ---------------------------------------------------------------------------- checkpoints
def matches(state_dict) -> bool:
    """Whether a state dict (key → tensor) is a consistency_models UNet: the ADM keys, with the
    always-present middle attention's ``qkv`` weight 4-D (Conv2d)."""
    keys = set(state_dict)
    if not adm.matches(keys):
        return False
    w = state_dict.get("middle_block.1.qkv.weight") if hasattr(state_dict, "get") else None
    return w is not None and getattr(w, "dim", lambda: 0)() == 4


def _as_adm_shapes(state_dict) -> dict:
    """The same tensors with the 1×1 Conv2d attention weights viewed as Conv1d (…, 1)."""
    return {k: (v[..., 0] if v.dim() == 4 and k.endswith((".qkv.weight", ".proj_out.weight"))
                else v) for k, v in state_dict.items()}


_SIZE_BY_LEVELS = {7: 512, 6: 256, 5: 128, 4: 64}


def infer_config(state_dict, image_size: int | None = None) -> tuple[dict, list[str]]:
    """The config of a consistency_models UNet read from its tensor shapes, and notes on what
    was inferred or assumed (see :func:`dmir.models.nets.adm.infer_config`). Not stored in the
    weights: ``image_size`` (assumed from the number of levels as ``script_util``'s default
    channel_mult: 4 → 64, 6 → 256), the head split (64 channels per head when the widths allow,
    as every released model), σ_min/σ_max/σ_data (0.002/80/0.5) and ``distillation`` (True: a
    consistency model; an EDM teacher needs ``distillation=False``)."""
    if not matches(state_dict):
        raise ParameterError("not a consistency_models UNet state dict: expected the ADM keys "
                             "(time_embed.0.weight, input_blocks.0.0.weight, out.2.weight) with "
                             "a 4-D middle_block.1.qkv.weight")
    sd = _as_adm_shapes(state_dict)
    notes_extra = []
    if image_size is None:
        cfg, _ = adm.infer_config(sd, image_size=256)
        levels = len(cfg["channel_mult"])
        image_size = _SIZE_BY_LEVELS.get(levels, 256)
        notes_extra.append(f"image_size={image_size} (assumed from the {levels} levels, as "
                           f"script_util's default channel_mult; not stored in the weights)")
    cfg, notes = adm.infer_config(sd, image_size=image_size)
    notes = [n for n in notes if not n.startswith(("use_new_attention_order", "image_size=256",
                                                   "dropout=0.0, use_fp16"))]
    notes += notes_extra + [
        "attention head order: the flash layout [q|k|v][head][d] of cm/unet.py (fixed)",
        "sigma_min=0.002, sigma_max=80, sigma_data=0.5, distillation=True (assumed: a "
        "consistency model; pass config={'distillation': False} for an EDM teacher)",
        "VP schedule for eps/alphas_cumprod: linear, 1000 steps (dmir's mapping, not stored)"]
    if cfg["learn_sigma"]:
        raise ParameterError("the state dict's output has 6 channels (learned sigma); "
                             "consistency models output 3")
    cfg.pop("use_new_attention_order", None)
    return full_config({**cfg, "use_fp16": False}), notes


def schedule(config: dict) -> torch.Tensor:
    """ᾱ_t (float64) of the VP schedule that maps timestep indices onto σ (dmir's choice)."""
    cfg = full_config(config)
    return make_schedule(cfg["noise_schedule"], cfg["diffusion_steps"])


# ---------------------------------------------------------------------------- the prior
class ConsistencyPrior(NetworkPrior):
    """A consistency model (or EDM denoiser) as a dmir prior.

    :meth:`denoise` is the model's own interface, D(x_σ, σ) in the VE parametrisation (one
    network evaluation); :meth:`eps` / :meth:`x0` / ``alphas_cumprod`` map it onto the VP
    schedule (see the module docstring) so every dmir sampler runs on it.

    Args:
        net: the UNet (:func:`build`), ``forward(x, t, y=None)`` with t = 250 ln σ.
        alphas_cumprod: the VP schedule for the timestep ↔ σ mapping.
        sigma_min, sigma_max, sigma_data: the KarrasDenoiser constants (0.002, 80, 0.5).
        distillation: True — consistency-model boundary-condition scalings; False — EDM.
        kw: :class:`~dmir.models.network.NetworkPrior` options (class_labels, name, info, …).
    """

    def __init__(self, net: nn.Module, alphas_cumprod: torch.Tensor, *, sigma_min=0.002,
                 sigma_max=80.0, sigma_data=0.5, distillation: bool = True, **kw):
        kw.setdefault("name", "consistency-model" if distillation else "edm-denoiser")
        super().__init__(net, alphas_cumprod, prediction="sample", learned_sigma=False, **kw)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.sigma_data = float(sigma_data)
        self.distillation = bool(distillation)

    # ------------------------------------------------------------------ VE parametrisation
    def scalings(self, sigma: torch.Tensor, sigma_min: float | None = None):
        """(c_skip, c_out, c_in) for σ (float64 tensor), as ``KarrasDenoiser``. ``sigma_min``:
        σ_min as rounded to the precision σ was given in (default: :attr:`sigma_min`)."""
        sd2 = self.sigma_data ** 2
        norm = (sigma ** 2 + sd2).sqrt()
        if self.distillation:      # get_scalings_for_boundary_condition
            s = sigma - (self.sigma_min if sigma_min is None else sigma_min)
            return sd2 / (s ** 2 + sd2), s * self.sigma_data / norm, 1 / norm
        return sd2 / (sigma ** 2 + sd2), sigma * self.sigma_data / norm, 1 / norm

    def _sigmas(self, sigma, x: torch.Tensor):
        """σ as a float64 (B,) tensor, and σ_min rounded to the precision σ was given in, so
        that σ = σ_min in float32 (as the reference computes) hits the boundary exactly."""
        given = (sigma if isinstance(sigma, torch.Tensor)
                 else torch.as_tensor(sigma, dtype=torch.float64))
        sigma_min = self.sigma_min
        if given.is_floating_point() and given.dtype != torch.float64:
            sigma_min = float(torch.tensor(self.sigma_min, dtype=given.dtype))
        s = given.to(dtype=torch.float64, device=x.device)
        B = x.shape[0]
        if s.dim() > 1 or (s.dim() == 1 and s.shape[0] not in (1, B)):
            raise ShapeError(f"sigma must be a number or one per image ({B}), got shape "
                             f"{tuple(s.shape)}")
        s = s.reshape(-1).expand(B)
        if not (torch.isfinite(s).all() and (s > 0).all()):
            raise ParameterError(f"{self.name}: sigma must be positive and finite (the model "
                                 f"was trained on [{self.sigma_min:g}, {self.sigma_max:g}])")
        return s, sigma_min

    def denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """D(x_σ, σ): x (B, C, H, W) = x_0 + σ z in model units ([-1, 1] images plus noise),
        σ a number or (B,) > 0 → the clean estimate, not clipped. One network evaluation."""
        s, sigma_min = self._sigmas(sigma, x)
        c_skip, c_out, c_in = (c.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
                               for c in self.scalings(s, sigma_min))
        t_in = 1000 * 0.25 * torch.log(s + 1e-44)           # rescaled_t of the reference
        return c_skip * x + c_out * self.forward_raw(c_in * x, t_in)

    def sigma_of(self, t) -> torch.Tensor:
        """σ_t = √((1-ᾱ_t)/ᾱ_t) (float64) of the VP timestep(s) t."""
        a = self.alpha_bar(t)
        return ((1 - a) / a).sqrt()

    # ------------------------------------------------------------------ VP protocol
    def x0(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """x̂_0 = D(x_t/√ᾱ_t, σ_t)."""
        a = self.alpha_bar(t)
        scale = a.sqrt().to(x_t.dtype).reshape(-1, *([1] * (x_t.dim() - 1)))
        return self.denoise(x_t / scale, self.sigma_of(t))

    def eps(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """ε = (x_t − √ᾱ_t x̂_0) / √(1−ᾱ_t), x̂_0 from :meth:`x0` (one network evaluation)."""
        a = self.alpha_bar(t).to(x_t.dtype).reshape(-1, *([1] * (x_t.dim() - 1)))
        return (x_t - a.sqrt() * self.x0(x_t, t)) / (1 - a).sqrt()

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, {'consistency' if self.distillation else 'EDM'}, "
                f"sigma=[{self.sigma_min:g}, {self.sigma_max:g}], sigma_data={self.sigma_data:g}, "
                f"params={self.num_parameters():,}")


def prior(net: nn.Module, config: dict, **kw) -> ConsistencyPrior:
    """Wrap a consistency_models UNet as a :class:`ConsistencyPrior`; ``kw`` overrides the
    defaults from the config (``class_labels=``, ``name=``, ``info=``, ``compute_dtype=``)."""
    cfg = full_config(config)
    args = dict(in_channels=cfg["in_channels"], image_size=cfg["image_size"],
                num_classes=cfg["num_classes"] if cfg["class_cond"] else None,
                sigma_min=cfg["sigma_min"], sigma_max=cfg["sigma_max"],
                sigma_data=cfg["sigma_data"], distillation=cfg["distillation"],
                name=FORMAT, info={"format": FORMAT, "config": cfg})
    args.update(kw)
    return ConsistencyPrior(net, schedule(cfg), **args)


__all__ = ["ConsistencyPrior", "CONFIGS", "DEFAULTS", "FORMAT", "build", "full_config",
           "infer_config", "matches", "prior", "schedule"]
