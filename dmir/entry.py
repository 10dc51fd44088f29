"""Checks and real-photo defaults of the library entry point, :func:`dmir.pipeline.restore`.

* :func:`task_keywords` — the task's parameters from ``task_params`` and from keywords that
  name one of them; any other keyword is an :class:`~dmir.errors.UnknownKeywordError` naming
  it (with a hint: ``num_inference_steps`` → ``steps``).
* :func:`real_photo_params` — for a real photo (not ``degrade``), the operator that matches
  how photos are made: ``deblur`` with reflected borders, colorization with Pillow's luma
  weights, a note for the protocol downsamplers; inpainting masks converted (inverted, taken
  from the image's transparency) with a note when one drops more than half of the image.
* :func:`checked_operator` — a registered builder's result is checked before a solver sees
  it (an operator for the image's shape whose A and Aᵀ return the shapes it declares).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from . import inputs, operators
from .errors import DmirError, ParameterError, ShapeError, UnknownKeywordError

__all__ = ["task_keywords", "real_photo_params", "checked_operator"]


#: ``deblur``'s SVD/DCT cut for a real photo (the operator's own default, 3e-2, serves exact data)
REAL_PHOTO_DEBLUR_THRESHOLD = 0.1

#: keywords people bring from other libraries → dmir's
_ALIASES = {"num_inference_steps": "steps", "num_steps": "steps", "n_steps": "steps",
            "generator_seed": "seed", "num_samples": "samples", "n_samples": "samples",
            "num_images_per_prompt": "samples", "noise_level": "sigma_y", "sigma": "sigma_y",
            "scheduler": "method", "solver": "method", "prior": "model",
            "output_range": "input_range", "mask_invert": "invert_mask"}


def task_keywords(task, allowed, task_params, kwargs, own) -> dict:
    """The task's parameters from ``task_params`` and the keywords that name one of them;
    any other keyword is named as an unknown keyword of :func:`restore`."""
    import difflib

    if task_params is not None and not isinstance(task_params, Mapping):
        raise ParameterError(f"task_params must be a mapping of {task!r}'s parameters (e.g. "
                             f"{{'scale': 4}}), got {type(task_params).__name__}")
    params = dict(task_params or {})
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        takes = ", ".join(allowed) or "no parameters"
        raise ParameterError(f"task_params: {task!r} takes {takes}, not "
                             f"{', '.join(map(repr, unknown))}")
    for k, v in kwargs.items():
        if k in allowed:
            if k in params:
                raise ParameterError(f"{k!r} given both as a keyword and in task_params")
            params[k] = v
            continue
        hint = _ALIASES.get(k) or next(iter(difflib.get_close_matches(k, own + allowed, 1)),
                                       None)
        raise UnknownKeywordError(
            f"restore() got an unknown keyword {k!r}" + (f" (did you mean {hint}=?)" if hint
                                                         else "")
            + f"; task {task!r} takes {', '.join(allowed) or 'no parameters'} (as keywords or "
            f"task_params={{...}}); restore's own keywords: {', '.join(own)}")
    return params


def real_photo_params(task, params, degrade, alpha, invert_mask, note) -> dict:
    """Task parameters for a real photo (``degrade=False``) where the caller gave none, masks
    converted (inverted, from transparency), and notes where an operator does not fit."""
    p = dict(params)
    if "mask" in operators.params(task)[0]:
        if p.get("mask") is None and alpha is not None and not degrade:
            p["mask"] = (alpha > 0.5).to(torch.float32)
            note("mask: the image's transparency (transparent = to fill)")
        if p.get("mask") is not None:
            m = inputs.mask_tensor(p["mask"], invert=bool(invert_mask))
            kept = float(m.mean()) if m.numel() else 1.0
            if kept < 0.5:
                note(f"the mask keeps only {kept:.0%} of the image: dmir keeps the white (1) "
                     f"pixels and fills the black (0) ones; "
                     + ("it was inverted (invert_mask)" if invert_mask else
                        "if yours marks the area to fill in white, invert it (--mask-invert, "
                        "invert_mask=True)"))
            p["mask"] = m
    elif invert_mask:
        raise ParameterError(f"invert_mask applies to inpainting masks; task {task!r} has none")
    if task == "colorization":
        if p.get("weights") is None and not degrade:
            p["weights"] = list(inputs.COLOR_WEIGHTS["pillow"])
        elif p.get("weights") is not None:
            p["weights"] = inputs.color_weights(p["weights"])
    if degrade:
        return p
    if task == "deblur":
        if p.get("boundary") is None:
            p["boundary"] = "reflect"
        if p.get("threshold") is None:
            # an 8-bit photo carries quantization noise (σ ≈ 1/(255·√12)); singular values
            # below 0.1 per axis would amplify it more than 100-fold (measured on a σ = 2
            # gaussian_filter blur: A⁺y 26.8 dB at 0.03, 38.0 dB at 0.1, blurred 37.6 dB)
            p["threshold"] = REAL_PHOTO_DEBLUR_THRESHOLD
    if task in ("sr_averagepooling", "sr_bicubic"):
        note(f"{task} is the DDNM/EquS protocol's downsampling "
             + ("(s×s block averages)" if task == "sr_averagepooling" else
                "(strided Keys kernel, no antialiasing)")
             + "; a photo downscaled by a camera or an image library (PIL, OpenCV) is closer "
             "to sr_bicubic_aa")
    return p


def checked_operator(op, task: str, shape) -> Any:
    """A registered builder's result, refused unless it is an operator for ``shape`` whose A
    and Aᵀ give the shapes it declares."""
    need = ("A", "At", "pinv", "project", "x_shape", "y_shape")
    if not all(hasattr(op, a) for a in need):
        raise ParameterError(f"the builder of task {task!r} returned {type(op).__name__}, not an "
                             f"operator (needs {', '.join(need)})")
    try:
        x_shape, y_shape = tuple(int(s) for s in op.x_shape), tuple(int(s) for s in op.y_shape)
    except (TypeError, ValueError):
        raise ShapeError(f"task {task!r}: the operator's x_shape/y_shape are not shapes") \
            from None
    if x_shape != tuple(shape):
        raise ShapeError(f"task {task!r}: the operator is for images of shape {x_shape}, the "
                         f"image is {tuple(shape)}")
    probe_dtype = getattr(op, "dtype", torch.float32)
    probe_dtype = probe_dtype if isinstance(probe_dtype, torch.dtype) else torch.float32
    x0 = torch.zeros((1, *x_shape), dtype=probe_dtype)
    y0 = torch.zeros((1, *y_shape), dtype=probe_dtype)
    with torch.no_grad():
        for what, fn, arg, want in (("A", op.A, x0, y_shape), ("At", op.At, y0, x_shape)):
            try:
                out = fn(arg)
            except DmirError:
                raise
            except Exception as e:  # noqa: BLE001 - a user's builder: report, do not crash
                raise ParameterError(f"task {task!r}: the operator's {what} fails on a "
                                     f"(1, {', '.join(map(str, arg.shape[1:]))}) tensor: "
                                     f"{type(e).__name__}: {e}") from None
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, *want):
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ShapeError(f"task {task!r}: the operator's {what} returns {got}, "
                                 f"expected {(1, *want)}")
    return op
