"""One restoration pipeline, shared by ``dmir restore``, ``dmir bench``, ``dmir demo`` and library
users.

    task + parameters ──► operator (kernel specs, masks, shapes)          :func:`make_operator`
    model name / path ──► prior, tiled and on the fast path as needed     :func:`load_prior`,
                                                                           :func:`prepare_prior`
    method + options  ──► solver                                           :func:`dmir.solvers.build`
    y, seed, K        ──► K posterior samples in one batch, their mean    :func:`sample_mean`

:func:`restore` runs all of it for an image (a PIL image, a numpy array, a tensor or a batch;
:mod:`dmir.inputs`) and gives the result back in the same form::

    from PIL import Image
    import dmir
    r = dmir.pipeline.restore(Image.open("photo_lr.png"), "sr_bicubic_aa", scale=4)
    r.image.save("restored.png")

Every step is a plain function, so a caller can replace one (the bench builds its operators
from task specs and batches images). :func:`prepare_prior` makes the memory decisions for
every caller: a run that cannot fit is refused, and a network prior is tiled only when memory
requires it. Nothing here reads options or prints: notes go to a ``note`` callable.

Randomness: one CPU ``torch.Generator`` (``generator=``, or seeded with ``seed``) draws, in this order, the
operator's own randomness (compressed-sensing bases), the measurement noise (with
``degrade=True``) and the sampler's noise (on the CPU whatever the device, then moved:
:func:`dmir.rng.randn`), so a seed gives the same image on every device.
"""
from __future__ import annotations

import inspect
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from . import models, operators, solvers
from .errors import (DmirError, InputError, NumericalError, ParameterError, ShapeError,
                     UnknownNameError)

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
        note(f"model {getattr(prior, 'name', name_or_path)} ({info.get('format', '?')}): "
             f"{'; '.join(info['notes'])}")
    return prior


def check_memory(shape, samples: int = 1, device="cpu") -> int:
    """Refuse (:class:`~dmir.errors.ResourceError`) ``samples`` restorations of ``shape``
    (C, H, W) that cannot fit in the device's memory, before anything of that size is
    allocated (``scale=1000``, ``samples=100000``); returns the estimate in bytes
    (:func:`dmir.models.memory.check_fits`)."""
    from .inputs import check_samples
    from .models import memory

    return memory.check_fits(tuple(int(s) for s in shape), check_samples(samples), device)


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
def _checked(x, method: str, shape: tuple) -> torch.Tensor:
    """A solver's result, refused when it is not a finite tensor of ``shape``."""
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"method {method!r} returned {type(x).__name__}, not a tensor of "
                         f"shape {shape}")
    if tuple(x.shape) != tuple(shape):
        raise ShapeError(f"method {method!r} returned shape {tuple(x.shape)}, expected "
                         f"{tuple(shape)}")
    if not torch.isfinite(x).all():
        raise NumericalError(f"method {method!r} produced NaN/Inf values")
    return x


def sample_mean(solver, y: torch.Tensor, samples: int = 1, generator=None, progress=None,
                init_opt: dict | None = None, target: torch.Tensor | None = None,
                x_shape: tuple | None = None):
    """Draw ``samples`` posterior samples of each measurement of ``y`` (B, *y_shape) in one
    batch and return ``(mean (B, C, H, W), history)``; the result is checked (a finite tensor
    of the image shape ``x_shape`` (C, H, W), by default the solver's operator's). ``init_opt`` (DeqIR only): keywords of
    :func:`dmir.solvers.deqir_init.optimize_init` (``loss`` plus its options); ``history`` is
    its record (None otherwise)."""
    B = y.shape[0]
    ys = y.repeat_interleave(samples, 0) if samples > 1 else y
    if x_shape is None and hasattr(getattr(solver, "op", None), "x_shape"):
        x_shape = tuple(solver.op.x_shape)
    name = getattr(solver, "name", type(solver).__name__)
    hist = None
    if init_opt:
        from .solvers.deqir_init import optimize_init

        kw = dict(init_opt)
        loss = kw.pop("loss")
        tgt = None
        if target is not None and (loss in ("mse", "lpips") or kw.get("smart_init") == "target"):
            tgt = target.to(ys.device, ys.dtype)
            tgt = tgt.repeat_interleave(samples, 0) if samples > 1 else tgt
        x, _, hist = optimize_init(solver, ys, None, loss=loss, target=tgt,
                                   generator=generator, progress=progress, **kw)
    else:
        x = solver.sample(ys, generator=generator, progress=progress)
    if x_shape is not None:
        x = _checked(x, name, (B * samples, *x_shape))
    return x.reshape(B, samples, *x.shape[1:]).mean(1), hist


