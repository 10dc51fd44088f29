"""Checking a configuration that came from a file (``config.json``, ``scheduler_config.json``)
or from the caller against sane bounds and against the weights, before a network is built.

A network is built from its config (on the ``meta`` device, so without memory for the
weights), but an absurd config still costs: ``num_res_blocks: 100000`` builds modules for
minutes, ``channels: 1e9`` overflows a storage size, ``num_diffusion_timesteps: 1e9`` allocates
a schedule of 8 GB. So, in order:

1. :func:`check_bounds` — every size-like value within a bound far above any published model
   (:data:`CAPS`, :data:`LIST_CAPS`), numbers finite; the value and the file are named.
2. :func:`check_against_weights` — the structural settings (widths, levels, blocks per level,
   in/out channels) equal what the state dict's tensor shapes say, compared key by key with
   the format's own ``infer_config`` (diffusers: with the shapes directly). A config that does
   not describe the weights is refused before anything is built.
"""
from __future__ import annotations

import math

from ..errors import ParameterError

#: upper bounds of scalar settings (all formats; nested sections are searched too)
CAPS = {
    # widths
    "ch": 65536, "num_channels": 65536, "model_channels": 65536, "z_channels": 65536,
    "context_dim": 65536, "embed_dim": 65536, "num_head_channels": 65536,
    "attention_head_dim": 65536, "norm_num_groups": 4096,
    "in_channels": 4096, "out_ch": 4096, "out_channels": 4096,
    # depth
    "num_res_blocks": 64, "layers_per_block": 64, "transformer_depth": 64,
    "num_heads": 4096, "num_heads_upsample": 4096,
    # sizes and counts
    "image_size": 65536, "sample_size": 65536, "resolution": 65536,
    "num_diffusion_timesteps": 100_000, "diffusion_steps": 100_000, "timesteps": 100_000,
    "num_train_timesteps": 100_000,
    "num_classes": 1_000_000, "num_class_embeds": 1_000_000, "n_classes": 1_000_000,
    "n_embed": 1_000_000,
}
#: list settings: (most entries, largest entry)
LIST_CAPS = {
    "ch_mult": (16, 1024), "channel_mult": (16, 1024), "block_out_channels": (16, 65536),
    "attn_resolutions": (64, 65536), "attention_resolutions": (64, 65536),
    "down_block_types": (16, None), "up_block_types": (16, None),
    "trained_betas": (100_000, None),
}

#: structural settings compared with the weights, per format (what ``infer_config`` reads from
#: the shapes; image size, heads and the schedule leave no trace in the shapes)
STRUCTURE = {
    "ddpm": ("ch", "in_channels", "out_ch", "ch_mult", "num_res_blocks"),
    "adm": ("num_channels", "in_channels", "channel_mult", "num_res_blocks", "learn_sigma",
            "use_scale_shift_norm", "resblock_updown"),
    "cm": ("num_channels", "in_channels", "channel_mult", "num_res_blocks",
           "use_scale_shift_norm", "resblock_updown"),
    "ldm": ("unet.model_channels", "unet.in_channels", "unet.out_channels",
            "unet.channel_mult", "unet.num_res_blocks"),
}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_bounds(cfg, source: str, error=ParameterError, _path: str = "") -> None:
    """Refuse size-like values of ``cfg`` (a dict, searched recursively) beyond :data:`CAPS` /
    :data:`LIST_CAPS`, and non-finite numbers. ``source`` names where the config came from."""
    if not isinstance(cfg, dict):
        return
    for k, v in cfg.items():
        where = f"{_path}{k}"
        if isinstance(v, dict):
            check_bounds(v, source, error, where + ".")
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise error(f"{source}: {where} = {v!r} is not a finite number")
        if k in CAPS and _is_number(v) and abs(v) > CAPS[k]:
            raise error(f"{source}: {where} = {v!r} is out of range (at most {CAPS[k]:,}; "
                        f"no published model comes near)")
        if k in LIST_CAPS:
            most, largest = LIST_CAPS[k]
            items = (v.replace(",", " ").split() if isinstance(v, str) else
                     v if isinstance(v, (list, tuple)) else None)
            if items is None:
                continue
            if len(items) > most:
                raise error(f"{source}: {where} has {len(items):,} entries (at most {most})")
            if largest is not None:
                for x in items:
                    try:
                        fx = float(x)
                    except (TypeError, ValueError):
                        continue          # the format's own validation names a non-number
                    if not math.isfinite(fx) or abs(fx) > largest:
                        raise error(f"{source}: {where} entry {x!r} is out of range (at most "
                                    f"{largest:,})")


