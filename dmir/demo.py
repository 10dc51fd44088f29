"""``dmir demo``: four restoration tasks on public-domain photos with the shipped learned prior.

The photos are 256×256 crops of scikit-image's sample images (public domain / CC0; see
``dmir/data/demo/SOURCES.md``), shipped with dmir so the demo runs offline without extra
packages. Each task degrades all photos with a fixed seed, restores them in one batch, and the
demo writes

- ``grid.png``: one row per (task, photo): the measurement as an image, A⁺y, the restoration and
  the ground truth;
- ``metrics.md`` / ``metrics.json``: PSNR and SSIM (on [0, 1]) of A⁺y and of the result, per
  task, averaged over the photos, plus the wall-clock time.
"""
from __future__ import annotations

import json
import os
import time

import torch
import torch.nn.functional as F

from . import models, pipeline, solvers
from .errors import ParameterError
from .io import OutputError, atomic_write
from .log import get_logger
from .metrics import image as im

_log = get_logger(__name__)

DEMO_IMAGES = ("astronaut", "coffee", "chelsea", "rocket")


def demo_images(size: int) -> torch.Tensor:
    """The shipped demo photos as (4, 3, size, size) in [-1, 1] (antialiased resize)."""
    from .io import read_image

    folder = os.path.join(os.path.dirname(__file__), "data", "demo")
    x = torch.cat([read_image(os.path.join(folder, f"{n}.png")) for n in DEMO_IMAGES])
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True,
                          align_corners=False).clamp(-1, 1)
    return x


