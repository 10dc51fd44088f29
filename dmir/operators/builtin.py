"""The built-in operators (the tasks of ``dmir restore --task`` and the bench), registered in
:mod:`dmir.operators.registry`. Builders import torch and the operator classes when called, so
listing the tasks stays cheap.

Two families:
* **Paper protocol** (DDNM/DDRM/EquS reference code, quirks included): ``sr_bicubic``,
  ``sr_averagepooling``, ``deblur_gauss``, ``deblur_aniso``, ``deblur_uni``, ``colorization``,
  ``denoising``, ``cs_walshhadamard``, ``cs_blockbased``, ``inpainting``. They match the
  reference outputs in the conformance fixtures. Note: the three ``deblur_*`` operators carry
  the reference code's channel/singular-value mis-ordering (see :class:`ProtocolDeblur`):
  they are what the published deblurring tables measured, but they are not blurs.
* **For real photos** (no quirks): ``deblur`` (any 2-D kernel; ``boundary="reflect"``, what
  a camera or ``gaussian_filter`` does at the borders: separable kernels through an exact SVD
  of reflected convolution matrices, axis-symmetric ones through the DCT-II, others by CG;
  ``"zero"``: separable kernels, exact SVD; ``"circular"``: FFT), ``sr_bicubic_aa``
  (antialiased bicubic, torch/PIL style), plus the protocol operators that are already exact
  (``sr_averagepooling``, ``inpainting``, ``colorization`` with any weights, ``cs_*``).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import ParameterError, ShapeError
from .registry import register as _register

if TYPE_CHECKING:
    import numpy as np


def _scale(name, H, W, scale):
    if scale is None:
        raise ParameterError(f"{name}: needs scale=<integer ≥ 2>")
    try:
        s = int(scale)
    except (TypeError, ValueError):
        raise ParameterError(f"{name}: scale must be an integer ≥ 2, got {scale!r}") from None
    if s != scale or s < 2:
        raise ParameterError(f"{name}: scale must be an integer ≥ 2, got {scale!r}")
    if H % s or W % s:
        raise ShapeError(f"{name}: image size {H}x{W} is not divisible by scale {s}; "
                         f"crop or pad it to a multiple of {s}")
    return s


def _ratio(name, ratio):
    try:
        r = float(ratio)
    except (TypeError, ValueError):
        raise ParameterError(f"{name}: ratio must be a number in (0, 1]") from None
    if not (0 < r <= 1):
        raise ParameterError(f"{name}: ratio is the fraction of measurements kept and must be "
                             f"in (0, 1], got {ratio}")
    return r


# ----------------------------------------------------------------------------- protocol
@_register("sr_bicubic", ["scale"], "bicubic super-resolution, DDNM protocol (strided Keys "
           "kernel, reflected borders, truncated SVD at 3e-2)")
def _sr_bicubic(shape, scale=None):
    import torch

    from . import kernels
    from .separable import SeparableSVD

    C, H, W = shape
    s = _scale("sr_bicubic", H, W, scale)
    Mh = kernels.protocol_bicubic_matrix(H, s)
    Mw = Mh if W == H else kernels.protocol_bicubic_matrix(W, s)
    return SeparableSVD(Mh, Mw, C, threshold=3e-2, svd_dtype=torch.float32, name="sr_bicubic")


@_register("sr_averagepooling", ["scale"], "s×s average pooling (exact, any H×W divisible "
           "by s)")
def _sr_avg(shape, scale=None):
    from .pointwise import AveragePooling

    C, H, W = shape
    return AveragePooling(shape, _scale("sr_averagepooling", H, W, scale))


def _protocol_kernel(sigma, radius):
    import numpy as np
    import torch

    # float32, as the reference builds it: exp(-0.5 (k/σ)²) normalised
    k = torch.exp(torch.tensor([-0.5 * (x / sigma) ** 2 for x in range(-radius, radius + 1)]))
    return (k / k.sum()).numpy().astype(np.float64)


def _protocol_deblur(shape, k_h, k_w, name):
    from . import kernels
    from .separable import ProtocolDeblur

    C, H, W = shape
    if H < len(k_h) or W < len(k_w):
        raise ShapeError(f"{name}: image {H}x{W} is smaller than the kernel")
    Mh = kernels.protocol_blur_matrix(H, k_h)
    Mw = kernels.protocol_blur_matrix(W, k_w)
    return ProtocolDeblur(Mh, Mw, C, threshold=3e-2, name=name)


@_register("deblur_gauss", [], "Gaussian deblurring, DDNM protocol (5-tap σ=10 kernel, last "
           "tap dropped, reference channel quirk)")
def _deblur_gauss(shape):
    k = _protocol_kernel(10.0, 2)
    return _protocol_deblur(shape, k, k, "deblur_gauss")


@_register("deblur_uni", [], "uniform deblurring, DDNM protocol (9-tap box, last tap dropped, "
           "reference channel quirk)")
def _deblur_uni(shape):
    import numpy as np
    import torch

    k = (torch.tensor([1 / 9] * 9)).numpy().astype(np.float64)
    return _protocol_deblur(shape, k, k, "deblur_uni")


@_register("deblur_aniso", [], "anisotropic deblurring, DDNM protocol (σ=1 vertical, σ=20 "
           "horizontal, 9 taps, reference channel quirk)")
def _deblur_aniso(shape):
    return _protocol_deblur(shape, _protocol_kernel(1.0, 4), _protocol_kernel(20.0, 4),
                            "deblur_aniso")


@_register("colorization", ["weights"], "y = Σ_c w_c x_c (default protocol weights "
           "0.3333, 0.3334, 0.3333)")
def _colorization(shape, weights=None):
    from .pointwise import Colorization

    C = shape[0]
    if weights is None:
        weights = (0.3333, 0.3334, 0.3333) if C == 3 else [1.0 / C] * C
    return Colorization(shape, weights)


@_register("denoising", [], "identity (noise only)")
def _denoising(shape):
    from .pointwise import Identity

    return Identity(shape)


@_register("cs_walshhadamard", ["ratio", "perm"], "Walsh–Hadamard compressed sensing: keep "
           "ratio·H·W coefficients per channel (H·W a power of 2)")
def _cs_wh(shape, ratio=0.25, perm=None, generator=None):
    import torch

    from .cs import WalshHadamardCS

    C, H, W = shape
    r = _ratio("cs_walshhadamard", ratio)
    if perm is None:
        perm = torch.randperm(H * W, generator=generator)
    return WalshHadamardCS(shape, r, perm)


@_register("cs_blockbased", ["ratio", "basis", "block"], "block compressed sensing with an "
           "orthogonal b²×b² basis (default b = 32, drawn at random unless given)")
def _cs_block(shape, ratio=0.25, basis=None, block=32, generator=None):
    from .cs import BlockCS, random_orthogonal

    r = _ratio("cs_blockbased", ratio)
    if basis is None:
        b = int(block)
        C, H, W = shape
        if b < 1 or H % b or W % b:
            raise ShapeError(f"cs_blockbased: image size {H}x{W} must be a multiple of the "
                             f"block size {b} in both directions (choose the block with block=)")
        return BlockCS(shape, r, random_orthogonal(b * b, generator), check_orthogonal=False)
    return BlockCS(shape, r, basis)


def _load_mask_param(mask, shape):
    import numpy as np
    import torch

    if isinstance(mask, (str, os.PathLike)):
        from ..io import load_mask  # file reading lives in dmir.io, not in the operator
        mask = load_mask(mask)
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.ascontiguousarray(mask))
    return mask


@_register("inpainting", ["mask"], "keep the pixels where mask = 1 (mask: H×W or C×H×W "
           "tensor, array or .npy/.png file)")
def _inpainting(shape, mask=None):
    from .pointwise import Inpainting

    if mask is None:
        raise ParameterError("inpainting: needs mask=<H×W tensor or file, 1 = kept>")
    return Inpainting(shape, _load_mask_param(mask, shape))


# ----------------------------------------------------------------------------- real photos
def _separable_factors(k: np.ndarray, tol=1e-6):
    import numpy as np

    U, S, Vt = np.linalg.svd(k)
    if len(S) > 1 and S[1] > tol * S[0]:
        return None
    a = U[:, 0] * np.sqrt(S[0])
    b = Vt[0] * np.sqrt(S[0])
    if a.sum() < 0:
        a, b = -a, -b
    return a, b


@_register("deblur", ["kernel", "boundary", "threshold"], "blur with any 2-D kernel; "
           "boundary reflect (photos: separable kernels through an exact SVD, symmetric ones "
           "the DCT, others CG), zero (separable, exact SVD) or circular (FFT); auto = zero for "
           "separable kernels, else circular")
def _deblur(shape, kernel=None, boundary="auto", threshold=3e-2):
    import numpy as np
    import torch

    from . import kernels
    from .fft import CircularBlur
    from .separable import SeparableSVD

    C, H, W = shape
    if kernel is None:
        raise ParameterError("deblur: needs kernel=<2-D array>")
    k = np.asarray(kernel.detach().cpu() if isinstance(kernel, torch.Tensor) else kernel,
                   dtype=np.float64)
    if k.ndim == 1:
        k = np.outer(k, k)
    if k.ndim != 2 or k.size == 0 or not np.isfinite(k).all():
        raise ParameterError("deblur: kernel must be a finite 1-D or 2-D array")
    if k.shape[0] > H or k.shape[1] > W:
        raise ShapeError(f"deblur: kernel {k.shape[0]}x{k.shape[1]} is larger than the "
                         f"image {H}x{W}")
    if boundary not in ("auto", "zero", "circular", "reflect"):
        raise ParameterError(f"deblur: boundary must be 'auto', 'zero', 'circular' or "
                             f"'reflect', got {boundary!r}")
    factors = _separable_factors(k)
    if boundary == "zero" and factors is None:
        raise ParameterError("deblur: boundary='zero' needs a separable (rank-1) kernel; "
                             "use boundary='reflect' or 'circular' for general kernels")
    if boundary == "reflect":
        if factors is None:
            from .reflect import ReflectConv

            return ReflectConv(shape, k, threshold=threshold, name="deblur")
        a, b = factors
        return SeparableSVD(kernels.conv_matrix(H, a, "reflect"),
                            kernels.conv_matrix(W, b, "reflect"), C, threshold=threshold,
                            name="deblur")
    if factors is not None and boundary != "circular":
        a, b = factors
        return SeparableSVD(kernels.conv_matrix(H, a), kernels.conv_matrix(W, b), C,
                            threshold=threshold, name="deblur")
    return CircularBlur(shape, k, threshold=threshold)


@_register("sr_bicubic_aa", ["scale", "threshold"], "antialiased bicubic downsampling by an "
           "integer factor (torch/PIL resize), exact SVD")
def _sr_bicubic_aa(shape, scale=None, threshold=1e-3):
    from . import kernels
    from .separable import SeparableSVD

    C, H, W = shape
    s = _scale("sr_bicubic_aa", H, W, scale)
    Mh = kernels.resize_matrix(H, H // s)
    Mw = Mh if W == H else kernels.resize_matrix(W, W // s)
    return SeparableSVD(Mh, Mw, C, threshold=threshold, name="sr_bicubic_aa")


# ----------------------------------------------------------------------------- DPS / DCDP
def _odd_size(name, kernel_size):
    try:
        k = int(kernel_size)
    except (TypeError, ValueError):
        raise ParameterError(f"{name}: kernel_size must be a positive odd integer") from None
    if k != kernel_size or k < 1 or k % 2 == 0:
        raise ParameterError(f"{name}: kernel_size must be a positive odd integer, got "
                             f"{kernel_size!r}")
    return k


@_register("deblur_dps_gauss", ["kernel_size", "std"], "DPS/DCDP Gaussian blur (61×61, σ=3, "
           "reflected borders); exact A and Aᵀ, A⁺ diagonalised by the DCT-I (truncated at "
           "1e-2 of the largest eigenvalue)")
def _deblur_dps_gauss(shape, kernel_size=61, std=3.0):
    from . import dps_protocol

    k = dps_protocol.gaussian_kernel(_odd_size("deblur_dps_gauss", kernel_size), std)
    return dps_protocol.ReflectBlur(shape, k, name="deblur_dps_gauss")


@_register("deblur_dps_motion", ["seed", "intensity", "kernel_size"], "DPS/DCDP motion blur "
           "(61×61 `motionblur` kernel, intensity 0.5, seeded; reflected borders); exact A and "
           "Aᵀ, A⁺ by conjugate gradients (100 iterations at most)")
def _deblur_dps_motion(shape, seed=0, intensity=0.5, kernel_size=61):
    from . import dps_protocol

    k = dps_protocol.motion_kernel(_odd_size("deblur_dps_motion", kernel_size), intensity,
                                   seed)
    return dps_protocol.ReflectBlur(shape, k, name="deblur_dps_motion")


@_register("sr_matlab_bicubic", ["scale", "threshold"], "DPS/DCDP super-resolution: MATLAB "
           "imresize bicubic with antialiasing (DPS Resizer), output ceil(n/scale), exact SVD")
def _sr_matlab_bicubic(shape, scale=None, threshold=1e-3):
    from . import dps_protocol
    from .separable import SeparableSVD

    C, H, W = shape
    if scale is None:
        raise ParameterError("sr_matlab_bicubic: needs scale=<integer ≥ 2>")
    try:
        s = int(scale)
    except (TypeError, ValueError):
        raise ParameterError(f"sr_matlab_bicubic: scale must be an integer ≥ 2, got "
                             f"{scale!r}") from None
    if s != scale or s < 2:
        raise ParameterError(f"sr_matlab_bicubic: scale must be an integer ≥ 2, got {scale!r}")
    if H < s or W < s:
        raise ShapeError(f"sr_matlab_bicubic: image {H}x{W} is smaller than the scale {s}")
    Mh = dps_protocol.matlab_resize_matrix(H, 1.0 / s)
    Mw = Mh if W == H else dps_protocol.matlab_resize_matrix(W, 1.0 / s)
    return SeparableSVD(Mh, Mw, C, threshold=threshold, name="sr_matlab_bicubic")


@_register("inpainting_box", ["box", "margin", "seed"], "DPS/DCDP box inpainting: a box×box "
           "hole (default 128) at a seeded random position ≥ margin (16) from the borders")
def _inpainting_box(shape, box=128, margin=16, seed=0):
    from . import dps_protocol
    from .pointwise import Inpainting

    C, H, W = shape
    mask = dps_protocol.mask_box((H, W), box=box, margin=margin, seed=seed)
    return Inpainting(shape, mask, name="inpainting_box")


@_register("inpainting_random", ["missing", "seed"], "DPS/DCDP random inpainting: drop a "
           "fraction `missing` of the pixels (default 0.7; a (low, high) range is drawn "
           "per image as in DPS), seeded")
def _inpainting_random(shape, missing=0.7, seed=0):
    from . import dps_protocol
    from .pointwise import Inpainting

    C, H, W = shape
    mask = dps_protocol.mask_random((H, W), missing=missing, seed=seed)
    return Inpainting(shape, mask, name="inpainting_random")
