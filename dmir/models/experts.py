"""Timestep experts: several denoising networks, each serving its own range of timesteps.

eDiff-I (Balaji et al. 2022, §3.2, "ensemble of expert denoisers") trains one denoiser per
interval of noise levels instead of one for all: the high-noise steps decide the layout and the
colours of a sample, the low-noise steps its textures, and a small network serves either better
alone than both at once. For dmir's shipped prior this is what CPU compute affords: a 4 M-parameter
UNet trained with ε-prediction restores detail (SR, small holes) well but its x̂₀ at high noise,
(x_t − √(1−ᾱ) ε̂)/√ᾱ, amplifies every error by 1/√SNR (≈ 150 at t = 999), which is exactly
where colorization and deterministic sampling take their content from; a v-prediction network
is well-conditioned there (Salimans & Ho 2022). Two experts keep both.

:class:`TimestepExperts` is an ``nn.Module`` with the network interface ``forward(x, t, y)`` that
returns ε (each expert's own output — ε or v — converted with the shared schedule), so wrapped
in a :class:`~dmir.models.network.NetworkPrior` (``prediction="epsilon"``) it works with every
solver, the fast path (bf16 autocast, channels_last: they reach the experts' layers) and tiling.

On disk an expert prior is a folder::

    config.json   {"format": "experts",
                   "experts": [{"path": "low",  "timesteps": [0, 800]},
                               {"path": "high", "timesteps": [800, 1000]}]}
    low/          a dmir model folder (config.json + model.safetensors), e.g. ε-prediction
    high/         another one, e.g. v-prediction

The ranges are half-open ``[start, stop)`` in the experts' common schedule and must tile
0..T exactly. The experts must share the schedule (ᾱ) and the number of image channels.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import torch
from torch import nn

from ..checkpoints.reading import CheckpointError
from ..errors import ParameterError

FORMAT = "experts"


class TimestepExperts(nn.Module):
    """Networks ``nets[i]`` serving timesteps ``cuts[i-1] <= t < cuts[i]`` (``cuts[-1] = 0``,
    ``cuts[n-1] = T``); ``predictions[i]`` is what ``nets[i]`` outputs (``epsilon`` or
    ``v_prediction``). ``forward`` returns ε (B, C, H, W) in the input's dtype.

    Args:
        nets: the expert networks, in the order of their ranges (lowest t first).
        predictions: one per net.
        cuts: the n − 1 inner boundaries, strictly increasing, in 1..T-1.
        alphas_cumprod: the shared schedule ᾱ (T,).
    """

    nets: nn.ModuleList
    takes_host_timesteps = True       # NetworkPrior passes ``at`` (see :meth:`forward`)
    sqrt_ab: torch.Tensor
    sqrt_1mab: torch.Tensor

    def __init__(self, nets: Sequence[nn.Module], predictions: Sequence[str],
                 cuts: Sequence[int], alphas_cumprod: torch.Tensor):
        super().__init__()
        T = int(alphas_cumprod.shape[0])
        cuts = [int(c) for c in cuts]
        if len(nets) < 1 or len(predictions) != len(nets) or len(cuts) != len(nets) - 1:
            raise ParameterError(f"{len(nets)} expert networks need {len(nets)} prediction "
                                 f"types and {max(len(nets) - 1, 0)} boundaries, got "
                                 f"{len(predictions)} and {len(cuts)}")
        if any(not 0 < c < T for c in cuts) or any(b <= a for a, b in zip(cuts, cuts[1:])):
            raise ParameterError(f"expert boundaries must increase strictly within 1..{T - 1}, "
                                 f"got {cuts}")
        bad = [p for p in predictions if p not in ("epsilon", "v_prediction")]
        if bad:
            raise ParameterError(f"expert prediction types must be 'epsilon' or "
                                 f"'v_prediction', got {bad[0]!r}")
        self.nets = nn.ModuleList(nets)
        self.predictions = list(predictions)
        self._cuts = cuts                 # on the host: routing needs no device read
        ab = alphas_cumprod.to(torch.float64)
        self.register_buffer("sqrt_ab", ab.sqrt().float(), persistent=False)
        self.register_buffer("sqrt_1mab", (1 - ab).sqrt().float(), persistent=False)

    def ranges(self) -> list[tuple[int, int]]:
        """The half-open timestep range [start, stop) of each expert."""
        b = [0] + self._cuts + [int(self.sqrt_ab.shape[0])]
        return list(zip(b[:-1], b[1:]))

    def _run(self, i: int, x: torch.Tensor, t: torch.Tensor, y) -> torch.Tensor:
        """Expert i's ε, in float32 at least (in x's dtype if that is wider): under bf16
        autocast a network's output is bf16, and a v-expert's ε rounded to bf16 would put that
        rounding, times √(1−ᾱ)/√ᾱ (≈ 157 at t = 999), into x̂₀ = (x_t − √(1−ᾱ) ε)/√ᾱ."""
        out = self.nets[i](x, t, y)
        dt = torch.promote_types(torch.promote_types(out.dtype, x.dtype), torch.float32)
        if self.predictions[i] == "epsilon":
            return out.to(dt)
        # v = √ᾱ ε − √(1−ᾱ) x₀ and x_t = √ᾱ x₀ + √(1−ᾱ) ε give ε = √ᾱ v + √(1−ᾱ) x_t
        C = x.shape[1]
        idx = t.round().long().clamp(0, int(self.sqrt_ab.shape[0]) - 1)
        a = self.sqrt_ab[idx].view(-1, 1, 1, 1).to(dt)
        s = self.sqrt_1mab[idx].view(-1, 1, 1, 1).to(dt)
        eps = a * out[:, :C].to(dt) + s * x.to(dt)
        return torch.cat([eps, out[:, C:].to(dt)], 1) if out.shape[1] > C else eps

    def forward(self, x: torch.Tensor, t: torch.Tensor, y=None, at=None) -> torch.Tensor:
        """ε for x (B, C, H, W) at timesteps t (a number, (), or (B,)), each sample from the
        expert whose range holds its timestep.

        ``at``: the same timesteps on the host (a number or a CPU tensor), when the caller has
        them (:meth:`~dmir.models.network.NetworkPrior.forward_raw` passes a solver's scalar
        t). Routing then reads nothing back from the device: no sync per network call on a
        GPU, and each expert can be captured as its own CUDA graph. Without it the route is
        read from ``t``."""
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32).expand(x.shape[0])
        host = (t if at is None else torch.as_tensor(at)).detach().to("cpu", torch.float32)
        which = torch.bucketize(host.reshape(-1), torch.tensor(self._cuts, dtype=torch.float32),
                                right=True).expand(x.shape[0])
        first = int(which[0])                                # t < cuts[0] → expert 0
        if bool((which == first).all()):                     # a solver's batch: one timestep
            return self._run(first, x, t, y)
        out = None
        for i in which.unique().tolist():
            sel = (which == i).nonzero().flatten().to(x.device)
            o = self._run(i, x[sel], t[sel], None if y is None else y[sel])
            if out is None:
                out = o.new_empty((x.shape[0],) + tuple(o.shape[1:]))
            out[sel] = o
        assert out is not None
        return out


def around(expert, base, timesteps: Sequence[int]):
    """``expert`` on the half-open range ``timesteps`` = (start, stop), ``base`` on the rest:
    what ``dmir train --timesteps --val-base`` validates."""
    lo, hi = int(timesteps[0]), int(timesteps[1])
    T = expert.num_timesteps
    parts = [(base, (0, lo))] if lo > 0 else []
    parts.append((expert, (lo, hi)))
    if hi < T:
        parts.append((base, (hi, T)))
    return combine([p for p, _ in parts], [r for _, r in parts], name="validation")


def read_spec(folder: str) -> list[dict]:
    """The experts of an expert-prior folder: ``[{"path": abs folder, "timesteps": (a, b)}]``
    sorted by range; :class:`CheckpointError` for a malformed ``config.json``."""
    cfg = os.path.join(folder, "config.json")
    try:
        with open(cfg, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {cfg!r}: {e}") from None
    ex = meta.get("experts") if isinstance(meta, dict) else None
    if not isinstance(ex, list) or not ex:
        raise CheckpointError(f"{cfg!r}: an expert prior needs a non-empty list \"experts\" "
                              f"of {{\"path\": folder, \"timesteps\": [start, stop]}}")
    out = []
    for item in ex:
        ok = isinstance(item, dict) and isinstance(item.get("path"), str) and \
            isinstance(item.get("timesteps"), list) and len(item["timesteps"]) == 2 and \
            all(isinstance(v, int) and not isinstance(v, bool) for v in item["timesteps"])
        if not ok:
            raise CheckpointError(f"{cfg!r}: each expert must be {{\"path\": folder, "
                                  f"\"timesteps\": [start, stop]}} (integers), got {item!r}")
        p = os.path.normpath(os.path.join(folder, item["path"]))
        if os.path.commonpath([os.path.abspath(p), os.path.abspath(folder)]) != \
                os.path.abspath(folder):
            raise CheckpointError(f"{cfg!r}: expert path {item['path']!r} leaves the folder")
        out.append({"path": p, "timesteps": tuple(item["timesteps"])})
    return sorted(out, key=lambda e: e["timesteps"])


def combine(priors: Sequence, ranges: Sequence[tuple[int, int]], name: str = FORMAT,
            info: dict | None = None):
    """One :class:`~dmir.models.network.NetworkPrior` from network priors and their half-open
    timestep ranges, which must tile 0..T of their common schedule."""
    from .network import NetworkPrior

    if len(priors) != len(ranges) or not priors:
        raise ParameterError("combine needs one timestep range per expert prior")
    order = sorted(range(len(priors)), key=lambda i: tuple(ranges[i]))
    priors = [priors[i] for i in order]
    ranges = [(int(ranges[i][0]), int(ranges[i][1])) for i in order]
    first = priors[0]
    for p in priors:
        if not isinstance(p, NetworkPrior):
            raise ParameterError(f"timestep experts must be network priors, got "
                                 f"{type(p).__name__}")
        if p.learned_sigma or p.num_classes is not None or p.prediction == "sample":
            raise ParameterError(f"expert {p.name}: only unconditional ε- or v-prediction "
                                 f"networks with fixed variance can be combined")
        if p.in_channels != first.in_channels or \
                not torch.allclose(p.alphas_cumprod, first.alphas_cumprod, rtol=0, atol=1e-12):
            raise ParameterError(f"expert {p.name} has another schedule or channel count "
                                 f"than {first.name}")
    T = first.num_timesteps
    if ranges[0][0] != 0 or ranges[-1][1] != T or \
            any(a[1] != b[0] for a, b in zip(ranges, ranges[1:])) or \
            any(a >= b for a, b in ranges):
        raise ParameterError(f"expert timestep ranges must tile 0..{T} without gaps or "
                             f"overlaps, got {ranges}")
    net = TimestepExperts([p.net for p in priors], [p.prediction for p in priors],
                          [r[0] for r in ranges[1:]], first.alphas_cumprod)
    mult = max(p.size_multiple for p in priors)
    nfo = {"format": FORMAT, "experts": [{"timesteps": list(r), "prediction": p.prediction,
                                          "name": p.name, **({"config": p.info["config"]}
                                                             if "config" in p.info else {})}
                                         for r, p in zip(ranges, priors)],
           "notes": list(dict.fromkeys(n for p in priors for n in p.info.get("notes", [])))}
    nfo.update(info or {})
    sizes = [p.image_size for p in priors if p.image_size is not None]
    return NetworkPrior(net, first.alphas_cumprod, in_channels=first.in_channels,
                        image_size=max(sizes) if sizes else None, prediction="epsilon",
                        size_multiple=mult, name=name, info=nfo)


def load_folder(folder: str, load, dtype=None, device=None):
    """Load an expert-prior folder; ``load`` is :func:`dmir.models.load` (each expert is an
    ordinary model folder)."""
    spec = read_spec(folder)
    priors = []
    for e in spec:
        if os.path.abspath(e["path"]) == os.path.abspath(folder):
            raise CheckpointError(f"{folder!r}: an expert cannot be the expert folder itself")
        if not os.path.isdir(e["path"]):
            raise CheckpointError(f"{folder!r}: expert folder {e['path']!r} is missing")
        p = load(e["path"], dtype=dtype, device=device)
        p.name = os.path.basename(e["path"])
        priors.append(p)
    try:
        return combine(priors, [e["timesteps"] for e in spec],
                       name=os.path.basename(os.path.normpath(folder)),
                       info={"path": os.fspath(folder)})
    except ParameterError as e:
        raise CheckpointError(f"{folder!r}: {e}") from None


PRECISIONS = ("float32", "float16", "int8")


def save_model(src: str, dst: str, precision: str = "float16") -> None:
    """Copy the model folder ``src`` (``config.json`` + ``model.safetensors``, e.g. a training
    run's ``best/``) to ``dst`` with its weights stored in ``precision``: "float32",
    "float16" (half the bytes; the fast path rounds to bfloat16 anyway) or "int8" (a quarter:
    :func:`dmir.checkpoints.reading.quantize_int8`, one scale per output channel; biases and
    norms as float16). Integer tensors are kept as they are; the weights file's metadata (a
    run's ``step``) is kept. The copy loads as float32 with :func:`dmir.models.load`. Each
    file is written atomically: a failure never leaves a truncated file in ``dst``."""
    from ..checkpoints.reading import (INT8_KEY, INT8_SCALE, INT8_VALUE, quantize_int8,
                                       read_checkpoint, safetensors_header, write_safetensors)
    from ..io import atomic_write

    if precision not in PRECISIONS:
        raise ParameterError(f"precision must be one of {', '.join(PRECISIONS)}; "
                             f"got {precision!r}")
    weights = os.path.join(src, "model.safetensors")
    for f in ("config.json", "model.safetensors"):
        if not os.path.isfile(os.path.join(src, f)):
            raise CheckpointError(f"{src!r} is not a model folder: {f} is missing")
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ParameterError(f"save_model: the copy must go to another folder than {src!r}")
    sd = dict(read_checkpoint(weights, mmap=False))      # a .safetensors name: read as one
    meta = {k: v for k, v in safetensors_header(weights)[1].items() if k != INT8_KEY}
    meta.setdefault("format", "ddpm")
    if precision == "float16":
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    elif precision == "int8":
        sd = quantize_int8({k: v.float() if v.is_floating_point() else v
                            for k, v in sd.items()})
        sd = {k: v.half() if v.is_floating_point() and not k.endswith(INT8_SCALE)
              else v for k, v in sd.items()}      # biases and norms as float16
        meta[INT8_KEY] = INT8_VALUE
    else:
        sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    os.makedirs(dst, exist_ok=True)
    write_safetensors({k: v.contiguous() for k, v in sd.items()},
                      os.path.join(dst, "model.safetensors"), metadata=meta)
    with open(os.path.join(src, "config.json"), "rb") as fh:
        atomic_write(os.path.join(dst, "config.json"), fh.read())


def save_folder(folder: str, experts: Sequence[tuple[str, tuple[int, int]]],
                precision: str | Sequence[str] = "float16") -> None:
    """Write an expert-prior folder from existing model folders: ``experts`` lists
    ``(model folder, (start, stop))``; each is copied into ``folder/expert<i>`` by
    :func:`save_model` with its weights stored in ``precision`` (one for all, or one per
    expert in the order given): "float32", "float16" (half the bytes, so two 4 M-parameter
    experts take 17 MB like one float32 network) or "int8" (a quarter). Every expert loads as
    float32."""
    from ..io import atomic_write

    kinds = [precision] * len(experts) if isinstance(precision, str) else list(precision)
    if len(kinds) != len(experts) or any(k not in PRECISIONS for k in kinds):
        raise ParameterError(f"precision must be 'float32', 'float16' or 'int8', or one of "
                             f"them per expert ({len(experts)}); got {precision!r}")
    os.makedirs(folder, exist_ok=True)
    spec = []
    order = sorted(range(len(experts)), key=lambda j: tuple(experts[j][1]))
    for i, j in enumerate(order):
        (src, rng), kind = experts[j], kinds[j]
        sub = f"expert{i}"
        save_model(src, os.path.join(folder, sub), kind)
        spec.append({"path": sub, "timesteps": [int(rng[0]), int(rng[1])]})
    atomic_write(os.path.join(folder, "config.json"),
                 json.dumps({"format": FORMAT, "experts": spec}, indent=1).encode())