def demo_tasks(size: int):
    """(short label, label, operator name, params, σ_y in [0, 1] pixel units) of the four demo
    tasks."""
    g = torch.Generator().manual_seed(7)
    # inpainting: six seeded strokes (size/40 px wide, half the image long) and a box
    mask = torch.ones(size, size)
    w = max(2, size // 40)
    for i in range(6):
        a = int(torch.randint(0, size - w, (1,), generator=g))
        s0 = int(torch.randint(0, size // 2, (1,), generator=g))
        if i % 2:
            mask[a:a + w, s0:s0 + size // 2] = 0
        else:
            mask[s0:s0 + size // 2, a:a + w] = 0
    b = size // 4
    mask[size // 2 - b // 2:size // 2 + b // 2, size // 3 - b // 2:size // 3 + b // 2] = 0
    r = torch.arange(-6, 7, dtype=torch.float64)
    k1 = torch.exp(-0.5 * (r / 2.0) ** 2)
    kernel = torch.outer(k1, k1) / torch.outer(k1, k1).sum()      # Gaussian σ = 2 px, 13×13
    return [
        ("sr4", "super-resolution x4", "sr_averagepooling", {"scale": 4}, 0.0),
        ("inpaint", "inpainting (strokes + box)", "inpainting", {"mask": mask}, 0.0),
        ("denoise", "denoising (σ 0.1)", "denoising", {}, 0.1),
        ("deblur", "deblurring (Gaussian σ 2 px, noise 0.01)", "deblur", {"kernel": kernel},
         0.01),
    ]


def _as_image(op, y: torch.Tensor, shape) -> torch.Tensor:
    """The measurement shown as an image: itself when image-shaped, else Aᵀy (zero-filled)."""
    if y.dim() == 4:
        return y
    return op.At(y).reshape(y.shape[0], *shape)


def check_out_folder(out) -> str:
    """Refuse, before any work, an output folder that cannot be one: an existing file, a path
    below a file, an unwritable place (:class:`dmir.io.OutputError`). Creates nothing."""
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputError(f"-o {out!r} is an existing file, not a folder; the demo writes "
                          f"grid.png, metrics.md and metrics.json into a folder: give a new or "
                          f"existing folder")
    parent = os.path.abspath(out)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise OutputError(f"cannot create the folder {out!r}: {parent!r} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {parent!r} (read-only); give another -o folder")
    return out


def run_demo(out: str, size: int = 128, steps: int = 50, method: str = "ddnm",
             model: str | None = None, seed: int = 0, device: str = "cpu",
             log=None, progress=None) -> int:
    """Run the demo, write ``out/grid.png`` and ``out/metrics.{md,json}``; returns 0.

    ``log(msg)``: where the per-task lines go (default: the ``dmir.demo`` logger, INFO): a
    ``task k/4: …`` line before each task and its PSNR after it. ``progress(label)``: called
    before each task, returns the sampler's progress callback ``(i, n)`` for that task (an
    object with ``close()`` is closed after the task), e.g. the CLI's NFE bar."""
    if log is None:
        log = _log.info
    from .plot import image_grid

    if size < 32 or size > 256 or size % 8:
        raise ParameterError(f"--size must be a multiple of 8 in 32..256, got {size}")
    if steps < 1:
        raise ParameterError(f"--steps must be a positive integer, got {steps}")
    if not 0 <= seed < 2 ** 64 // 1000 - 8:          # seed · 1000 + k seeds each task
        raise ParameterError(f"--seed must be an integer in 0..{2 ** 64 // 1000 - 9}, got "
                             f"{seed}")
    if method not in solvers.names():
        raise ParameterError(f"unknown method {method!r}; available: {', '.join(solvers.names())}")
    check_out_folder(out)
    name = model or models.DEFAULT_MODEL
    x = demo_images(size).to(device)
    shape = tuple(x.shape[1:])
    # the pipeline's prior preparation: the fast path (and tiling) as dmir restore gets it
    prior = pipeline.prepare_prior(pipeline.load_prior(name), shape, device)
    rows, titles, table = [], [], []
    t_all = time.time()
    tasks = demo_tasks(size)
    for k, (short, label, opname, params, sigma) in enumerate(tasks):
        log(f"task {k + 1}/{len(tasks)}: {label} ({len(DEMO_IMAGES)} photos, {method}, "
            f"{steps} steps)")
        op = pipeline.make_operator(opname, shape, **params).to(device)
        g = torch.Generator().manual_seed(seed * 1000 + k)
        y = pipeline.measure(op, x, True, pipeline.make_noise(sigma)[0], g)
        apy = op.pinv(y).reshape(x.shape).clamp(-1, 1)
        solver = solvers.build(method, prior, op, steps=steps, **({"sigma_y": sigma} if sigma
                                                                    else {}))
        t0 = time.time()
        bar = progress(f"task {k + 1}/{len(tasks)}") if progress is not None else None
        try:
            with torch.no_grad():
                xh = solver.sample(y, generator=torch.Generator().manual_seed(seed),
                                   progress=bar).clamp(-1, 1)
        finally:
            close = getattr(bar, "close", None)
            if callable(close):
                close()
        dt = time.time() - t0
        u = im.to_unit
        row = {"task": label, "operator": opname, "sigma_y": sigma,
               "psnr_apy": float(im.psnr(u(apy), u(x))), "psnr": float(im.psnr(u(xh), u(x))),
               "ssim_apy": float(im.ssim(u(apy), u(x))), "ssim": float(im.ssim(u(xh), u(x))),
               "seconds": dt}
        table.append(row)
        log(f"  {label:<44} A+y {row['psnr_apy']:6.2f} dB   {method} {row['psnr']:6.2f} dB   "
            f"({dt:.1f} s)")
        meas = _as_image(op, y, shape)
        for i, n in enumerate(DEMO_IMAGES):
            rows.append([u(meas[i]), u(apy[i]), u(xh[i]), u(x[i])])
            titles.append(f"{short}: {n}")
    os.makedirs(out, exist_ok=True)
    image_grid(rows, os.path.join(out, "grid.png"),
               col_titles=["measurement", "A+y", f"{method} ({getattr(prior, 'name', name)})",
                           "ground truth"], row_titles=titles)
    meta = {"model": getattr(prior, "name", name), "method": method, "steps": steps,
            "size": size, "seed": seed, "device": device, "tasks": table,
            "total_seconds": time.time() - t_all}
    atomic_write(os.path.join(out, "metrics.json"), json.dumps(meta, indent=1))
    lines = [f"# dmir demo: {method}, {steps} steps, prior {meta['model']}, {size}x{size}, "
             f"{len(DEMO_IMAGES)} photos", "",
             "| task | PSNR A+y | PSNR result | SSIM A+y | SSIM result | time (s) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['psnr_apy']:.2f} | {r['psnr']:.2f} | {r['ssim_apy']:.3f} | "
              f"{r['ssim']:.3f} | {r['seconds']:.1f} |" for r in table]
    atomic_write(os.path.join(out, "metrics.md"), "\n".join(lines) + "\n")
    log(f"wrote {os.path.join(out, 'grid.png')} and metrics.md ({meta['total_seconds']:.0f} s)")
    return 0


__all__ = ["run_demo", "demo_images", "demo_tasks", "DEMO_IMAGES"]
