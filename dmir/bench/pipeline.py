"""One benchmark item: degrade a clean image, restore it, measure the result.

The pieces ``dmir bench`` runs for every (dataset, task, method, image); each is a plain
function of tensors and specs (no files except a task's mask/kernel files, no option parsing).

Seeds. Every random draw is seeded from the run seed and *names*, never from positions:

* the operator's own randomness (compressed-sensing permutations and bases):
  ``seed_for(seed, dataset, task, "operator")`` — one operator per (dataset, task), as the
  reference code draws it once per run;
* the measurement noise: ``seed_for(seed, dataset, task, image_id, "noise")``;
* the sampler (x_T and every later draw): ``seed_for(seed, dataset, task, image_id,
  "sample")`` — the same for every method (common random numbers: methods are compared on the
  same noise). The generators live on the CPU whatever the run's device: solvers draw on the
  generator's device and move the noise (:func:`dmir.rng.randn`), so a seed gives the same
  image on every device.

So an image's result is the same whatever the order, the limit, the shard or the number of
processes. Images are restored one at a time (batch 1): a batch would share one generator
between images and tie each result to its batch-mates.
"""
from __future__ import annotations

import copy
import hashlib
import math
import os

import numpy as np
import torch

from .. import metrics, operators, solvers
from ..errors import DmirError, InputError, ParameterError

__all__ = ["seed_for", "generator", "task_operator", "degrade", "restore", "measure",
           "PIXEL_METRICS", "LPIPS_METRICS", "PER_IMAGE_METRICS", "LpipsBank"]

#: metric name → (LPIPS net, input_range) — see :mod:`dmir.metrics.lpips`
LPIPS_METRICS = {"lpips_alex": ("alex", "unit"), "lpips_vgg": ("vgg", "unit"),
                 "lpips_vgg_01": ("vgg", "equs")}
#: always measured (cheap)
PIXEL_METRICS = ("psnr", "ssim", "ssim_uniform", "cons", "cons_8bit")
PER_IMAGE_METRICS = PIXEL_METRICS + tuple(LPIPS_METRICS) + ("nfe", "time")


