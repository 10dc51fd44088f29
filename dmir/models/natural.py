"""The built-in natural-image prior: a stationary Gaussian with a fitted power-law spectrum.

Model (model domain [-1, 1], images (B, C, H, W) of ANY size H×W, C = 3 colour or C = 1 gray):

    x = m + P z,    z_k independent zero-mean stationary Gaussian fields (k = 0..C-1),

where m (C,) is a constant per-channel mean and P (C × C) the fixed orthogonal colour-PCA matrix
of natural photographs (columns = decorrelated channels: ≈ luminance, red − blue, green − magenta).
Each field z_k is *periodic* on the H×W grid (the image is treated as a torus) and diagonal in the
unitary 2-D DFT (``norm="ortho"``): its DFT coefficient at frequency (fy, fx) has variance

    p_k(f) = a_k / (f² + f0_k²)^(β_k / 2),      f = √(fy² + fx²) in cycles/pixel,

with fy, fx from ``torch.fft.fftfreq``. p is a variance per *unitary* coefficient, in squared model
units, and does not depend on H×W; the pixel covariance is Σ = (P ⊗ I) blockdiag_k(F* diag(p_k) F)
(P ⊗ I)ᵀ with F the unitary DFT matrix. β ≈ 2 is the classic 1/f² power law of natural images;
f0 is a very-low-frequency cut-off that keeps the DC variance finite.

Everything is exact through the FFT: for x_t = √ᾱ x_0 + √(1-ᾱ) n, with r = Pᵀ (x_t - √ᾱ m),

    ε(x_t, t) = √(1-ᾱ) · P F* [ F r / (ᾱ p(f) + 1 - ᾱ) ]          (per channel, per frequency)

i.e. exactly ``GaussianPrior(mean, Σ).eps`` without forming Σ, and x̂_0 = model.x0(x_t, t) is the
exact MMSE (Wiener) denoiser under this prior. The constants below were fitted to real photographs
by ``benchmarks/fit_natural_prior.py`` (see there for the procedure).

All computations are in float64 internally and returned in the input's dtype.
"""
from __future__ import annotations

import copy
from typing import Any

import torch

from ..errors import ParameterError, ShapeError
from .base import DiffusionModel, _bcast, make_schedule

# Fitted by benchmarks/fit_natural_prior.py (seed 0) on the 400 BSDS500 train JPEGs and the 858
# ImageNet sample JPEGs of ../shared/data/train: colour mean and PCA over all pixels, spectra from
# Hann-windowed periodograms of 2514 64×64, 2502 128×128 and 1180 256×256 random crops (axes
# excluded), f0 from the measured pixel variance. Luminance β ≈ 2.35 (power ∝ 1/f^2.35).
# Units: mean in [-1, 1] model units; a in (model units)² · (cycles/pixel)^β per unitary DFT
# coefficient; f0 in cycles/pixel. Exact MMSE denoising of Kodak24 (256×256 centre crops), PSNR on
# [0, 1]: σ = 0.05: 26.2 → 31.5 dB, σ = 0.1: 20.3 → 27.8 dB, σ = 0.2: 14.7 → 24.9 dB.
_PARAMS = {
    'rgb': {
        'mean': (-0.05827690065, -0.09074857712, -0.203111389),
        'P': ((0.5730242793, 0.7055913209, 0.4168741575),
              (0.5796295335, 0.0106740565, -0.8148102039),
              (0.5793727464, -0.7085386033, 0.4028650746)),
        'a': (0.003777749041, 7.241332873e-05, 3.926234207e-05),
        'beta': (2.353849718, 2.736079486, 2.509781515),
        'f0': (0.000728509583, 0.001639859473, 0.0008994423462),
    },
    'gray': {
        'mean': (-0.09384890641,),
        'P': ((1.0,),),
        'a': (0.001270178214,),
        'beta': (2.36275149,),
        'f0': (0.0008099659242,),
    },
}


def _dct_scale(N: int, like: torch.Tensor) -> torch.Tensor:
    a = torch.full((N,), (2.0 / N) ** 0.5, dtype=like.dtype, device=like.device)
    a[0] = (1.0 / N) ** 0.5
    return a


