"""Images, masks and arguments as people have them, for :func:`dmir.pipeline.restore`.

* :func:`to_model` — a PIL image, a numpy array (H×W, H×W×C, or N×H×W×C; uint8, uint16 or
  float) or a torch tensor (H×W, C×H×W or B×C×H×W; uint8 or float) → a (B, C, H, W) float32
  tensor in the model domain [-1, 1], and the :class:`ImageKind` needed to give the result
  back in the same form (:func:`from_model`). The value range of float input is
  ``input_range``: ``"unit"`` ([0, 1]: PIL, numpy, torchvision, deepinv, torchmetrics) or
  ``"model"`` ([-1, 1], dmir's own tensors). Left out, float numpy arrays are ``"unit"`` and
  float tensors ``"model"`` (dmir's convention), with a warning when a tensor looks like
  [0, 1]. Integer data is read at its full range (uint8 0..255, uint16 0..65535). Values far
  outside the range (0..255 given as floats) are refused, never clipped silently.
* :func:`mask_tensor` — an inpainting mask (file, PIL image, array, tensor) as 0/1, 1 = kept;
  a PIL image or file with transparency gives its alpha channel (transparent = to fill).
* checks of the scalar arguments (seed, generator, samples, device, model), each raising a
  :mod:`dmir.errors` type that names what was wrong and what is allowed.
* :data:`COLOR_WEIGHTS` — named gray conversions for colorization.

Nothing here reads options or prints; warnings are ``warnings``.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import InputError, ParameterError, ShapeError
# the library's NFE bar is the CLI's (shown when stderr is a terminal)
from .log import Progress as ProgressBar

__all__ = ["INPUT_RANGES", "OUTPUT_TYPES", "COLOR_WEIGHTS", "ImageKind", "to_model",
           "from_model", "mask_tensor", "color_weights", "check_seed", "check_generator",
           "check_samples", "check_device", "check_model", "prior_channels", "ProgressBar",
           "RangeWarning"]

INPUT_RANGES = ("unit", "model")
OUTPUT_TYPES = ("pil", "np", "pt")
#: gray = Σ w_c · channel_c: Pillow's ``convert("L")`` (ITU-R 601-2 luma, also OpenCV),
#: scikit-image's ``rgb2gray`` (Rec. 709), and the DDNM/EquS protocol's equal weights
COLOR_WEIGHTS = {"pillow": (0.299, 0.587, 0.114), "rec601": (0.299, 0.587, 0.114),
                 "rec709": (0.2125, 0.7154, 0.0721), "skimage": (0.2125, 0.7154, 0.0721),
                 "protocol": (0.3333, 0.3334, 0.3333)}
#: how far outside its range a float input may reach (noisy measurements overshoot) before
#: it is refused: [-0.5, 1.5] for "unit", [-2, 2] for "model"
_SLACK = 0.5


class RangeWarning(UserWarning):
    """A float tensor given without ``input_range`` looks like [0, 1], not [-1, 1]."""


@dataclass
class ImageKind:
    """How an input image came in, to give the result back in the same form."""

    kind: str                        # "pil", "np" or "pt"
    layout: str                      # "hw", "hwc", "nhwc", "chw", "bchw"
    dtype: Any                       # numpy or torch dtype of the input
    range: str                       # "unit" or "model" (float input) or "int" (uint8/16)
    device: Any = None               # a tensor's device
    batch: int = 1
    list_of: int = 0                 # a list of that many images (returned as a list)


def _name(x) -> str:
    return type(x).__module__.split(".")[0] + "." + type(x).__name__


def _pil_array(im) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W, C) array of a PIL image and its alpha channel (or None)."""
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("La", "PA"):
        im = im.convert("LA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    elif mode not in ("L", "LA", "RGB", "RGBA", "F") and not mode.startswith("I"):
        im = im.convert("RGB")
    a = np.asarray(im)
    if im.mode.startswith("I"):
        a = a.astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise InputError(f"PIL image of mode {mode}: pixel values must lie in 0..65535")
        a = a.astype(np.uint16)
    if a.ndim == 2:
        a = a[:, :, None]
    alpha = None
    if a.shape[2] in (2, 4):
        alpha, a = a[:, :, -1], a[:, :, :-1]
    return a, alpha


def _float_range(x: torch.Tensor, rng: str, declared: bool, what: str) -> None:
    """Refuse NaN/Inf and values far outside ``rng``; warn when an undeclared "model" tensor
    looks like [0, 1]."""
    if not torch.isfinite(x).all():
        raise InputError(f"{what} contains NaN or Inf values")
    lo, hi = float(x.min()), float(x.max())
    low, high = (0.0, 1.0) if rng == "unit" else (-1.0, 1.0)
    span = high - low
    if hi > high + _SLACK * span or lo < low - _SLACK * span:
        hint = ""
        if 2.0 < hi <= 255.0 and lo >= 0.0:
            hint = ("; it looks like 8-bit levels 0..255: pass it as uint8, or divide by 255 "
                    "and use input_range='unit'")
        raise InputError(f"{what} has values in [{lo:.4g}, {hi:.4g}], outside its range "
                         f"input_range={rng!r} ({'[0, 1]' if rng == 'unit' else '[-1, 1]'})"
                         f"{hint}")
    if rng == "model" and not declared and lo >= 0.0 and hi <= 1.0 and hi - lo > 0.05:
        warnings.warn(f"{what} lies in [0, 1] ({lo:.3g}..{hi:.3g}) but float tensors are read "
                      "in dmir's model range [-1, 1]: pass input_range='unit' for a [0, 1] "
                      "image (torchvision, deepinv, torchmetrics), or input_range='model' to "
                      "keep this reading without the warning", RangeWarning, stacklevel=5)


def _from_int(a, what: str) -> tuple[np.ndarray, str]:
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0, "unit"
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0, "unit"
    raise InputError(f"{what} has integer dtype {a.dtype}; integer images must be uint8 "
                     f"(0..255) or uint16 (0..65535), float images float16/32/64")


def _one(image, input_range, what) -> tuple[torch.Tensor, ImageKind, torch.Tensor | None]:
    alpha = None
    try:
        from PIL import Image
        is_pil = isinstance(image, Image.Image)
    except ImportError:                                  # pragma: no cover - pillow is required
        is_pil = False
    if is_pil:
        if image.width < 1 or image.height < 1:
            raise ShapeError(f"{what} is an empty PIL image ({image.width}x{image.height})")
        a, al = _pil_array(image)
        kind = ImageKind("pil", "hwc", image.mode, "int")
        if al is not None and (al < (255 if al.dtype == np.uint8 else 65535)).any():
            alpha = torch.from_numpy(_from_int(np.ascontiguousarray(al), what)[0])
        if a.dtype.kind == "f":
            arr, rng = a.astype(np.float32), (input_range or "unit")
            kind.range = rng
        else:
            arr, rng = _from_int(a, what)
        x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]
        _float_range(x, rng, True, what)
        return (x * 2 - 1 if rng == "unit" else x), kind, alpha
    if isinstance(image, np.ndarray):
        a = image
        if a.dtype.kind == "b" or a.dtype.kind not in "uif":
            raise InputError(f"{what} has dtype {a.dtype}; images are uint8, uint16 or float "
                             f"arrays (a boolean array is a mask: pass it as mask=)")
        if a.ndim == 2:
            layout, a = "hw", a[None, :, :, None]
        elif a.ndim == 3 and a.shape[-1] in (1, 2, 3, 4):
            layout, a = "hwc", a[None]
        elif a.ndim == 3 and a.shape[0] in (1, 3):
            layout, a = "chw", a.transpose(1, 2, 0)[None]
        elif a.ndim == 4 and a.shape[-1] in (1, 2, 3, 4):
            layout = "nhwc"
        else:
            raise ShapeError(f"{what}: numpy images must be H×W, H×W×C or N×H×W×C with C in "
                             f"1..4, got shape {a.shape}")
        if 0 in a.shape:
            raise ShapeError(f"{what} is empty (shape {image.shape})")
        kind = ImageKind("np", layout, a.dtype, "int", batch=a.shape[0])
        if a.shape[-1] in (2, 4):
            al, a = a[..., -1], a[..., :-1]
            if a.shape[0] == 1:
                alpha = (torch.from_numpy(_from_int(np.ascontiguousarray(al[0]), what)[0])
                         if al.dtype.kind == "u" else torch.from_numpy(
                             np.ascontiguousarray(al[0], dtype=np.float32)))
                if bool((alpha >= 1).all()):
                    alpha = None
        if a.dtype.kind == "f":
            rng = input_range or "unit"
            kind.range = rng
            x = torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2),
                                                      dtype=np.float32))
        else:
            arr, rng = _from_int(np.ascontiguousarray(a), what)
            x = torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))
        _float_range(x, rng, True, what)
        return (x * 2 - 1 if rng == "unit" else x), kind, alpha
    if isinstance(image, torch.Tensor):
        t = image.detach()
        if t.device.type == "meta":
            raise InputError(f"{what} is a tensor on the 'meta' device: it holds no pixel values")
        if t.dim() == 2:
            layout, t = "hw", t[None, None]
        elif t.dim() == 3:
            layout, t = "chw", t[None]
        elif t.dim() == 4:
            layout = "bchw"
        else:
            raise ShapeError(f"{what}: tensors must be (H, W), (C, H, W) or (B, C, H, W), got "
                             f"{tuple(image.shape)}")
        if t.shape[1] not in (1, 3) or 0 in t.shape:
            raise ShapeError(f"{what}: tensors need C = 1 (gray) or 3 (RGB) channels and a "
                             f"non-empty image, got shape {tuple(image.shape)}")
        kind = ImageKind("pt", layout, t.dtype, "int", device=t.device, batch=t.shape[0])
        if t.dtype == torch.uint8:
            x, rng, declared = t.to("cpu", torch.float32) / 255.0, "unit", True
        elif t.dtype.is_floating_point:
            declared = input_range is not None
            rng = input_range or "model"
            kind.range = rng
            x = t.to("cpu", torch.float32)
        else:
            raise InputError(f"{what} has dtype {t.dtype}; tensors must be float (float16/32/"
                             f"64, bfloat16) or uint8 (0..255)")
        _float_range(x, rng, declared, what)
        return (x * 2 - 1 if rng == "unit" else x), kind, None
    raise InputError(f"{what} must be a PIL image, a numpy array or a torch tensor, got "
                     f"{_name(image)}")


