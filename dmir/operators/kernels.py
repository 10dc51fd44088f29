"""1-D and 2-D kernels and the 1-D matrices built from them.

All matrices are float64 numpy arrays; operators convert them once at construction.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ParameterError


def keys_cubic(x, a: float = -0.5):
    """Keys' cubic convolution kernel (a = -0.5 is the bicubic of MATLAB/PIL/torch)."""
    x = np.abs(np.asarray(x, dtype=np.float64))
    out = np.zeros_like(x)
    m1 = x <= 1
    m2 = (x > 1) & (x < 2)
    out[m1] = (a + 2) * x[m1] ** 3 - (a + 3) * x[m1] ** 2 + 1
    out[m2] = a * x[m2] ** 3 - 5 * a * x[m2] ** 2 + 8 * a * x[m2] - 4 * a
    return out


def gaussian_1d(sigma: float, radius: int) -> np.ndarray:
    """exp(-k²/2σ²) for k = -radius..radius, normalised to sum 1."""
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (k / sigma) ** 2)
    return g / g.sum()


# --------------------------------------------------------------------------- DDNM/EquS protocol
def protocol_bicubic_matrix(n: int, scale: int) -> np.ndarray:
    """The reference ``SRConv`` matrix (n/s × n): strided bicubic with reflected borders.

    κ has 4s taps, κ_i = keys((i - 2s + 0.5)/s), normalised. Row r is centred at
    c = r·s + ⌊s/2⌋ and puts κ_{j-c+2s} on column j for j = c-2s … c+2s-1; out-of-range
    columns are reflected (j < 0 → -j-1, j ≥ n → 2n-1-j) and contributions added.
    """
    s = int(scale)
    taps = 4 * s
    kappa = keys_cubic((np.arange(taps) - np.floor(taps / 2) + 0.5) / s)
    kappa = kappa / kappa.sum()
    rows = np.arange(n // s)
    centres = rows * s + s // 2
    j = centres[:, None] + np.arange(-2 * s, 2 * s)[None, :]  # (rows, taps)
    j = np.where(j < 0, -j - 1, j)
    j = np.where(j >= n, 2 * n - 1 - j, j)
    M = np.zeros((n // s, n))
    np.add.at(M, (np.repeat(rows, taps), j.ravel()), np.tile(kappa, len(rows)))
    return M


def protocol_blur_matrix(n: int, kernel: np.ndarray) -> np.ndarray:
    """The reference ``Deblurring`` 1-D matrix (n × n), zero boundary.

    Row i uses offsets -k//2 … k//2 - 1 only: the reference loop ``range(i - k//2, i + k//2)``
    drops the kernel's last tap. Reproduced on purpose (paper protocol).
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    k = len(kernel)
    M = np.zeros((n, n))
    for off in range(-(k // 2), k // 2):
        i = np.arange(max(0, -off), min(n, n - off))
        M[i, i + off] = kernel[off + k // 2]
    return M


# --------------------------------------------------------------------------- correct operators
def reflect_index(j: np.ndarray, n: int) -> np.ndarray:
    """Indices j (any integers) folded into 0..n-1 by half-sample symmetric reflection
    (… 1 0 | 0 1 … n-1 | n-1 n-2 …), period 2n."""
    j = np.mod(j, 2 * n)
    return np.where(j >= n, 2 * n - 1 - j, j)


def conv_matrix(n: int, kernel: np.ndarray, boundary: str = "zero") -> np.ndarray:
    """1-D convolution y = k * x as an (n × n) matrix, all taps used.

    y[i] = Σ_t k[t] · x[i + c - t] with centre c = len(k)//2 (scipy.ndimage.convolve's
    convention). ``boundary``: 'zero' (x = 0 outside), 'circular' (periodic) or 'reflect'
    (half-sample symmetric, the edge sample repeated: scipy.ndimage's 'reflect', numpy's
    'symmetric', repeated for kernels wider than the image — how a camera or
    ``gaussian_filter`` blurs at the borders).
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    c = len(kernel) // 2
    M = np.zeros((n, n))
    i = np.arange(n)
    for t, w in enumerate(kernel):
        j = i + c - t
        if boundary == "circular":
            np.add.at(M, (i, j % n), w)
        elif boundary == "zero":
            ok = (j >= 0) & (j < n)
            M[i[ok], j[ok]] += w
        elif boundary == "reflect":
            np.add.at(M, (i, reflect_index(j, n)), w)
        else:
            raise ParameterError(f"boundary must be 'zero', 'circular' or 'reflect', got "
                                 f"{boundary!r}")
    return M


def resize_matrix(n: int, out: int, mode: str = "bicubic", antialias: bool = True) -> np.ndarray:
    """The (out × n) matrix of torch's ``F.interpolate`` along one axis (align_corners=False).

    Built by resizing the identity, so it is torch's operator exactly (antialiased bicubic or
    bilinear: PIL-style kernel stretched by the scale, clipped at the border and renormalised).
    """
    # The other axis has width 2 (resized 2 → 2, the identity), not 1: torch's antialiased
    # kernels return wrong values when a spatial dimension has size 1 (seen with torch 2.13:
    # every output row equal to the first one).
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, n, 1).expand(n, 1, n, 2).contiguous()
    kw = {"align_corners": False} if mode in ("bicubic", "bilinear") else {}
    r = F.interpolate(eye, size=(out, 2), mode=mode, antialias=antialias, **kw)
    return r[..., 0].reshape(n, out).T.numpy().copy()
