"""The type-I discrete cosine transform through ``torch.fft``: the eigenbasis of a blur with a
per-axis symmetric kernel and whole-sample symmetric (torch ``"reflect"``) borders.

Why type I: torch's ``F.pad(mode="reflect")`` mirrors *without* repeating the edge sample
(… x2 x1 | x0 x1 … x_{n-1} | x_{n-2} …), the whole-sample symmetric extension, which is
periodic with period 2n − 2. A kernel symmetric along an axis maps such sequences to such
sequences, so the padded blur is a circular convolution on that period restricted to the image,
and the DFT of a whole-sample symmetric sequence is the (unnormalised) DCT-I of its first n
samples:

    X[j] = x_0 + (−1)^j x_{n−1} + 2 Σ_{m=1}^{n−2} x_m cos(π j m / (n − 1)),   j = 0 … n−1.

(The half-sample symmetric extension, … x1 x0 | x0 x1 …, numpy's ``"symmetric"``, would be
DCT-II; it is not what the DPS protocol pads with.) :func:`dct1` is this X (one real FFT of
length 2n − 2), :func:`idct1` its exact inverse. The transform is not orthogonal in the plain
inner product (the end samples count once, the others twice), which is why an operator
diagonalised by it is self-adjoint only in that weighted inner product.
"""
from __future__ import annotations

import torch

from ..errors import ShapeError

__all__ = ["dct1", "idct1", "dct1_2d", "idct1_2d"]


def _extend(x: torch.Tensor, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    if n < 2:
        raise ShapeError(f"DCT-I needs at least 2 samples along dim {dim}, got {n}")
    return torch.cat([x, x.narrow(dim, 1, n - 2).flip(dim)], dim=dim) if n > 2 else x


def dct1(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Unnormalised DCT-I along ``dim`` (the DFT of the whole-sample symmetric extension)."""
    return torch.fft.rfft(_extend(x, dim), dim=dim).real


def idct1(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Inverse of :func:`dct1` along ``dim``."""
    n = z.shape[dim]
    if n < 2:
        raise ShapeError(f"DCT-I needs at least 2 samples along dim {dim}, got {n}")
    return torch.fft.irfft(z, n=2 * n - 2, dim=dim).narrow(dim, 0, n)


def dct1_2d(x: torch.Tensor) -> torch.Tensor:
    """DCT-I over the last two dimensions."""
    return dct1(dct1(x, -1), -2)


def idct1_2d(z: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct1_2d`."""
    return idct1(idct1(z, -2), -1)