def to_model(image, input_range: str | None = None):
    """``(x, kind, alpha)``: ``x`` the (B, C, H, W) float32 CPU tensor in [-1, 1] (alpha
    dropped), ``kind`` (:class:`ImageKind`) and the alpha channel (H, W) in [0, 1] when the
    image has a non-opaque one (else None). A list of same-sized images is a batch."""
    if input_range is not None and input_range not in INPUT_RANGES:
        raise ParameterError(f"input_range must be 'unit' ([0, 1]) or 'model' ([-1, 1]), got "
                             f"{input_range!r}")
    if isinstance(image, (list, tuple)):
        if not image:
            raise InputError("image is an empty list")
        parts = [_one(im, input_range, f"image[{i}]") for i, im in enumerate(image)]
        shapes = {tuple(p[0].shape[1:]) for p in parts}
        if len(shapes) != 1:
            raise ShapeError(f"a list of images is restored as one batch: all must have the "
                             f"same size and channels, got {sorted(shapes)}")
        kind = parts[0][1]
        kind.list_of = len(parts)
        return torch.cat([p[0] for p in parts]), kind, None
    return _one(image, input_range, "image")


def from_model(x: torch.Tensor, kind: ImageKind, output_type: str | None = None):
    """The result ``x`` (B, C, H, W) in [-1, 1] in the form the input came in (or
    ``output_type``: ``"pil"``, ``"np"`` (H×W×C, N×H×W×C for a batch) or ``"pt"``)."""
    out = output_type or kind.kind
    if out not in OUTPUT_TYPES:
        raise ParameterError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got "
                             f"{output_type!r}")
    u = ((x.detach().to("cpu", torch.float32).clamp(-1, 1) + 1) / 2)
    if kind.list_of and out != "pt":
        return [from_model(x[i:i + 1], ImageKind(kind.kind, kind.layout, kind.dtype,
                                                 kind.range, kind.device), output_type)
                for i in range(x.shape[0])]
    if out == "pil":
        from PIL import Image

        a = np.rint(u.numpy().transpose(0, 2, 3, 1) * 255).astype(np.uint8)
        ims = [Image.fromarray(im[:, :, 0] if im.shape[2] == 1 else im) for im in a]
        return ims[0] if len(ims) == 1 else ims
    if out == "np":
        a = u.numpy().transpose(0, 2, 3, 1)
        dt = kind.dtype if kind.kind == "np" else np.dtype(np.float32)
        if dt == np.uint8:
            a = np.rint(a * 255).astype(np.uint8)
        elif dt == np.uint16:
            a = np.rint(a * 65535).astype(np.uint16)
        elif kind.kind == "np" and kind.range == "model":
            a = (a * 2 - 1).astype(dt)
        else:
            a = a.astype(dt)
        if kind.kind == "np" and kind.layout in ("hw", "hwc", "chw") and a.shape[0] == 1:
            a = a[0]
            if kind.layout == "hw" and a.shape[2] == 1:
                a = a[:, :, 0]
            elif kind.layout == "chw":
                a = a.transpose(2, 0, 1)
        elif kind.kind != "np" and a.shape[0] == 1:
            a = a[0]
        return a
    # "pt"
    if kind.kind == "pt":
        if kind.dtype == torch.uint8:
            t = torch.round(u * 255).to(torch.uint8)
        else:
            t = (u * 2 - 1 if kind.range == "model" else u).to(kind.dtype)
        if kind.device is not None and kind.device.type != "meta":
            t = t.to(kind.device)
        if kind.layout in ("hw", "chw") and t.shape[0] == 1:
            t = t[0, 0] if kind.layout == "hw" and t.shape[1] == 1 else t[0]
        return t
    return u                           # PIL / numpy input as tensors: (B, C, H, W) in [0, 1]


