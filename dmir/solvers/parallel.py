"""One batched network evaluation spread over several devices (DeqIR evaluates all T states of
its fixed point at once): the batch is split evenly over the devices, each share in chunks of
at most ``chunk``, issued round-robin (CUDA work is asynchronous) and gathered in order. The
model is replicated once per extra device (``replicas`` caches the copies)."""
from __future__ import annotations

import copy

import torch

from ..errors import ParameterError

__all__ = ["model_device", "default_devices", "resolve_devices", "eps_on_devices"]


def model_device(model) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for parameter-less priors."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def default_devices(model) -> list:
    """Every visible GPU when the model is on one, else the model's device."""
    home = model_device(model)
    if home.type == "cuda":
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return [home]


def resolve_devices(devices) -> list:
    """A device or list of devices, checked to exist (``cuda`` = the current GPU)."""
    if isinstance(devices, (str, torch.device)):
        devices = [devices]
    try:
        out = [torch.device(d) for d in devices]
    except (TypeError, RuntimeError) as e:
        raise ParameterError(f"devices must be None or a list of devices, got "
                             f"{devices!r} ({e})") from None
    if not out:
        raise ParameterError("devices must not be empty")
    out = [torch.device("cuda", torch.cuda.current_device())
           if d.type == "cuda" and d.index is None and torch.cuda.is_available() else d
           for d in out]
    for d in out:
        if d.type == "cuda" and (not torch.cuda.is_available()
                                 or (d.index or 0) >= torch.cuda.device_count()):
            raise ParameterError(f"device {d} is not available")
    return out


def _replica(model, dev: torch.device, replicas: dict):
    home = model_device(model)
    if dev == home or (dev.type == home.type == "cpu"):
        return model
    key = str(dev)
    if key not in replicas:
        replicas[key] = copy.deepcopy(model).to(dev)
    return replicas[key]


def eps_on_devices(model, x: torch.Tensor, t: torch.Tensor, devices, chunk=None,
                   replicas: dict | None = None) -> torch.Tensor:
    """``model.eps`` of a flat batch x (M, C, H, W) at timesteps t (M,), split over
    ``devices`` in chunks of at most ``chunk``; returned on x's device, in order."""
    replicas = {} if replicas is None else replicas
    M = x.shape[0]
    nd = len(devices)
    per = -(-M // nd)
    size = per if chunk is None else min(per, chunk)
    queues = []                        # per device: (device, start, stop) chunks
    for d, dev in enumerate(devices):
        lo, hi = d * per, min((d + 1) * per, M)
        queues.append([(dev, s, min(s + size, hi)) for s in range(lo, hi, size)])
    order = []
    for r in range(max(len(q) for q in queues)):
        order += [q[r] for q in queues if r < len(q)]
    outs = {}
    for dev, s, e in order:
        net = _replica(model, dev, replicas)
        xs = x[s:e].to(dev, non_blocking=True)
        ts = t[s:e].to(dev, non_blocking=True)
        outs[s] = net.eps(xs, ts)
    return torch.cat([outs[s].to(x.device) for s in sorted(outs)])