@dataclass
class Restoration:
    """What :func:`restore` returns. Tensors are in the model domain [-1, 1] (``x`` as the
    sampler returned it, unclamped), on the CPU; ``image`` is the result, clamped to the
    range, in the form the input came in (or ``output_type``)."""

    x: torch.Tensor                      # (B, C, H, W) float32: the result (mean of K samples)
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
    image: Any = None                    # the result as a PIL image / numpy array / tensor


def restore(image, task: str, *, method: str = "ddnm-equs+", model=models.DEFAULT_MODEL,
            degrade: bool = False, sigma_y: float = 0.0, poisson: float | None = None,
            steps: int | None = None, eta: float | None = None, samples: int = 1,
            seed: int = 0, generator: torch.Generator | None = None, device="cpu",
            tile: int | None = None, fast: dict | bool | None = True, dtype=None,
            class_label=None, solver_options: dict | None = None, init_opt: dict | None = None,
            progress="auto", note=None, input_range: str | None = None,
            output_type: str | None = None, invert_mask: bool = False,
            task_params: Mapping[str, Any] | None = None, **kwargs) -> Restoration:
    """Restore ``image`` degraded by ``task``; its parameters in ``task_params``
    (``{"scale": 4}``, ``{"kernel": "gauss:2"}``, ``{"mask": array_or_path}``, …) or, for
    short, as keywords (``scale=4``); any other keyword is an error naming it.

    ``image``: a PIL image, a numpy array (H×W[×C], uint8/uint16/float), a tensor (H×W, C×H×W
    or B×C×H×W, float or uint8) or a list of same-sized images (a batch, restored together);
    ``input_range`` ``"unit"`` ([0, 1]) or ``"model"`` ([-1, 1]) for float input (default:
    numpy "unit", tensors "model", with a warning when one looks like [0, 1];
    :mod:`dmir.inputs`). The result comes back as ``.image`` in the same form (or
    ``output_type`` "pil" | "np" | "pt"), and as ``.x`` (B, C, H, W) in [-1, 1]. A gray image
    and an RGB-only prior: restored with the channel replicated and returned gray (RGB for
    colorization), decided before the prior loads.

    ``degrade=True``: ``image`` is clean; it is degraded first (seeded), and the result can be
    compared with it; the papers' operators are used as registered. Otherwise the input is a
    real photo and the defaults follow how photos are made: ``deblur`` with reflected borders,
    colorization with Pillow's luma weights, a note for ``sr_averagepooling``; inpainting
    masks keep white/1 (``invert_mask=True`` for masks that mark the area to fill in white; an
    RGBA image's transparency is its mask when none is given). ``model``: a name/path or a
    loaded prior. ``samples``: K samples per image in one batch, their mean is the result.
    ``seed`` or ``generator`` (a CPU ``torch.Generator``) draws everything. ``tile``: None
    (default) tiles only when memory requires it, N forces N×N tiles (:func:`prepare_prior`);
    a run that cannot fit in memory is refused first (:class:`~dmir.errors.ResourceError`).
    ``progress``: "auto" (a bar on stderr when it is a terminal), None/False, or a callable
    ``(i, n)``. ``note(str)`` receives what the caller may want to tell the user (settings
    inferred, tiling, conversions, too few steps)."""
    from . import entry, inputs

    notes: list[str] = []

    def _note(msg):
        notes.append(msg)
        if note is not None:
            note(msg)

    # ---- arguments, all checked before any work
    if not isinstance(task, str):
        raise ParameterError(f"task must be a name (see dmir.operators.names()), got "
                             f"{type(task).__name__}")
    allowed, _ = operators.params(task)                 # UnknownNameError for a bad task
    params = entry.task_keywords(task, allowed, task_params, kwargs, _OWN)
    if not isinstance(method, str) or method not in solvers.names():
        raise UnknownNameError(f"unknown method {method!r}; available: "
                               f"{', '.join(solvers.names())}")
    inputs.check_model(model)
    gen = inputs.check_generator(generator, seed)
    samples = inputs.check_samples(samples)
    dev = inputs.check_device(device)
    options = dict(solver_options or {})
    for k in ("steps", "eta", "sigma_y"):
        if k in options:
            raise ParameterError(f"solver_options repeats {k!r}, which is an argument of "
                                 f"restore: pass {k}= once")
    x_in, kind, alpha = inputs.to_model(image, input_range)

    # ---- real photos: operators that match how photos are made
    later: list[str] = []          # told once the run is known to be possible
    params = entry.real_photo_params(task, params, degrade, alpha, invert_mask, later.append)
    C_in = x_in.shape[1]
    want = inputs.prior_channels(model)
    prior = None
    if want == -1:                                       # a checkpoint: read it to know
        prior = load_prior(os.fspath(model), dtype, class_label, _note)
        want = inputs.prior_channels(prior)
    gray = C_in == 1 and want not in (None, 1) and task != "colorization"
    if gray:
        later.append(f"gray image: restored with the channel replicated for the {want}-channel "
                     f"prior and returned gray")
        x_in = x_in.expand(-1, want, -1, -1).contiguous()
    B = x_in.shape[0]
    shape = signal_shape(task, x_in.shape[1:], params, degrade)
    check_memory(shape, samples * B, dev)      # before anything of that size is allocated
    op = entry.checked_operator(make_operator(task, shape, generator=gen, **params), task, shape)
    for msg in later:
        _note(msg)
    noise, sigma_solver = make_noise(sigma_y, poisson)
    if not degrade and task == "colorization" and tuple(op.y_shape) != tuple(x_in.shape[1:]):
        _note(f"INPUT is RGB; converted to gray with weights "
              f"{', '.join(f'{float(w):g}' for w in op.w.flatten())}")
    y = measure(op, x_in, degrade, noise, gen)
    if prior is None:
        prior = (load_prior(os.fspath(model), dtype, class_label, _note)
                 if isinstance(model, (str, os.PathLike)) else model)
    prior = prepare_prior(prior, shape, dev, tile=tile, fast=fast, batch=samples * B,
                          note=_note)
    with warnings.catch_warnings(record=True) as caught:   # e.g. too few steps for EquS+
        warnings.simplefilter("always", solvers.FewStepsWarning)
        warnings.simplefilter("always", operators.InexactPinvWarning)
        solver = solvers.build(method, prior, op, steps=steps, eta=eta, sigma_y=sigma_solver,
                               **options)
    told = (solvers.FewStepsWarning, operators.InexactPinvWarning)   # the user is told these
    for w in caught:
        if issubclass(w.category, told):
            _note(str(w.message))
        if note is None or not issubclass(w.category, told):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if dev.type != "cpu":
        op.to(dev)
        y = y.to(dev)
    bar = None
    if progress == "auto":
        progress = bar = (inputs.ProgressBar(method, enabled=True) if inputs.ProgressBar.wanted()
                          else None)
    elif progress is False:
        progress = None
    elif progress is not None and not callable(progress):
        raise ParameterError(f"progress must be 'auto', None, False or a callable (i, n), got "
                             f"{progress!r}")
    # one CPU stream on every device: solvers draw on the generator's device and move the noise
    # (dmir.rng.randn), so a seed gives the same image on CPU and GPU
    t0 = time.perf_counter()
    try:
        x, hist = sample_mean(solver, y, samples, gen, progress, init_opt,
                              target=x_in if degrade else None, x_shape=shape)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    x_start = None
    if hist is not None:
        x_start = hist["x0_start"].reshape(B, samples, *shape).mean(1).detach().to(
            "cpu", torch.float32)
    nfe = hist["nfe"] if hist else getattr(solver, "nfe", None)
    x = x.detach().to("cpu", torch.float32)
    clean = x_in if degrade else None
    if gray:
        x = x.mean(1, keepdim=True)
        clean = clean[:, :1] if clean is not None else None
        x_start = x_start.mean(1, keepdim=True) if x_start is not None else None
    return Restoration(x=x, y=y, op=op, solver=solver, prior=prior, seconds=seconds, nfe=nfe,
                       clean=clean, history=hist, x_start=x_start, notes=notes,
                       image=inputs.from_model(x, kind, output_type))


#: restore's own keywords (named when an unknown one is given)
_OWN = [p for p in inspect.signature(restore).parameters
        if p not in ("image", "task", "kwargs")]