# ----------------------------------------------------------------------------- masks
def mask_tensor(mask, invert: bool = False) -> torch.Tensor:
    """An inpainting mask as a float32 0/1 tensor, 1 = kept: a file (:func:`dmir.io.load_mask`:
    white = kept, or its alpha channel where it has transparency: transparent = to fill), a
    PIL image (the same rules), a numpy array or tensor of 0/1 (H×W or C×H×W). ``invert``
    swaps kept and filled (masks drawn with the area to fill in white)."""
    if isinstance(mask, (str, os.PathLike)):
        from .io import load_mask

        m = load_mask(mask)
    else:
        try:
            from PIL import Image
            is_pil = isinstance(mask, Image.Image)
        except ImportError:                              # pragma: no cover
            is_pil = False
        if is_pil:
            a, alpha = _pil_array(mask)
            if alpha is not None and alpha.min() < (255 if alpha.dtype == np.uint8 else 65535):
                m = torch.from_numpy((_from_int(np.ascontiguousarray(alpha), "mask")[0] > 0.5)
                                     .astype(np.float32))
            else:
                g = _from_int(np.ascontiguousarray(a), "mask")[0] if a.dtype.kind != "f" \
                    else a.astype(np.float32)
                m = torch.from_numpy((g.mean(axis=2) > 0.5).astype(np.float32))
        elif isinstance(mask, (np.ndarray, torch.Tensor)):
            m = torch.as_tensor(np.asarray(mask) if isinstance(mask, np.ndarray) else mask)
            if m.dtype == torch.bool:
                m = m.to(torch.float32)
            if not (m.dtype.is_floating_point or m.dtype in (torch.uint8, torch.int32,
                                                              torch.int64, torch.int16)):
                raise InputError(f"mask must be a numeric or boolean array, got {m.dtype}")
            m = m.detach().to("cpu", torch.float32)
            if not torch.isfinite(m).all() or not bool(((m == 0) | (m == 1)).all()):
                raise InputError("mask must contain only 0 (to fill) and 1 (kept)")
        else:
            raise InputError(f"mask must be a file path, a PIL image, a numpy array or a "
                             f"tensor of 0/1, got {_name(mask)}")
    return 1.0 - m if invert else m


