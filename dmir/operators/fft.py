"""Circular (periodic-boundary) convolution with any 2-D kernel, diagonalised by the FFT."""
from __future__ import annotations

import torch

from ..errors import ShapeError
from .base import LinearOperator


class CircularBlur(LinearOperator):
    """y = k ⊛ x with periodic boundaries, per channel, for any 2-D kernel and any H×W.

    Boundary rule: the image is treated as periodic (y[i] = Σ_t k[t] x[(i + c - t) mod n],
    centre c = size//2 per axis, the ``scipy.ndimage.convolve(mode='wrap')`` convention).
    Fourier coefficients with |K̂| < ``threshold`` are treated as zero, so the operator applied
    is the truncated blur and A A⁺ A = A holds exactly. A, Aᵀ and A⁺ cost one FFT pair each.
    No real SVD is exposed (methods needing the spectral protocol use the separable ``deblur``
    with zero boundary instead).
    """

    K_ri: torch.Tensor       # buffers
    Kinv_ri: torch.Tensor

    def __init__(self, shape, kernel, threshold: float = 3e-2, name="deblur"):
        C, H, W = shape
        k = torch.as_tensor(kernel, dtype=torch.float64)
        if k.dim() != 2 or k.shape[0] > H or k.shape[1] > W:
            raise ShapeError(f"{name}: kernel must be 2-D and no larger than the image "
                             f"({H}x{W}), got {tuple(k.shape)}")
        super().__init__(shape, shape)
        self.name = name
        kh, kw = k.shape
        pad = torch.zeros(H, W, dtype=torch.float64)
        pad[:kh, :kw] = k
        pad = torch.roll(pad, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
        K = torch.fft.rfft2(pad)
        K = torch.where(K.abs() < threshold, torch.zeros_like(K), K)
        Kinv = torch.where(K.abs() > 0, 1 / torch.where(K.abs() > 0, K, torch.ones_like(K)),
                           torch.zeros_like(K))
        # stored as real (…, 2) views so that .to(dtype), .double(), .half() and .to(device)
        # convert them like any float buffer (Module.to(float64) would otherwise cast a complex
        # buffer to real and drop its imaginary part)
        self.register_buffer("K_ri", torch.view_as_real(K).to(torch.float32).contiguous())
        self.register_buffer("Kinv_ri", torch.view_as_real(Kinv).to(torch.float32).contiguous())

    @property
    def K(self) -> torch.Tensor:
        """Fourier response of the (thresholded) kernel, rfft2 layout (H, W//2 + 1), complex."""
        return torch.view_as_complex(self.K_ri)

    @property
    def Kinv(self) -> torch.Tensor:
        """Its pseudo-inverse: 1/K where K != 0, else 0."""
        return torch.view_as_complex(self.Kinv_ri)

    def _filter(self, x, F):
        s = x.shape[-2:]
        return torch.fft.irfft2(torch.fft.rfft2(x) * F, s=s)

    def _A(self, x):
        return self._filter(x, self.K)

    def _At(self, y):
        return self._filter(y, self.K.conj())

    def _pinv(self, y):
        return self._filter(y, self.Kinv)

    def _project(self, x, y):
        X = torch.fft.rfft2(x)
        Y = torch.fft.rfft2(y)
        return torch.fft.irfft2(X - self.Kinv * (self.K * X - Y), s=x.shape[-2:])
