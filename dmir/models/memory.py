"""How much memory a restoration needs, and how much the device has: refuse early, tile only
when memory requires it.

* :func:`available_bytes` — what the device can still give: on CPU the kernel's
  ``MemAvailable`` (``/proc/meminfo``; ``sysconf`` elsewhere), on CUDA the free memory
  (``torch.cuda.mem_get_info``).
* :func:`probe` / :func:`network_bytes_per_pixel` — working memory of one network evaluation
  per input pixel and batch element, measured once per prior with a small probe (a 64×64
  forward, forward hooks summing the bytes of every leaf module's output) and cached on the
  prior; the same probe counts convolution and attention FLOPs. Inference
  frees most intermediates as it goes: on the shipped prior the peak RSS growth is ~0.3× the
  leaf-output sum (measured 0.34 at 256², 0.30 at 512²), so the estimate takes
  ``PEAK_FRACTION`` = 0.4 of it. Convolutions are linear in pixels; self-attention
  (the shipped prior has one layer, in the middle block at 1/8 resolution) is quadratic in
  time, which :func:`dmir.models.tiled.plan_tiling` bounds separately.
* :func:`state_bytes` — the sampler's own tensors (x_t, x̂0, ε, y, noise, operator
  intermediates: ``STATE_COPIES`` copies of the image per sample).
* :func:`check_fits` — raise :class:`~dmir.errors.ResourceError` before any work when a run
  cannot fit.
* :func:`is_out_of_memory` — whether an exception is an allocation failure (torch's CPU
  allocator raises a ``RuntimeError``, not ``MemoryError``).
"""
from __future__ import annotations

import math
import os

import torch

from ..errors import ResourceError

#: fraction of the leaf-output sum that is live at the peak (see the module docstring)
PEAK_FRACTION = 0.4
#: float32 copies of the image the sampler keeps per sample (x_t, x̂0, ε, y, z, A x, ...)
STATE_COPIES = 16
#: fraction of the available memory a run may plan to use
USABLE_FRACTION = 0.8
_PROBE = 64


def available_bytes(device="cpu") -> int:
    """Memory the device can still give (bytes)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30     # unknown: assume a modest machine


def _net_of(prior):
    return getattr(prior, "net", None)


def probe(prior) -> dict:
    """One 64×64 forward of the prior's network with hooks, cached on the prior:

    * ``bytes_per_pixel`` — peak working memory per input pixel and batch element
      (``PEAK_FRACTION`` × the bytes of every leaf module's output);
    * ``conv_flops_per_pixel`` — multiply-adds ×2 of the convolutions and linear layers;
    * ``attn_flops_per_pixel2`` — self-attention FLOPs per (input pixel)²: a layer over T
      positions of C channels costs 4·C·T², and T is proportional to the input's pixels, so
      attention grows with the square of the image while everything else grows linearly.

    All zero for priors without a network.
    """
    cached = getattr(prior, "_dmir_probe", None)
    if cached is not None:
        return cached
    out = dict(bytes_per_pixel=0.0, conv_flops_per_pixel=0.0, attn_flops_per_pixel2=0.0)
    net = _net_of(prior)
    if not isinstance(net, torch.nn.Module):
        return out
    acc = dict(bytes=0, conv=0, attn=0)

    def leaf(_m, _i, o):
        if torch.is_tensor(o):
            acc["bytes"] += o.numel() * o.element_size()

    def conv(m, _i, o):
        if torch.is_tensor(o):
            w = m.weight
            acc["conv"] += 2 * o.numel() * (w.numel() // w.shape[0])

    def attn(_m, i, _o):
        x = i[0] if i else None
        if torch.is_tensor(x) and x.dim() >= 3:
            T = math.prod(x.shape[2:]) if x.dim() == 4 else x.shape[1]
            Cc = x.shape[1] if x.dim() == 4 else x.shape[-1]
            acc["attn"] += 4 * Cc * T * T * x.shape[0]

    handles = []
    for m in net.modules():
        name = type(m).__name__.lower()
        if next(m.children(), None) is None:
            handles.append(m.register_forward_hook(leaf))
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            handles.append(m.register_forward_hook(conv))
        if ("attn" in name or "attention" in name) and "cross" not in name:
            handles.append(m.register_forward_hook(attn))
    mult = int(getattr(prior, "size_multiple", 1) or 1)
    side = -(-_PROBE // mult) * mult
    p = next(net.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    C = int(getattr(prior, "in_channels", 3))
    try:
        with torch.inference_mode():
            prior.eps(torch.zeros(1, C, side, side, device=device), 500)
    finally:
        for h in handles:
            h.remove()
    P = side * side
    out = dict(bytes_per_pixel=PEAK_FRACTION * acc["bytes"] / P,
               conv_flops_per_pixel=acc["conv"] / P, attn_flops_per_pixel2=acc["attn"] / P ** 2)
    try:
        prior._dmir_probe = out
    except AttributeError:
        pass
    return out


def network_bytes_per_pixel(prior) -> float:
    """Peak working memory of one ``prior.eps`` call per input pixel and batch element
    (bytes; 0 for priors without a network). See :func:`probe`."""
    return probe(prior)["bytes_per_pixel"]


def weight_bytes(prior) -> int:
    net = _net_of(prior)
    if not isinstance(net, torch.nn.Module):
        return 0
    return sum(t.numel() * t.element_size() for t in list(net.parameters()) + list(net.buffers()))


def state_bytes(shape, samples: int) -> int:
    """The sampler's own tensors for ``samples`` images of ``shape`` (C, H, W), float32."""
    return STATE_COPIES * int(samples) * math.prod(int(s) for s in shape) * 4


def network_bytes(prior, pixels: int, batch: int) -> int:
    """Peak working memory of one network call on ``batch`` images of ``pixels`` pixels."""
    return int(network_bytes_per_pixel(prior) * pixels * batch)


def _gib(n: float) -> str:
    return f"{n / 2 ** 30:.1f} GiB"


def check_fits(shape, samples: int, device="cpu", prior=None, min_network_pixels: int = 0,
               available: int | None = None) -> int:
    """Raise :class:`~dmir.errors.ResourceError` when ``samples`` restorations of ``shape``
    (C, H, W) cannot fit in the device's memory, even with the network on the smallest tile
    (``min_network_pixels`` pixels, one image at a time). Returns the estimate (bytes).

    Checked before anything of that size is allocated (``--scale 1000``, ``--samples 100000``,
    huge images), so the run fails in milliseconds with a message, not after minutes with the
    kernel's OOM killer.
    """
    avail = available_bytes(device) if available is None else int(available)
    need = state_bytes(shape, samples)
    if prior is not None and min_network_pixels:
        need += weight_bytes(prior) + network_bytes(prior, min_network_pixels, 1)
    if need > USABLE_FRACTION * avail:
        C, H, W = (int(s) for s in shape)
        raise ResourceError(
            f"{samples} sample(s) of a {C}x{H}x{W} image need about {_gib(need)} of memory "
            f"but the {torch.device(device).type} device has {_gib(avail)} available; use a "
            f"smaller image, a smaller scale or fewer samples")
    return need


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (MemoryError, CUDA OOM, torch's CPU allocator)."""
    if isinstance(exc, MemoryError):
        return True
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    msg = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in msg
                                              or "not enough memory" in msg
                                              or "out of memory" in msg.lower())


__all__ = ["available_bytes", "probe", "network_bytes_per_pixel", "network_bytes", "weight_bytes",
           "state_bytes", "check_fits", "is_out_of_memory", "PEAK_FRACTION", "STATE_COPIES",
           "USABLE_FRACTION"]