def color_weights(w):
    """Colorization weights: a name of :data:`COLOR_WEIGHTS` or three numbers."""
    if isinstance(w, str):
        if w.lower() not in COLOR_WEIGHTS:
            raise ParameterError(f"colorization weights {w!r}: use three numbers or one of "
                                 f"{', '.join(COLOR_WEIGHTS)}")
        return list(COLOR_WEIGHTS[w.lower()])
    return w


# ----------------------------------------------------------------------------- arguments
def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def check_seed(seed) -> int:
    if not _is_int(seed) or not 0 <= int(seed) < 2 ** 64:
        raise ParameterError(f"seed must be an integer in 0..2^64-1, got {seed!r}")
    return int(seed)


def check_generator(generator, seed) -> torch.Generator:
    """The CPU generator that draws everything: ``generator`` as given, or one seeded with
    ``seed``."""
    if generator is None:
        return torch.Generator().manual_seed(check_seed(seed))
    if not isinstance(generator, torch.Generator):
        raise ParameterError(f"generator must be a torch.Generator, got {_name(generator)}")
    if generator.device.type != "cpu":
        raise ParameterError(f"generator must be a CPU torch.Generator (dmir draws on the CPU "
                             f"and moves the noise, so a seed gives the same image on every "
                             f"device), got one on {generator.device}")
    if seed not in (0, None):
        raise ParameterError("give either seed= or generator=, not both")
    return generator