def seed_for(*parts) -> int:
    """A 63-bit seed from the run seed and names (SHA-256 of the parts; stable everywhere)."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, device="cpu") -> torch.Generator:
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))


# ----------------------------------------------------------------------------- operators
def _resolve_file(value: str) -> str:
    """A mask/kernel path as given, else a data file shipped with dmir (``dmir.data``)."""
    if os.path.exists(value):
        return value
    from ..data import resource
    try:
        return resource(value)
    except InputError:
        raise InputError(f"file '{value}' does not exist (nor is it a data file shipped "
                         f"with dmir)") from None


def task_operator(task, dataset, item=None, seed: int = 0):
    """Build the operator of ``task`` (a :class:`~dmir.bench.spec.TaskSpec`) for the images of
    ``dataset`` (a :class:`dmir.data.ImageDataset`). Returns ``(op, per_image)``;
    ``per_image`` is True when the operator depends on the image (a folder of masks) and must
    be rebuilt for each ``item``.

    Parameter values that name files are read here: ``mask`` (a mask file, a folder of
    per-image masks, or a file shipped with dmir such as ``ddnm_inpainting_mask.npy``; masks are
    cropped/resized like the images) and ``kernel`` (``gauss:SIGMA``, ``box:N``,
    ``motion:L:ANGLE`` or a .npy/.png file, as ``dmir restore --kernel``).
    """
    params = dict(task.params)
    per_image = False
    if isinstance(params.get("mask"), (str, os.PathLike)):
        src = _resolve_file(os.fspath(params["mask"]))
        per_image = os.path.isdir(src)
        if per_image and item is None:
            return None, True
        params["mask"] = dataset.mask(src, item)
    if isinstance(params.get("kernel"), (str, os.PathLike)):
        from ..cli import parse_kernel   # the one parser of kernel specs (dmir restore --kernel)
        params["kernel"] = parse_kernel(os.fspath(params["kernel"]))
    elif isinstance(params.get("kernel"), (list, tuple)):
        params["kernel"] = np.asarray(params["kernel"], dtype=np.float64)
    _, takes_gen = operators.params(task.operator)
    if takes_gen:
        params["generator"] = generator(seed_for(seed, dataset.name, task.name, "operator"))
    return operators.build(task.operator, dataset.shape, **params), per_image


def degrade(op, x: torch.Tensor, sigma_y: float, seed: int) -> torch.Tensor:
    """y = A x + n on the CPU, n ~ N(0, (2σ_y)²) in the model domain (σ_y in [0, 1] pixel
    units), drawn from ``seed``."""
    noise = operators.GaussianNoise(sigma_y)
    with torch.no_grad():
        return noise(op.A(x), generator=generator(seed))


# ----------------------------------------------------------------------------- restoration
def restore(method, model, op, y: torch.Tensor, sigma_y: float, seed: int, device="cpu",
            steps: int | None = None, progress=None):
    """Restore ``y`` with ``method`` (a :class:`~dmir.bench.spec.MethodSpec`; ``"apy"`` = A⁺y).

    ``op`` and ``model`` must already be on ``device``; ``steps`` overrides the method's own.
    Returns ``(x, info)``: x (1, C, H, W) float32 on the CPU (model domain, unclamped) and
    info = {"nfe": network evaluations per image, "time": seconds, "steps": int}.
    """
    y = y.to(device)
    if method.method == "apy":
        from .baselines import apy
        extra = set(method.kwargs) - {"form"}
        if extra:
            raise ParameterError(f"method {method.name}: apy takes only form=, got "
                                 f"{', '.join(sorted(extra))}")
        form = method.kwargs.get("form", "pinv")
        with torch.no_grad():
            x, secs = metrics.timed(apy, op, y, form)
        return x.detach().to("cpu", torch.float32), {"nfe": 0, "time": secs, "steps": 0}
    n_steps = steps if steps is not None else method.steps
    solver = solvers.build(method.method, model, op, steps=n_steps, eta=method.eta,
                           sigma_y=sigma_y, **dict(method.kwargs))
    with metrics.NFECounter(model) as count:
        x, secs = metrics.timed(solver.sample, y, generator=generator(seed),
                                progress=progress)
    info = {"nfe": count.per_image(y.shape[0]), "time": secs,
            "steps": int(getattr(solver, "steps", n_steps or 0) or 0)}
    return x.detach().to("cpu", torch.float32), info


def on_device(op, device):
    """``op`` itself on the CPU, else a copy moved to ``device`` (the CPU copy keeps degrading
    and measuring, so measurements do not depend on the device)."""
    if torch.device(device).type == "cpu":
        return op
    return copy.deepcopy(op).to(device)


# ----------------------------------------------------------------------------- metrics
class LpipsBank:
    """LPIPS networks, loaded once per variant; a variant whose weights are not set up is
    remembered as missing (with the reason) instead of failing the run."""

    def __init__(self, device="cpu"):
        self.device = torch.device(device)
        self.nets, self.missing = {}, {}

    def get(self, name):
        if name in self.missing:
            return None
        if name not in self.nets:
            net, rng = LPIPS_METRICS[name]
            try:
                self.nets[name] = metrics.LPIPS(net, rng).to(self.device)
            except metrics.WeightsNotSetUpError as e:
                self.missing[name] = " ".join(str(e).split())
                return None
        return self.nets[name]


def _finite(v):
    v = float(v)
    return v if math.isfinite(v) else (None if math.isnan(v) else v)


def measure(x, gt, y, op, names, lpips_bank: LpipsBank | None = None) -> dict:
    """Per-image metrics of the restored ``x`` against the clean ``gt`` (both (1, C, H, W) model
    domain, CPU) for the metric names in ``names`` (see :data:`PER_IMAGE_METRICS`; nfe/time
    come from :func:`restore`). A metric that cannot be computed (image too small for the
    window, LPIPS weights not set up) is None."""
    out = {}
    for name in names:
        try:
            if name == "psnr":
                out[name] = _finite(metrics.psnr_model(x, gt))
            elif name == "ssim":
                out[name] = _finite(metrics.ssim_model(x, gt, variant="gaussian"))
            elif name == "ssim_uniform":
                out[name] = _finite(metrics.ssim_model(x, gt, variant="uniform"))
            elif name == "cons":          # ℓ1 of A x̂ − y, float [0, 1] (DeqIR's Cons)
                out[name] = _finite(metrics.consistency(x, y, op))
            elif name == "cons_8bit":     # the same on the 8-bit result (EquS's Cons)
                out[name] = _finite(metrics.consistency(x, y, op, uint8=True))
            elif name in LPIPS_METRICS:
                net = lpips_bank.get(name) if lpips_bank is not None else None
                if net is None or lpips_bank is None:
                    out[name] = None
                else:
                    dev = lpips_bank.device
                    with torch.no_grad():
                        d = net(metrics.to_unit(x).to(dev), metrics.to_unit(gt).to(dev))
                    out[name] = _finite(d.mean())
        except DmirError:
            out[name] = None
    return out


def check_finite(x: torch.Tensor, what: str) -> None:
    if not torch.isfinite(x).all():
        raise ParameterError(f"{what} produced NaN/Inf values")
