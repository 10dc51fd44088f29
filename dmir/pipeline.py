"""One restoration pipeline, shared by ``dmir restore``, ``dmir bench``, ``dmir demo`` and library
users.

    task + parameters ──► operator (kernel specs, masks, shapes)          :func:`make_operator`
    model name / path ──► prior, tiled and on the fast path as needed     :func:`load_prior`,
                                                                           :func:`prepare_prior`
    method + options  ──► solver                                           :func:`dmir.solvers.build`
    y, seed, K        ──► K posterior samples in one batch, their mean    :func:`sample_mean`

:func:`restore` runs all of it for one image::

    import dmir
    y = dmir.io.read_image("photo_lr.png")
    x = dmir.pipeline.restore(y, "sr_bicubic", scale=4, model="natural").x

Every step is a plain function, so a caller can replace one (the bench builds its operators
from task specs and batches images). :func:`prepare_prior` makes the memory decisions for
every caller: a run that cannot fit is refused, and a network prior is tiled only when memory
requires it. Nothing here reads options or prints: notes go to a ``note`` callable.

Randomness: one CPU ``torch.Generator`` seeded with ``seed`` draws, in this order, the
operator's own randomness (compressed-sensing bases), the measurement noise (with
``degrade=True``) and the sampler's noise (on the CPU whatever the device, then moved:
:func:`dmir.rng.randn`), so a seed gives the same image on every device.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import models, operators, solvers
from .errors import DmirError, InputError, ParameterError, ShapeError

__all__ = ["parse_kernel", "motion_kernel", "task_params", "signal_shape", "make_operator",
           "make_noise", "measure", "check_memory", "load_prior", "prepare_prior",
           "needs_tiling", "sample_mean", "restore", "Restoration", "DEFAULT_TILE", "MAX_KERNEL"]

#: with an explicit ``tile``, network priors process images larger than it (or not a multiple
#: of their size unit) as overlapping tiles (:class:`dmir.models.tiled.TiledPrior`); the
#: default (``tile=None``) tiles only when memory requires it
#: (:func:`dmir.models.tiled.plan_tiling`)
DEFAULT_TILE = 256
#: largest side of a kernel given by a spec (checked before anything is allocated)
MAX_KERNEL = 2049


def _ignore(_msg) -> None:
    pass


# ----------------------------------------------------------------------------- operators
def parse_kernel(spec: str, max_size: int | None = None) -> np.ndarray:
    """``gauss:SIGMA[:SIZE]``, ``box:SIZE``, ``motion:LENGTH:ANGLE`` or a .npy/.png file → 2-D
    float64 kernel normalised to sum 1. The kernel's side is checked before it is built: at
    most ``max_size`` (the image's smaller side, when given) and :data:`MAX_KERNEL`."""
    from . import io as dio

    forms = "gauss:SIGMA[:SIZE], box:SIZE, motion:LENGTH:ANGLE or a .npy/.png file"
    parts = spec.split(":")
    kind = parts[0].lower()
    limit = MAX_KERNEL if max_size is None else min(MAX_KERNEL, int(max_size))

    def fits(size):
        if size > limit:
            where = (f"the image ({max_size} pixels on its smaller side)"
                     if max_size is not None and max_size < MAX_KERNEL
                     else f"the largest kernel dmir builds ({MAX_KERNEL})")
            raise ParameterError(f"--kernel {spec}: a {size}x{size} kernel is larger than "
                                 f"{where}")

    try:
        if kind == "gauss" and len(parts) in (2, 3):
            sigma = float(parts[1])
            if not (0 < sigma < 1e3):
                raise ParameterError(f"--kernel gauss: SIGMA must be a positive number, got "
                                     f"{parts[1]}")
            size = int(parts[2]) if len(parts) == 3 else 2 * math.ceil(3 * sigma) + 1
            if size < 1 or size % 2 == 0:
                raise ParameterError(f"--kernel gauss: SIZE must be a positive odd integer, "
                                     f"got {size}")
            fits(size)
            r = (size - 1) // 2
            with np.errstate(over="ignore", under="ignore"):   # a tiny σ: a delta kernel
                g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
            k = np.outer(g, g)
        elif kind == "box" and len(parts) == 2:
            size = int(parts[1])
            if size < 1:
                raise ParameterError(f"--kernel box: SIZE must be a positive integer, got "
                                     f"{size}")
            fits(size)
            k = np.ones((size, size))
        elif kind == "motion" and len(parts) == 3:
            length, angle = float(parts[1]), float(parts[2])
            if not (1 <= length < 1e3) or not math.isfinite(angle):
                raise ParameterError(f"--kernel motion: LENGTH must be ≥ 1 and ANGLE (degrees) "
                                     f"finite, got {parts[1]}:{parts[2]}")
            fits(int(math.ceil(length)) | 1)
            k = motion_kernel(length, angle)
        elif len(parts) > 1 and kind in ("gauss", "box", "motion"):
            raise ParameterError(f"--kernel {spec!r}: wrong number of fields; use {forms}")
        else:
            if not os.path.exists(spec):
                raise ParameterError(f"--kernel {spec!r} is neither a kernel spec nor an "
                                     f"existing file; use {forms}")
            if spec.lower().endswith(".npy"):
                try:
                    k = np.load(spec, allow_pickle=False)
                except Exception:  # noqa: BLE001
                    raise InputError(f"kernel file '{spec}' is not a readable .npy array") \
                        from None
                if k.dtype.kind not in "biuf":
                    raise InputError(f"kernel file '{spec}' must hold a numeric array")
                k = np.squeeze(k).astype(np.float64)
            else:
                a, _ = dio._read_array(spec)
                k = a[:, :, : (1 if a.shape[2] <= 2 else 3)].mean(axis=2)
    except ValueError as e:
        if isinstance(e, DmirError):
            raise
        raise ParameterError(f"--kernel {spec!r}: not a number where one is expected; use "
                             f"{forms}") from None
    if k.ndim != 2 or k.size == 0:
        raise InputError(f"--kernel: the kernel must be a 2-D array, got shape {k.shape}")
    if not np.isfinite(k).all() or (k < 0).any() or k.sum() <= 0:
        raise InputError("--kernel: the kernel must be finite, non-negative and not all zero")
    return k / k.sum()


def motion_kernel(length: float, angle_deg: float) -> np.ndarray:
    """A line of ``length`` pixels at ``angle_deg`` (counter-clockwise from +x), anti-aliased
    by bilinear splatting of dense samples; odd square support."""
    size = int(math.ceil(length)) | 1
    c = size // 2
    th = math.radians(angle_deg)
    t = np.linspace(-(length - 1) / 2, (length - 1) / 2, max(2, int(length * 20)))
    xs, ys = c + t * math.cos(th), c - t * math.sin(th)
    k = np.zeros((size, size))
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    for dy, dx, w in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                      (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = np.clip(y0 + dy, 0, size - 1), np.clip(x0 + dx, 0, size - 1)
        np.add.at(k, (yy, xx), w)
    return k


def task_params(task: str) -> tuple[list[str], bool]:
    """(parameter names, accepts ``generator=``) of a registered operator; ([], False) for an
    unknown name."""
    if task not in operators.names():
        return [], False
    return operators.params(task)


def _kernel_param(params: dict, shape) -> dict:
    """A ``kernel`` given as a spec string (at most the image's smaller side) or a nested list
    becomes an array."""
    k = params.get("kernel")
    if isinstance(k, (str, os.PathLike)):
        C, H, W = operators.registry.check_shape(shape)
        params["kernel"] = parse_kernel(os.fspath(k), min(H, W))
    elif isinstance(k, (list, tuple)):
        params["kernel"] = np.asarray(k, dtype=np.float64)
    return params


def signal_shape(task: str, input_shape, params: dict, degrade: bool) -> tuple:
    """(C, H, W) of the image to restore from the input's (C, H, W): the input itself when it
    is clean (``degrade``); ×scale for super-resolution; RGB for colorization."""
    C, H, W = (int(s) for s in input_shape)
    if degrade:
        if task == "colorization" and C != 3:
            raise ShapeError("colorization --degrade needs a colour (RGB) clean image; INPUT "
                             "is gray")
        return (C, H, W)
    if params.get("scale") is not None:
        s = int(params["scale"])
        return (C, H * s, W * s)
    if task == "colorization":
        return (3, H, W)
    return (C, H, W)


def make_operator(task: str, shape, generator: torch.Generator | None = None, **params):
    """Operator ``task`` for images of ``shape`` (C, H, W); kernel specs are parsed, masks may
    be arrays or files (:func:`dmir.io.load_mask`). ``generator`` draws the operator's own
    randomness when it has any."""
    params = _kernel_param(dict(params), shape)
    _, takes_gen = task_params(task)
    if takes_gen and generator is not None:
        params["generator"] = generator
    return operators.build(task, shape, **params)


def make_noise(sigma_y: float = 0.0, poisson: float | None = None):
    """(noise model, σ_y the solver assumes): Gaussian σ_y, or Poisson with ``poisson`` peak
    (the solver then assumes its Gaussian level at mid-gray)."""
    if poisson is not None:
        noise = operators.PoissonNoise(poisson)
        return noise, noise.sigma_equivalent
    return operators.GaussianNoise(sigma_y), sigma_y


def measure(op, image: torch.Tensor, degrade: bool, noise=None,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """The measurement y: ``noise(A image)`` for a clean image (``degrade``); else the image
    itself when it already has y's shape, or A of it (e.g. an RGB photo for colorization)."""
    if degrade:
        noise = noise if noise is not None else operators.GaussianNoise(0.0)
        return noise(op.A(image), generator=generator)
    if tuple(op.y_shape) == tuple(image.shape[1:]):
        return image
    return op.A(image)


# ----------------------------------------------------------------------------- priors
def load_prior(name_or_path: str = models.DEFAULT_MODEL, dtype=None, class_label=None,
               note=_ignore):
    """The prior ``name_or_path`` (built-in, registry name or checkpoint path; see
    :func:`dmir.models.load`); the loader's notes (inferred settings) go to ``note``."""
    kw = {} if class_label is None else {"class_labels": class_label}
    with warnings.catch_warnings():   # inferred settings are reported in the note below
        warnings.simplefilter("ignore", models.InferredConfigWarning)
        prior = models.load(name_or_path, dtype=dtype, **kw)
    info = getattr(prior, "info", {}) or {}
    if info.get("notes"):
        note(f"model {prior.name} ({info.get('format', '?')}): {'; '.join(info['notes'])}")
    return prior


def check_memory(shape, samples: int = 1, device="cpu") -> int:
    """Refuse (:class:`~dmir.errors.ResourceError`) ``samples`` restorations of ``shape``
    (C, H, W) that cannot fit in the device's memory, before anything of that size is
    allocated (``scale=1000``, ``samples=100000``); returns the estimate in bytes
    (:func:`dmir.models.memory.check_fits`)."""
    from .models import memory

    return memory.check_fits(tuple(int(s) for s in shape), int(samples), device)


def _tileable(prior) -> bool:
    # consistency models keep their one-step denoiser; analytic priors take any size
    return isinstance(prior, models.NetworkPrior) and not hasattr(prior, "denoise")


def needs_tiling(prior, shape, tile: int = DEFAULT_TILE) -> bool:
    """Whether a network prior should see ``shape`` (C, H, W) as overlapping tiles of an
    explicit ``tile`` size: larger than ``tile`` or not a multiple of the network's size unit.
    Consistency models keep their one-step denoiser and are never tiled; analytic priors take
    any size. (Without an explicit tile, :func:`dmir.models.tiled.plan_tiling` decides from
    memory.)"""
    if not _tileable(prior):
        return False
    mult = getattr(prior, "size_multiple", 1)
    return max(shape[-2:]) > tile or bool(shape[-2] % mult or shape[-1] % mult)


def prepare_prior(prior, shape, device="cpu", *, tile: int | None = None,
                  fast: dict | bool | None = True, batch: int = 1, note=_ignore):
    """``prior`` made ready for ``batch`` images of ``shape`` (C, H, W) on ``device``:

    * refused (:class:`~dmir.errors.ResourceError`) when the batch cannot fit in memory
      (:func:`check_memory`);
    * tiled: with ``tile=None`` (default) only when memory (or attention cost) requires it,
      as :func:`dmir.models.tiled.tiled_for_memory` plans for the device; an explicit
      ``tile`` forces :class:`~dmir.models.tiled.TiledPrior` tiles of that size whenever
      :func:`needs_tiling` says so; the path taken goes to ``note``;
    * moved to the device, and put on the fast path (:func:`dmir.models.fast.accelerate`;
      ``fast`` = its keywords, True for the device's defaults, None/False for the plain path).

    Returns the prior to sample with (the same object, or the tiling wrapper)."""
    from .models import fast as fastpath

    device = torch.device(device)
    check_memory(shape, batch, device)
    if _tileable(prior):
        from .models.tiled import TiledPrior, tiled_for_memory

        if tile is None:        # tile only when memory (or attention cost) requires it
            prior = tiled_for_memory(prior, shape, batch, device, log=note)
        elif needs_tiling(prior, shape, tile):
            prior = TiledPrior(prior, tile=tile)
            if max(shape[-2:]) > tile:
                note(f"{shape[-2]}x{shape[-1]} image: {prior.name} processes it as "
                     f"overlapping {tile}x{tile} tiles (shifted every step)")
    if device.type != "cpu":
        prior.to(device)
    if fast is not None and fast is not False:
        kw = {} if fast is True else dict(fast)
        net_prior = getattr(prior, "model", prior)          # inside a TiledPrior
        if isinstance(net_prior, models.NetworkPrior) and fastpath.options_of(net_prior) is None:
            fastpath.accelerate(net_prior, **kw)
            opts = fastpath.options_of(net_prior)
            assert opts is not None                         # accelerate() set them
            if opts.dtype is not None or opts.compile or opts.cuda_graphs:   # not just layout
                note(f"fast path: {opts.describe()}")
            if device.type == "cuda":
                torch.backends.cudnn.benchmark = True       # fixed shapes: autotune convs
    return prior


# ----------------------------------------------------------------------------- sampling
def sample_mean(solver, y: torch.Tensor, samples: int = 1, generator=None, progress=None,
                init_opt: dict | None = None, target: torch.Tensor | None = None):
    """Draw ``samples`` posterior samples of the one measurement ``y`` (1, *y_shape) in one
    batch and return ``(mean (1, C, H, W), history)``. ``init_opt`` (DeqIR only): keywords of
    :func:`dmir.solvers.deqir_init.optimize_init` (``loss`` plus its options); ``history`` is
    its record (None otherwise)."""
    ys = y.expand(samples, *y.shape[1:]).contiguous() if samples > 1 else y
    if init_opt:
        from .solvers.deqir_init import optimize_init

        kw = dict(init_opt)
        loss = kw.pop("loss")
        tgt = (target.to(ys.device, ys.dtype) if target is not None and loss in ("mse", "lpips")
               else None)
        x, _, hist = optimize_init(solver, ys, None, loss=loss, target=tgt,
                                   generator=generator, progress=progress, **kw)
        return x.mean(0, keepdim=True), hist
    return solver.sample(ys, generator=generator, progress=progress).mean(0, keepdim=True), None


@dataclass
class Restoration:
    """What :func:`restore` returns. Tensors are in the model domain [-1, 1], on the CPU."""

    x: torch.Tensor                      # (1, C, H, W) float32: the result (mean of K samples)
    y: torch.Tensor                      # the measurement, on the sampling device
    op: Any                              # the operator (on the sampling device)
    solver: Any
    prior: Any
    seconds: float
    nfe: object                          # network evaluations (per sample batch)
    clean: torch.Tensor | None = None    # the clean input (degrade=True)
    history: dict | None = None          # init-opt record
    x_start: torch.Tensor | None = None  # init-opt: the result before the optimisation
    notes: list = field(default_factory=list)


def restore(image: torch.Tensor, task: str, *, method: str = "ddnm-equs+",
            model=models.DEFAULT_MODEL, degrade: bool = False, sigma_y: float = 0.0,
            poisson: float | None = None, steps: int | None = None, eta: float | None = None,
            samples: int = 1, seed: int = 0, device="cpu", tile: int | None = None,
            fast: dict | bool | None = True, dtype=None, class_label=None,
            solver_options: dict | None = None, init_opt: dict | None = None, progress=None,
            note=None, **task_params) -> Restoration:
    """Restore ``image`` (1, C, H, W) in [-1, 1] degraded by ``task`` (its parameters as
    keywords: ``scale=4``, ``kernel="gauss:2"``, ``mask=array_or_path``, …).

    ``degrade=True``: ``image`` is clean; it is degraded first (seeded), and the result can be
    compared with it. ``model``: a name/path or an already loaded prior. ``samples``: K samples
    in one batch, their mean is the result. ``tile``: None (default) tiles only when memory
    requires it, N forces N×N tiles (:func:`prepare_prior`); a run that cannot fit in memory
    is refused first (:class:`~dmir.errors.ResourceError`). ``note(str)`` receives what the
    caller may want to tell the user (settings inferred, tiling, conversions, too few steps)."""
    notes = []

    def _note(msg):
        notes.append(msg)
        if note is not None:
            note(msg)

    device = torch.device(device)
    if image.dim() != 4 or image.shape[0] != 1:
        raise ShapeError(f"image must have shape (1, C, H, W), got {tuple(image.shape)}")
    gen = torch.Generator().manual_seed(int(seed))
    shape = signal_shape(task, image.shape[1:], task_params, degrade)
    check_memory(shape, samples, device)      # before anything of that size is allocated
    op = make_operator(task, shape, generator=gen, **task_params)
    noise, sigma_solver = make_noise(sigma_y, poisson)
    if not degrade and task == "colorization" and tuple(op.y_shape) != tuple(image.shape[1:]):
        _note(f"INPUT is RGB; converted to gray with weights "
              f"{', '.join(f'{float(w):g}' for w in op.w.flatten())}")
    y = measure(op, image, degrade, noise, gen)
    prior = (load_prior(os.fspath(model), dtype, class_label, _note)
             if isinstance(model, (str, os.PathLike)) else model)
    prior = prepare_prior(prior, shape, device, tile=tile, fast=fast, batch=samples,
                          note=_note)
    with warnings.catch_warnings(record=True) as caught:   # e.g. too few steps for EquS+
        warnings.simplefilter("always", solvers.FewStepsWarning)
        warnings.simplefilter("always", operators.InexactPinvWarning)
        solver = solvers.build(method, prior, op, steps=steps, eta=eta, sigma_y=sigma_solver,
                               **(solver_options or {}))
    told = (solvers.FewStepsWarning, operators.InexactPinvWarning)   # the user is told these
    for w in caught:
        if issubclass(w.category, told):
            _note(str(w.message))
        if note is None or not issubclass(w.category, told):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if device.type != "cpu":
        op.to(device)
        y = y.to(device)
    # one CPU stream on every device: solvers draw on the generator's device and move the noise
    # (dmir.rng.randn), so a seed gives the same image on CPU and GPU
    sgen = gen
    t0 = time.perf_counter()
    x, hist = sample_mean(solver, y, samples, sgen, progress, init_opt,
                          target=image if degrade else None)
    seconds = time.perf_counter() - t0
    x_start = None
    if hist is not None:
        x_start = hist["x0_start"].mean(0, keepdim=True).detach().to("cpu", torch.float32)
    nfe = hist["nfe"] if hist else getattr(solver, "nfe", None)
    return Restoration(x=x.detach().to("cpu", torch.float32), y=y, op=op, solver=solver,
                       prior=prior, seconds=seconds, nfe=nfe, clean=image if degrade else None,
                       history=hist, x_start=x_start, notes=notes)