def check_samples(samples) -> int:
    if not _is_int(samples) or int(samples) < 1:
        raise ParameterError(f"samples must be a positive integer, got {samples!r}")
    return int(samples)


def check_device(device) -> torch.device:
    """A device that exists here: cpu, cuda[:N] (with CUDA), mps (with MPS)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ParameterError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") \
            from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError(f"device {device!r}: no CUDA device is available here; use "
                                 f"'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ParameterError(f"device {device!r}: only {torch.cuda.device_count()} CUDA "
                                 f"device(s) here")
        return dev
    if dev.type == "mps" and getattr(torch.backends, "mps", None) is not None \
            and torch.backends.mps.is_available():
        return dev
    raise ParameterError(f"device {device!r} cannot run a restoration; use 'cpu' or 'cuda'")


def check_model(model) -> None:
    """A name, a path or a prior (an object with ``eps`` and ``alphas_cumprod``)."""
    if isinstance(model, (str, os.PathLike)):
        if not os.fspath(model):
            raise ParameterError("model must not be empty: a name (see `dmir models`), a path "
                                 "or a loaded prior")
        return
    if not (callable(getattr(model, "eps", None)) and hasattr(model, "alphas_cumprod")):
        raise ParameterError(f"model must be a name (see `dmir models`), a checkpoint path or "
                             f"a prior with eps(x_t, t) and alphas_cumprod, got "
                             f"{_name(model)}")


def prior_channels(model) -> int | None:
    """The channels a prior takes, known without loading a network where possible: None when
    it takes gray and RGB alike (analytic priors) or when it cannot be known before loading
    (a checkpoint path: then ``-1``)."""
    if isinstance(model, (str, os.PathLike)):
        name = os.fspath(model)
        if name == "natural":
            return None
        from .models.builtin import LEARNED_PRIOR, learned_prior_path

        if name == LEARNED_PRIOR:
            try:
                import json

                with open(os.path.join(learned_prior_path(), "config.json")) as f:
                    return int(json.load(f)["config"]["in_channels"])
            except (OSError, ValueError, KeyError, TypeError):
                return 3
        if name == "patch-gmm":
            return 3
        return -1
    inner = getattr(model, "model", model)            # a TiledPrior's network prior
    c = getattr(inner, "in_channels", None)
    if c is not None:
        return int(c)
    mean = getattr(inner, "mean", None)               # GaussianPrior (C, H, W)
    if isinstance(mean, torch.Tensor) and mean.dim() == 3:
        return int(mean.shape[0])
    return None