def dct_ortho(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II along the last axis, c_k = α_k Σ_n x_n cos(πk(2n+1)/2N), in
    O(N log N) through one real FFT of the even/odd reordered signal v (Makhoul 1980):
    with W_k = e^{-iπk/2N} V_k, c_k = α_k Re W_k for k ≤ N/2 and c_{N-k} = -α_{N-k} Im W_k."""
    N = x.shape[-1]
    v = torch.cat([x[..., ::2], x[..., 1::2].flip(-1)], -1)
    k = torch.arange(N // 2 + 1, dtype=x.dtype, device=x.device)
    Wk = torch.fft.rfft(v) * torch.exp(-0.5j * torch.pi * k / N)
    c = torch.cat([Wk.real, -Wk.imag[..., 1:(N + 1) // 2].flip(-1)], -1)
    return c * _dct_scale(N, x)


def idct_ortho(c: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct_ortho` (orthonormal DCT-III) along the last axis: rebuild the
    half spectrum V_k = e^{iπk/2N} (X_k - i X_{N-k}), X = c/α, X_N = 0, and one inverse real FFT."""
    N = c.shape[-1]
    X = c / _dct_scale(N, c)
    h = N // 2 + 1
    X_rev = torch.cat([torch.zeros_like(X[..., :1]), X[..., 1:].flip(-1)], -1)[..., :h]
    k = torch.arange(h, dtype=c.dtype, device=c.device)
    v = torch.fft.irfft(torch.exp(0.5j * torch.pi * k / N) * (X[..., :h] - 1j * X_rev), n=N)
    x = torch.empty_like(v)
    x[..., ::2] = v[..., : (N + 1) // 2]
    x[..., 1::2] = v[..., (N + 1) // 2:].flip(-1)
    return x


def dct2(x):
    """2-D orthonormal DCT-II over the last two axes."""
    return dct_ortho(dct_ortho(x).transpose(-1, -2)).transpose(-1, -2)


def idct2(c):
    """Inverse of :func:`dct2`."""
    return idct_ortho(idct_ortho(c).transpose(-1, -2)).transpose(-1, -2)


class NaturalImagePrior(DiffusionModel):
    """Stationary power-law Gaussian prior of natural images, exact for any H×W.

    Two boundary rules, both exact:

    * ``boundary="reflect"`` (default): the image is the top-left quarter of its mirror-symmetric
      2H×2W extension; the covariance is diagonal in the orthonormal 2-D DCT-II basis, the
      coefficient (k_y, k_x) having variance p_k(f) at f = √((k_y/2H)² + (k_x/2W)²). No false
      wrap-around correlations between opposite borders (they cost ≈ 1 dB at the borders in
      4× super-resolution).
    * ``boundary="periodic"``: the image is a torus; diagonal in the unitary 2-D DFT.

    Args:
        schedule: 'linear', 'cosine' or a tensor of betas (the ᾱ_t the prior answers for).
        T: number of timesteps.
        params: optional replacement constants, same layout as :attr:`params` (used by the fitting
            script to evaluate a fresh fit); default: the shipped fit.

    C = 3 input uses the colour parameters, C = 1 the separately fitted luminance (gray) parameters;
    any other channel count raises :class:`dmir.errors.ShapeError`.
    """

    def __init__(self, schedule="linear", T: int = 1000, params=None, boundary: str = "reflect"):
        super().__init__(make_schedule(schedule, T))
        if boundary not in ("reflect", "periodic"):
            raise ParameterError(f"NaturalImagePrior: boundary must be 'reflect' or 'periodic', "
                                 f"got {boundary!r}")
        self.boundary = boundary
        self._params: dict[str, Any] = copy.deepcopy(_PARAMS if params is None else params)
        for key, C in (("rgb", 3), ("gray", 1)):
            d = self._params.get(key)
            if d is None:
                raise ParameterError(f"NaturalImagePrior: params must have a {key!r} entry")
            P = torch.as_tensor(d["P"], dtype=torch.float64)
            vecs = [torch.as_tensor(d[k], dtype=torch.float64).reshape(-1)
                    for k in ("mean", "a", "beta", "f0")]
            if P.shape != (C, C) or any(v.numel() != C for v in vecs):
                raise ShapeError(f"NaturalImagePrior: {key!r} params need P ({C}, {C}) and "
                                 f"mean/a/beta/f0 of length {C}")
            if not torch.allclose(P.T @ P, torch.eye(C, dtype=torch.float64), atol=1e-6):
                raise ParameterError(f"NaturalImagePrior: {key!r} P must be orthogonal")
            U, _, Vh = torch.linalg.svd(P)          # nearest exactly orthogonal matrix (the
            P = U @ Vh                               # literals carry 10 digits)
            d["P"] = tuple(tuple(float(v) for v in row) for row in P.tolist())
            if (vecs[1] <= 0).any() or (vecs[3] <= 0).any():
                raise ParameterError("NaturalImagePrior: a and f0 must be positive")
            self.register_buffer(f"{key}_P", P, persistent=False)
            for name, v in zip(("mean", "a", "beta", "f0"), vecs):
                self.register_buffer(f"{key}_{name}", v, persistent=False)

    @property
    def params(self) -> dict:
        """The constants in use: {'rgb': {...}, 'gray': {...}}, each with 'mean' (C,), 'P' (C×C,
        columns = decorrelated channels, orthonormalised to machine precision), 'a', 'beta', 'f0'
        (C,) as in the module docstring."""
        return copy.deepcopy(self._params)

    # -- internals -------------------------------------------------------------------------------

    def _channel_params(self, C: int):
        if C == 3:
            key = "rgb"
        elif C == 1:
            key = "gray"
        else:
            raise ShapeError(f"NaturalImagePrior: images must have 3 (RGB) or 1 (gray) channels, "
                             f"got {C}")
        return tuple(getattr(self, f"{key}_{n}") for n in ("mean", "P", "a", "beta", "f0"))

    def _psd(self, C: int, H: int, W: int, real: bool, device=None, dct: bool = False):
        """p_k on the fft2 grid (C, H, W), on the rfft2 half grid (C, H, W//2 + 1), or on the
        DCT-II grid (C, H, W) with frequencies k/2N (``dct=True``)."""
        _, _, a, beta, f0 = self._channel_params(C)
        device = a.device if device is None else device
        if dct:
            fy = (torch.arange(H, dtype=torch.float64, device=device) / (2 * H))[:, None]
            fx = (torch.arange(W, dtype=torch.float64, device=device) / (2 * W))[None, :]
        else:
            fy = torch.fft.fftfreq(H, dtype=torch.float64, device=device)[:, None]
            fx = (torch.fft.rfftfreq if real else torch.fft.fftfreq)(W, dtype=torch.float64,
                                                                     device=device)[None, :]
        f2 = fy ** 2 + fx ** 2
        a, beta, f0 = (v.to(device).reshape(-1, 1, 1) for v in (a, beta, f0))
        return a / (f2 + f0 ** 2) ** (beta / 2)

    def _filter(self, z: torch.Tensor, gain) -> torch.Tensor:
        """Multiply the decorrelated channels z (B, C, H, W) by ``gain(p)`` in the prior's basis."""
        B, C, H, W = z.shape
        if self.boundary == "reflect":
            p = self._psd(C, H, W, real=False, device=z.device, dct=True)
            return idct2(dct2(z) * gain(p))
        # p(fy, fx) = p(-fy, -fx), so the filtered half spectrum stays Hermitian (the fx = 0 and
        # Nyquist columns included) and rfft2 → filter → irfft2 equals the full complex FFT path.
        p = self._psd(C, H, W, real=True, device=z.device)
        return torch.fft.irfft2(torch.fft.rfft2(z, norm="ortho") * gain(p), s=(H, W), norm="ortho")

    @staticmethod
    def _check_image_shape(shape, what):
        if len(shape) != 3 or min(shape[1:]) < 1:
            raise ShapeError(f"NaturalImagePrior.{what}: shape must be (C, H, W) with "
                             f"C in {{1, 3}}, got {tuple(shape)}")

    # -- public ----------------------------------------------------------------------------------

    def spectrum(self, shape) -> torch.Tensor:
        """Per-coefficient variances p_k(f) of the decorrelated channels, float64 (C, H, W), in
        (model units)² per coefficient of the prior's orthonormal basis: the full
        ``torch.fft.fft2`` grid (fftfreq order) for the periodic boundary, the 2-D DCT-II grid for
        the reflective one. ``shape`` is (C, H, W), C in {1, 3}."""
        shape = tuple(int(s) for s in shape)
        self._check_image_shape(shape, "spectrum")
        C, H, W = shape
        return self._psd(C, H, W, real=False, dct=self.boundary == "reflect")

    def eps(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """Exact ε(x_t, t) for x_t (B, C, H, W) in model units, t an int or (B,) ints in -1..T-1."""
        if x_t.dim() != 4:
            raise ShapeError(f"NaturalImagePrior.eps: x_t must be (B, C, H, W), got "
                             f"{tuple(x_t.shape)}")
        B, C, H, W = x_t.shape
        mean, P, *_ = self._channel_params(C)
        dev = x_t.device
        mean, P = mean.to(dev), P.to(dev)
        x = x_t.double()
        a = _bcast(self.alpha_bar(t).to(dev), x)                     # scalar or (B, 1, 1, 1)
        r = x - a.sqrt() * mean.reshape(1, C, 1, 1)
        z = torch.einsum("ck,bchw->bkhw", P, r)                      # decorrelated channels
        z = self._filter(z, lambda p: 1.0 / (a * p + (1 - a)))
        e = (1 - a).sqrt() * torch.einsum("ck,bkhw->bchw", P, z)
        return e.to(x_t.dtype)

    def sample(self, n: int, shape=(3, 256, 256), generator=None,
               dtype=torch.float64) -> torch.Tensor:
        """n exact prior samples (n, C, H, W) in model units: white noise, FFT, scale by √p,
        inverse FFT, rotate by P, add m. Uses ``generator`` for the one draw of white noise."""
        shape = tuple(int(s) for s in shape)
        self._check_image_shape(shape, "sample")
        C, H, W = shape
        mean, P, *_ = self._channel_params(C)
        dev = mean.device if generator is None else generator.device
        w = torch.randn(n, C, H, W, generator=generator, dtype=torch.float64, device=dev)
        z = self._filter(w, torch.sqrt)
        x = torch.einsum("ck,bkhw->bchw", P.to(dev), z) + mean.to(dev).reshape(1, C, 1, 1)
        return x.to(dtype)