def _get(cfg, dotted):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def _norm(v):
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if _is_number(v) and float(v) == int(v):
        return int(v)
    return v


def check_against_weights(fmt: str, mod, cfg: dict, sd: dict, source: str,
                          error=ParameterError) -> None:
    """Refuse ``cfg`` when its structural settings (:data:`STRUCTURE`) differ from those the
    tensor shapes of ``sd`` give (``mod.infer_config``). A state dict whose structure cannot
    be read is left to the later key-by-key fit, which reports it."""
    keys = STRUCTURE.get(fmt)
    if keys is None or not hasattr(mod, "infer_config"):
        return
    try:
        size = cfg.get("image_size") if fmt != "ldm" else cfg["unet"].get("image_size")
        inferred, _ = mod.infer_config(sd, image_size=size)
    except Exception:  # noqa: BLE001 - not readable: fit_state_dict reports the mismatch
        return
    diffs = []
    for k in keys:
        try:
            want, have = _norm(_get(cfg, k)), _norm(_get(inferred, k))
        except (KeyError, TypeError):
            continue
        if want != have:
            diffs.append(f"{k} is {want!r} in the config, {have!r} in the weights")
    if diffs:
        raise error(f"{source} does not describe the weights: " + "; ".join(diffs)
                    + ". Fix the config (or remove it to infer the settings from the weights)")


def check_diffusers_against_weights(unet_cfg: dict, sd: dict, source: str,
                                    error=ParameterError) -> None:
    """The same for a diffusers ``UNet2DModel`` config: ``in_channels``, ``out_channels``,
    ``block_out_channels`` and ``layers_per_block`` against ``conv_in``/``conv_out`` and the
    ``down_blocks``."""
    def shape(k):
        t = sd.get(k)
        return tuple(t.shape) if t is not None and hasattr(t, "shape") else None

    diffs = []
    cin, cout = shape("conv_in.weight"), shape("conv_out.weight")
    boc = unet_cfg.get("block_out_channels")
    if cin is not None and len(cin) == 4:
        if "in_channels" in unet_cfg and _norm(unet_cfg["in_channels"]) != cin[1]:
            diffs.append(f"in_channels is {unet_cfg['in_channels']!r} in the config, {cin[1]} "
                         f"in the weights")
        if isinstance(boc, (list, tuple)) and boc and _norm(boc[0]) != cin[0]:
            diffs.append(f"block_out_channels[0] is {boc[0]!r} in the config, {cin[0]} in "
                         f"the weights")
    if cout is not None and len(cout) == 4 and "out_channels" in unet_cfg and \
            _norm(unet_cfg["out_channels"]) != cout[0]:
        diffs.append(f"out_channels is {unet_cfg['out_channels']!r} in the config, {cout[0]} "
                     f"in the weights")
    levels = {int(k.split(".")[1]) for k in sd if k.startswith("down_blocks.")
              and k.split(".")[1].isdigit()}
    if isinstance(boc, (list, tuple)) and levels and len(boc) != len(levels):
        diffs.append(f"block_out_channels has {len(boc)} levels in the config, the weights "
                     f"{len(levels)}")
    lpb = unet_cfg.get("layers_per_block")
    resnets = {int(k.split(".")[3]) for k in sd if k.startswith("down_blocks.0.resnets.")
               and k.split(".")[3].isdigit()}
    if _is_number(lpb) and resnets and _norm(lpb) != len(resnets):
        diffs.append(f"layers_per_block is {lpb!r} in the config, {len(resnets)} in the "
                     f"weights")
    if diffs:
        raise error(f"{source} does not describe the weights: " + "; ".join(diffs))
