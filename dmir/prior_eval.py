"""Held-out restoration scores of a prior, used to validate (and choose) trained weights.

:func:`evaluate_prior` restores a fixed set of held-out crops with DDNM for SR×4 (average
pooling), inpainting with the DDNM paper mask and colorization (η 0.85), plus SR×4 with
deterministic DDIM (η 0), and reports the PSNR gain over A⁺y per task; ``dmir train --val``
scores its EMA weights with it and keeps the best. PSNR in dB on images in [0, 1].
"""
from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch

from .data.datasets import find_images
from .errors import DmirError, InputError


def read_rgb_uint8(path: str) -> torch.Tensor:
    """(H, W, 3) uint8 through dmir's own reader (16-bit and gray files handled exactly)."""
    from .io import read_image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # alpha dropped: irrelevant for training crops
        x = read_image(path)[0]                  # (C, H, W) in [-1, 1], C = 1 or 3
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()


def load_validation_set(folders, per_folder: int, size: int) -> tuple[list[str], torch.Tensor]:
    """Centre ``size``² crops (upscaled when smaller) of the first ``per_folder`` readable images
    of each folder, as (N, 3, size, size) in [-1, 1], with their file names."""
    names, xs = [], []
    for d in folders:
        got = 0
        for rel in find_images(d):
            f = os.path.join(d, rel)
            if got == per_folder:
                break
            try:
                a = read_rgb_uint8(f).permute(2, 0, 1).float()
            except DmirError:
                continue
            H, W = a.shape[1:]
            if min(H, W) < size:
                s = size / min(H, W)
                a = torch.nn.functional.interpolate(a[None], size=(max(size, round(H * s)),
                                                    max(size, round(W * s))), mode="bicubic",
                                                    align_corners=False)[0]
                H, W = a.shape[1:]
            r, c = (H - size) // 2, (W - size) // 2
            xs.append(a[:, r:r + size, c:c + size] / 127.5 - 1)
            names.append(os.path.relpath(f))
            got += 1
    if not xs:
        raise InputError(f"no readable validation images under {', '.join(map(str, folders))}")
    return names, torch.stack(xs).clamp(-1, 1)


def validation_tasks(size: int) -> dict:
    """name → (operator name, params, η) of the held-out restorations."""
    from .io import load_mask

    mask = load_mask(os.path.join(os.path.dirname(__file__), "data", "ddnm_inpainting_mask.npy"))
    if mask.shape[-1] != size:
        mask = torch.nn.functional.interpolate(mask[None, None], size=(size, size),
                                               mode="nearest")[0, 0]
    return {"sr4": ("sr_averagepooling", {"scale": 4}, 0.85),
            "inpaint": ("inpainting", {"mask": mask}, 0.85),
            "color": ("colorization", {}, 0.85),
            "sr4_eta0": ("sr_averagepooling", {"scale": 4}, 0.0)}


SCORED_TASKS = ("sr4", "inpaint", "color")


def evaluate_prior(prior, images: torch.Tensor, steps: int = 20, seed: int = 0) -> dict:
    """Held-out restoration with ``prior``: per task, mean PSNR (dB) of A⁺y and of DDNM, and
    the gain; ``score`` is the mean gain over :data:`SCORED_TASKS`."""
    from . import operators, solvers
    from .metrics.image import psnr, to_unit

    out: dict[str, Any] = {}
    for name, (opname, params, eta) in validation_tasks(images.shape[-1]).items():
        op = operators.build(opname, tuple(images.shape[1:]), **params)
        y = op.A(images)
        apy = op.pinv(y).clamp(-1, 1)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            xh = solvers.build("ddnm", prior, op, steps=steps, eta=eta).sample(y, generator=g)
        p0 = float(psnr(to_unit(apy), to_unit(images)))
        p1 = float(psnr(to_unit(xh.clamp(-1, 1)), to_unit(images)))
        out[name] = {"apy": round(p0, 3), "ddnm": round(p1, 3), "gain": round(p1 - p0, 3)}
    out["score"] = round(float(np.mean([out[k]["gain"] for k in SCORED_TASKS])), 3)
    return out
