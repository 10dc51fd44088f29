"""The DPS / DCDP measurement protocol: kernels, blur with reflected borders, MATLAB-style
bicubic downsampling, box and random inpainting masks, and the noise level.

What the DPS reference code (``util/img_utils.py``, ``util/resizer.py``,
``guided_diffusion/measurements.py``, configs) does, and what this module reproduces:

* **Blur** (``deblur_dps_gauss``, ``deblur_dps_motion``): ``nn.ReflectionPad2d(k // 2)``
  followed by a *valid* depthwise ``conv2d`` (a cross-correlation, the kernel is not flipped)
  with a 61×61 kernel. Output size = input size. The Gaussian kernel is
  ``scipy.ndimage.gaussian_filter`` of a centred unit impulse with σ = 3 (scipy truncates at
  4σ, so only the central 25×25 taps are nonzero). The motion kernel is the ``motionblur``
  package's ``Kernel(size=(61, 61), intensity=0.5).kernelMatrix``; :func:`motion_kernel`
  repeats its algorithm with a private ``numpy.random.RandomState(seed)`` making the same draws
  in the same order; ``motion_kernel(seed=s)`` is the *second* kernel drawn after
  ``np.random.seed(s)`` — the one the DPS/DCDP ``MotionBlurOperator`` uses (it draws twice).
  The kernel is drawn once per run (per operator), not per image.
  A is exact, Aᵀ is exact (transposed convolution, then the reflected borders folded back onto
  the interior). torch's reflection is the *whole-sample* symmetric extension (the edge sample
  is not repeated), so for a kernel symmetric along each axis (the Gaussian) A is diagonalised
  by the DCT-I and ``pinv`` is a spectral inverse in O(N log N), truncated where the
  eigenvalue is below ``rcond`` = 1e-2 of the largest. For other kernels (motion) ``pinv`` runs
  conjugate gradients on the normal equations AᵀA x = Aᵀy from x = 0 (``cg_iters`` iterations
  at most, relative residual ``cg_tol``), an *early-stopped, regularised* inverse for the
  strongly smoothing 61×61 kernels. Both are regularised inverses: the exact A⁺ of these blurs
  amplifies noise by up to 1e5. DPS and DCDP only use A and Aᵀ.
* **Super-resolution** (``sr_matlab_bicubic``): DPS's ``Resizer`` (after Shocher's MATLAB
  ``imresize`` port) with scale 1/s: Keys cubic (a = -0.5) stretched by s for antialiasing
  (kernel ``(1/s)·cubic(x/s)``, width 4s), weights normalised per output pixel, symmetric
  (mirror) border handling, output size ceil(n/s). It is separable: y = M_h X M_wᵀ per channel
  with an exact SVD (:class:`~dmir.operators.separable.SeparableSVD`).
* **Inpainting masks** (:func:`mask_box`, :func:`mask_random`, registered as
  ``inpainting_box`` / ``inpainting_random``): DPS's ``mask_generator``. Box: a hole of
  ``box``×``box`` pixels (config ``mask_len_range = (128, 129)``, so 128) at a random top-left
  corner t ∈ [margin, H − margin − box), l likewise, margin 16. Random: a fraction ``missing``
  of the pixels, the same for all channels, dropped without replacement. DPS draws the
  fraction from U(0.3, 0.7) per image (its config ``mask_prob_range``); DCDP's protocol fixes
  it at 0.7. ``missing`` accepts a number (fixed fraction) or a (low, high) range (DPS).
  Both use ``numpy.random.RandomState(seed)`` with the reference's draw order.
* **Noise**: DPS/DCDP add Gaussian noise of σ = 0.05 to measurements in [-1, 1]. dmir takes
  σ_y in [0, 1] pixel units, so the protocol level is ``DPS_SIGMA_Y = sigma_from_model(0.05)
  = 0.025``; the conversion is :func:`dmir.operators.noise.sigma_from_model` (the one place).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ParameterError, ShapeError
from .base import LinearOperator, cg_pinv
from .dct import dct1_2d, idct1_2d
from .noise import sigma_from_model

__all__ = [
    "DPS_SIGMA_MODEL", "DPS_SIGMA_Y", "gaussian_kernel", "motion_kernel", "ReflectBlur",
    "matlab_resize_matrix", "mask_box", "mask_random",
]

#: DPS/DCDP measurement noise, σ in the [-1, 1] model domain (their configs: ``sigma: 0.05``)
DPS_SIGMA_MODEL = 0.05
#: the same noise in dmir's [0, 1] pixel units (0.025)
DPS_SIGMA_Y = sigma_from_model(DPS_SIGMA_MODEL)


# --------------------------------------------------------------------------------- kernels
def _gaussian_taps(std: float, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian: radius ``int(truncate·σ + 0.5)``, taps exp(-x²/2σ²) / Σ."""
    r = int(truncate * std + 0.5)
    x = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / std) ** 2)
    return w / w.sum()


def _correlate1d_reflect(a: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    """``scipy.ndimage.correlate1d(a, w, axis, mode='reflect')``: half-sample symmetric
    borders (``numpy.pad`` 'symmetric', which repeats the reflection for wide kernels)."""
    r = len(w) // 2
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r, r)
    p = np.pad(a, pad, mode="symmetric")
    n = a.shape[axis]
    out = np.zeros_like(a)
    for j, wj in enumerate(w):
        out += wj * np.take(p, np.arange(j, j + n), axis=axis)
    return out


def gaussian_kernel(size: int = 61, std: float = 3.0) -> np.ndarray:
    """DPS's Gaussian blur kernel: ``scipy.ndimage.gaussian_filter`` of a centred impulse.

    Computed here with numpy (the same separable, 4σ-truncated, sum-normalised taps and
    'reflect' borders as scipy; tests check it against scipy)."""
    size = int(size)
    if size < 1 or size % 2 == 0:
        raise ParameterError(f"kernel size must be a positive odd integer, got {size}")
    if not (float(std) > 0):
        raise ParameterError(f"std must be positive, got {std}")
    n = np.zeros((size, size))
    n[size // 2, size // 2] = 1.0
    w = _gaussian_taps(float(std))
    return _correlate1d_reflect(_correlate1d_reflect(n, w, 0), w, 1)


def motion_kernel(size: int = 61, intensity: float = 0.5, seed: int = 0,
                  draw: int = 2) -> np.ndarray:
    """The ``motionblur`` package's ``Kernel((size, size), intensity).kernelMatrix``, seeded.

    The ``draw``-th kernel drawn from ``numpy.random.RandomState(seed)``. The default 2 is what
    the DPS/DCDP operator uses: ``MotionBlurOperator.__init__`` builds a ``Blurkernel`` whose
    ``weights_init`` draws one ``Kernel``, then draws a second ``Kernel`` itself and loads
    *that* one into the convolution — both from the global numpy state seeded once per run
    (``np.random.seed(0)`` in DCDP's ``dcdp.py``), so one kernel serves every image of a run.

    Each draw uses the package's algorithm and random draws, in the same order, from the
    private ``RandomState`` instead of numpy's global state:

    1. on a 2×-supersampled canvas of diagonal D, a path length L = 0.75·D·(U(0,1) + U(0, i²));
       step lengths Beta(1, 30)·(1 − i + 0.1)·D (steps ≥ L rejected) until they sum to L;
    2. angles: a maximum a = U(0, iπ), a sign-flip probability Beta(2, 20), a first angle
       U(−a, a), then |angle| ~ Triangular(0, i·a, a + 0.1) keeping (or, with the flip
       probability, flipping) the previous sign;
    3. path = cumulative sum of the steps as complex increments, centred on its mean, rotated
       by U(0, π), moved to the canvas centre;
    4. drawn with PIL as a white polyline of width int(D/150) on a black RGB canvas, blurred
       with ``GaussianBlur(int(0.01·D))``, Lanczos-resized to size×size, converted to L;
    5. float32, divided by its sum.

    Returns a float64 (size × size) array (the float32 values), nonnegative, summing to 1.
    Sizes below 54 give an empty drawing (line width int(D/150) = 0), as in the package (whose
    kernel is then NaN); they raise :class:`~dmir.errors.ParameterError` here.
    """
    size = int(size)
    if size < 1:
        raise ParameterError(f"kernel size must be a positive integer, got {size}")
    intensity = float(intensity)
    if not (0.0 <= intensity <= 1.0):
        raise ParameterError(f"intensity must be in [0, 1], got {intensity}")
    if isinstance(draw, bool) or not isinstance(draw, int) or draw < 1:
        raise ParameterError(f"draw must be a positive integer (the n-th kernel of the "
                             f"seed's stream), got {draw!r}")
    rng = np.random.RandomState(int(seed))
    for _ in range(draw - 1):
        _motion_draw(rng, size, intensity)
    return _motion_draw(rng, size, intensity)


def _motion_draw(rng, size: int, intensity: float) -> np.ndarray:
    """One ``Kernel(...).kernelMatrix`` from ``rng`` (advances it as the package does)."""
    from PIL import Image, ImageDraw, ImageFilter

    eps = 0.1
    big = 2 * size
    diag = (big ** 2 + big ** 2) ** 0.5

    # steps
    max_len = 0.75 * diag * (rng.uniform() + rng.uniform(0, intensity ** 2))
    steps_: list[float] = []
    while sum(steps_) < max_len:
        step = rng.beta(1, 30) * (1 - intensity + eps) * diag
        if step < max_len:
            steps_.append(step)
    steps = np.asarray(steps_)
    # angles
    max_angle = rng.uniform(0, intensity * math.pi)
    jitter = rng.beta(2, 20)
    angles_: list[float] = [rng.uniform(low=-max_angle, high=max_angle)]
    while len(angles_) < len(steps):
        a = rng.triangular(0, intensity * max_angle, max_angle + eps)
        if rng.uniform() < jitter:
            a *= -np.sign(angles_[-1])
        else:
            a *= np.sign(angles_[-1])
        angles_.append(a)
    angles = np.asarray(angles_)
    # path
    path = np.cumsum(steps * np.exp(1j * angles))
    path = path - sum(path) / len(steps)
    path = path * np.exp(1j * rng.uniform(0, math.pi))
    path = path + (big + 1j * big) / 2
    # raster
    img = Image.new("RGB", (big, big))
    ImageDraw.Draw(img).line(xy=[(p.real, p.imag) for p in path], width=int(diag / 150))
    img = img.filter(ImageFilter.GaussianBlur(radius=int(diag * 0.01)))
    img = img.resize((size, size), resample=Image.Resampling.LANCZOS).convert("L")
    k = np.asarray(img, dtype=np.float32).copy()
    if not k.sum() > 0:
        # the package draws the path with width int(D/150), 0 (nothing) below size 54
        raise ParameterError(f"motion kernel of size {size} is empty: the motionblur "
                             f"algorithm draws its path {int(diag / 150)} px wide (size ≥ 54 "
                             f"needed)")
    k /= np.sum(k)
    return k.astype(np.float64)


# --------------------------------------------------------------------------------- blur
def _fold_reflect(z: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """Adjoint of ``F.pad(x, (pw, pw, ph, ph), mode='reflect')`` (reflection without the edge)."""
    if ph:
        H = z.shape[-2] - 2 * ph
        out = z[..., ph:ph + H, :].clone()
        out[..., 1:ph + 1, :] += z[..., :ph, :].flip(-2)
        out[..., H - 1 - ph:H - 1, :] += z[..., ph + H:, :].flip(-2)
        z = out
    if pw:
        W = z.shape[-1] - 2 * pw
        out = z[..., pw:pw + W].clone()
        out[..., 1:pw + 1] += z[..., :pw].flip(-1)
        out[..., W - 1 - pw:W - 1] += z[..., pw + W:].flip(-1)
        z = out
    return z


PINV_METHODS = ("auto", "dct", "cg")


def _is_axis_symmetric(k: np.ndarray) -> bool:
    """The kernel equals its mirror image along each axis (to rounding)."""
    tol = 1e-12 * float(np.abs(k).max())
    return bool(np.abs(k - k[::-1, :]).max() <= tol and np.abs(k - k[:, ::-1]).max() <= tol)


def _folded(k: np.ndarray, P: int, Q: int) -> np.ndarray:
    """The kernel's taps at offsets (s − kh//2, t − kw//2) wrapped onto a P×Q periodic grid."""
    kh, kw = k.shape
    g = np.zeros((P, Q))
    si = (np.arange(kh) - kh // 2) % P
    ti = (np.arange(kw) - kw // 2) % Q
    np.add.at(g, (si[:, None], ti[None, :]), k)
    return g


class ReflectBlur(LinearOperator):
    """y = k ⋆ reflect_pad(x) (valid cross-correlation, per channel): DPS's ``Blurkernel``.

    ``kernel``: a 2-D array with odd sides (kh, kw); the image needs H > kh // 2 and
    W > kw // 2 (torch's reflection padding). A and Aᵀ are exact. ``pinv`` (``pinv_method``):

    * ``"dct"`` (the default for a kernel symmetric along each axis, e.g. the DPS Gaussian):
      torch's reflection is the whole-sample symmetric extension, so A = T⁻¹ diag(λ) T with T
      the DCT-I (:mod:`dmir.operators.dct`) and λ the DCT-I of the kernel folded onto the
      (2H − 2)×(2W − 2) period. A⁺y = T⁻¹ (λ⁺ · T y), with λ⁺ = 1/λ where
      |λ| > ``rcond``·max|λ| and 0 elsewhere: the exact inverse when no eigenvalue is cut
      (O(N log N), four real FFTs), and a truncated spectral inverse otherwise. The 61×61
      σ = 3 blur has 88% of its eigenvalues below 1e-3 (some negative, down to −2e-5): its
      exact inverse is pure noise amplification, so the default ``rcond`` cuts them. (T is not
      orthogonal — end samples weigh half — so on cut components this is the inverse that is
      orthogonal in that weighted inner product, not the Moore–Penrose one; the two agree
      wherever nothing is cut.)
    * ``"cg"`` (the default for other kernels, e.g. motion blur): conjugate gradients on the
      normal equations AᵀA x = Aᵀy from x = 0, at most ``cg_iters`` iterations, stopping at
      relative residual ``cg_tol``: an early-stopped, regularised inverse for the 61×61 kernels.
      Preconditioning it with a circulant (FFT) approximation was measured and rejected: the
      reflected borders make the circulant model wrong in a band a kernel radius wide, the
      regularised inverse amplifies that error, and on the DPS motion blur every variant tried
      (torus, symmetric-extension and R C⁻¹E preconditioners, Tikhonov shift 1e-4…1e-2) gave a
      worse A⁺y (PSNR) than 100 plain iterations or no saving in time
      (``benchmarks/operators.py`` notes). The kernel spectra are cached, so an iteration
      costs four FFTs.

    Each batch element stops on its own criterion, so a batched call gives the same result as
    one call per element. ``pinv_kind`` says which of the two ran.
    """


    def __init__(self, shape, kernel, cg_iters: int = 100, cg_tol: float = 1e-6,
                 name: str = "deblur_reflect", pinv_method: str = "auto",
                 rcond: float = 1e-2):
        C, H, W = shape
        k_np = np.asarray(kernel, dtype=np.float64)
        k = torch.as_tensor(k_np)
        if k.dim() != 2 or k.numel() == 0 or not torch.isfinite(k).all():
            raise ParameterError(f"{name}: kernel must be a finite 2-D array")
        kh, kw = k.shape
        if kh % 2 == 0 or kw % 2 == 0:
            raise ParameterError(f"{name}: kernel sides must be odd, got {kh}x{kw}")
        if H <= kh // 2 or W <= kw // 2:
            raise ShapeError(f"{name}: image {H}x{W} is too small for reflection padding of "
                             f"a {kh}x{kw} kernel (needs H > {kh // 2}, W > {kw // 2})")
        if pinv_method not in PINV_METHODS:
            raise ParameterError(f"{name}: pinv_method must be one of {PINV_METHODS}, got "
                                 f"{pinv_method!r}")
        if not (0.0 <= float(rcond) < 1.0):
            raise ParameterError(f"{name}: rcond must be in [0, 1), got {rcond!r}")
        symmetric = _is_axis_symmetric(k_np) and H >= 2 and W >= 2
        if pinv_method == "auto":
            pinv_method = "dct" if symmetric else "cg"
        elif pinv_method == "dct" and not symmetric:
            raise ParameterError(f"{name}: pinv_method='dct' needs a kernel symmetric along "
                                 f"each axis and an image of at least 2x2; use 'cg'")
        super().__init__(shape, shape)
        self.name = name
        self.pinv_kind = pinv_method
        self.cg_iters = int(cg_iters)
        self.cg_tol = float(cg_tol)
        self.rcond = float(rcond)
        self._dct_cut = 0
        self.ph, self.pw = kh // 2, kw // 2
        self.register_buffer("kernel", k.to(torch.float32))
        self.register_buffer("weight", k.to(torch.float32).expand(C, 1, kh, kw).contiguous())
        if pinv_method == "dct":
            # the kernel is even on the (2H−2)×(2W−2) torus, so its DFT is real: λ
            # (of the float32 kernel that A applies; the spectra are stored in float32 like it)
            k32 = k_np.astype(np.float32).astype(np.float64)
            lam = np.fft.fft2(_folded(k32, 2 * H - 2, 2 * W - 2)).real[:H, :W]
            cut = np.abs(lam) <= self.rcond * np.abs(lam).max()
            inv = np.where(cut, 0.0, 1.0 / np.where(cut, 1.0, lam))
            self._dct_cut = int(cut.sum())
            self.register_buffer("dct_eig", torch.from_numpy(lam).to(torch.float32))
            self.register_buffer("dct_inv", torch.from_numpy(inv).to(torch.float32))
        self._spectra: dict[tuple, torch.Tensor] = {}

    @property
    def exact_pinv(self) -> bool:
        """Only the DCT inverse with no eigenvalue cut is the Moore–Penrose pseudo-inverse: a
        truncated spectrum (the DPS Gaussian: A A⁺ A = A only to ~1e-2) and early-stopped CG
        (the DPS motion blur: A⁺ A A⁺ off by tens of percent) are regularised inverses."""
        return self.pinv_kind == "dct" and self._dct_cut == 0

    @property
    def pinv_note(self) -> str:
        if self.pinv_kind == "dct":
            return (f"DCT-I spectral inverse, {self._dct_cut} eigenvalue(s) below rcond "
                    f"{self.rcond:g}·max cut" if self._dct_cut else "DCT-I spectral inverse")
        return (f"conjugate gradients stopped after at most {self.cg_iters} iterations "
                f"(relative residual {self.cg_tol:g}): a regularised inverse")

    # Large kernels go through the FFT (same linear maps, no wrap-around: the transform size
    # (H + kh − 1) × (W + kw − 1) holds the full linear convolution), small ones through conv2d.
    def _use_fft(self):
        return self.kernel.numel() > 81

    def _spectrum(self, size, dtype, flip):
        # rfft2 of the (flipped) kernel at transform size ``size``, cached per size/dtype/device
        # (not from inside inference mode: such tensors could not be used by autograd later)
        key = (tuple(size), dtype, self.kernel.device, flip)
        K = self._spectra.get(key)
        if K is None:
            k = self.kernel.to(dtype)
            K = torch.fft.rfft2(k.flip(-2, -1) if flip else k, s=tuple(size))
            if torch.is_inference_mode_enabled():
                return K
            if len(self._spectra) > 8:
                self._spectra.clear()
            self._spectra[key] = K
        return K

    def _A(self, x):
        xp = F.pad(x, (self.pw, self.pw, self.ph, self.ph), mode="reflect")
        if not self._use_fft():
            return F.conv2d(xp, self.weight, groups=self.x_shape[0])
        # valid cross-correlation = full convolution with the flipped kernel, cropped
        kh, kw = self.kernel.shape
        size = xp.shape[-2:]
        z = torch.fft.irfft2(torch.fft.rfft2(xp) * self._spectrum(size, xp.dtype, True), s=size)
        return z[..., kh - 1:, kw - 1:]

    def _At(self, y):
        if not self._use_fft():
            z = F.conv_transpose2d(y, self.weight, groups=self.x_shape[0])
        else:
            # transposed valid correlation = full convolution with the kernel
            kh, kw = self.kernel.shape
            size = (y.shape[-2] + kh - 1, y.shape[-1] + kw - 1)
            z = torch.fft.irfft2(torch.fft.rfft2(y, s=size)
                                 * self._spectrum(size, y.dtype, False), s=size)
        return _fold_reflect(z, self.ph, self.pw)

    def _pinv(self, y):
        if self.pinv_kind == "dct":
            return idct1_2d(dct1_2d(y) * self.dct_inv.to(y.dtype))
        # CG on AᵀA x = Aᵀy from x = 0 (iterates stay in range(Aᵀ): the minimum-norm solution);
        # each batch element stops on its own criterion, so batching does not change results
        return cg_pinv(self._A, self._At, y, self.cg_iters, self.cg_tol)


# --------------------------------------------------------------------------------- resize
def _cubic(x):
    ax = np.abs(x)
    return ((1.5 * ax ** 3 - 2.5 * ax ** 2 + 1) * (ax <= 1)
            + (-0.5 * ax ** 3 + 2.5 * ax ** 2 - 4 * ax + 2) * ((1 < ax) & (ax <= 2)))


def matlab_resize_matrix(n: int, scale: float, out: int | None = None,
                         antialias: bool = True) -> np.ndarray:
    """(out × n) matrix of DPS's ``Resizer`` (MATLAB ``imresize``, bicubic) along one axis.

    ``scale`` is the resize factor (1/4 for ×4 downsampling); ``out`` defaults to
    ceil(n·scale). Antialiasing (downscaling only) stretches the cubic to (scale)·cubic(scale·x)
    with width 4/scale; each row is normalised to sum 1; taps outside [0, n) are mirrored
    (symmetric padding: … 1 0 | 0 1 … n−1 | n−1 n−2 …).
    """
    n = int(n)
    scale = float(scale)
    if out is None:
        out = int(math.ceil(n * scale))
    antialias = bool(antialias) and scale < 1
    if antialias:
        def kern(x):
            return scale * _cubic(scale * x)
        width = 4.0 / scale
    else:
        kern, width = _cubic, 4.0
    oc = np.arange(1, out + 1) - (out - n * scale) / 2
    match = oc / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(match - width / 2)
    taps = int(np.ceil(width) + 2)
    fov = (left[:, None] + np.arange(taps)[None, :] - 1).astype(np.int64)
    w = kern(match[:, None] - fov - 1)
    s = w.sum(1, keepdims=True)
    s[s == 0] = 1.0
    w = w / s
    mirror = np.concatenate([np.arange(n), np.arange(n - 1, -1, -1)])
    cols = mirror[np.mod(fov, 2 * n)]
    M = np.zeros((out, n))
    np.add.at(M, (np.repeat(np.arange(out), taps), cols.ravel()), w.ravel())
    return M


# --------------------------------------------------------------------------------- masks
def _hw(size) -> tuple[int, int]:
    """An int (square) or an (H, W) pair."""
    if isinstance(size, (tuple, list, np.ndarray)):
        return int(size[0]), int(size[1])
    return int(size), int(size)


def mask_box(size=256, box: int = 128, margin: int = 16, seed: int = 0,
             box_range=None) -> torch.Tensor:
    """DPS's box inpainting mask, (H, W) float32, 1 = kept, 0 inside the hole.

    ``size``: int or (H, W). The hole is h×w with h, w drawn from ``randint(*box_range)``
    (default (box, box + 1), i.e. exactly ``box``, as DPS's config (128, 129)); its top-left
    corner t = randint(margin, H − margin − h), l = randint(margin, W − margin − w), all from
    ``RandomState(seed)`` in this order.
    """
    H, W = _hw(size)
    lo, hi = (int(box), int(box) + 1) if box_range is None else (int(box_range[0]),
                                                                   int(box_range[1]))
    margin = int(margin)
    if lo < 1 or hi <= lo:
        raise ParameterError(f"mask_box: box size range must satisfy 1 ≤ low < high, got "
                             f"({lo}, {hi})")
    if H - margin - (hi - 1) <= margin or W - margin - (hi - 1) <= margin:
        raise ShapeError(f"mask_box: a {hi - 1}-pixel box with margin {margin} does not fit "
                         f"in a {H}x{W} image")
    rng = np.random.RandomState(int(seed))
    h = rng.randint(lo, hi)
    w = rng.randint(lo, hi)
    t = rng.randint(margin, H - margin - h)
    left = rng.randint(margin, W - margin - w)
    mask = torch.ones(H, W)
    mask[t:t + h, left:left + w] = 0
    return mask


def mask_random(size=256, missing=0.7, seed: int = 0) -> torch.Tensor:
    """DPS's random-pixel inpainting mask, (H, W) float32, 1 = kept.

    ``missing``: the fraction of pixels dropped, a number or a (low, high) range drawn
    uniformly per call (DPS: (0.3, 0.7); DCDP: 0.7). int(H·W·fraction) pixels are dropped,
    chosen without replacement (``RandomState(seed).choice``).
    """
    H, W = _hw(size)
    if isinstance(missing, (tuple, list, np.ndarray)):
        lo, hi = float(missing[0]), float(missing[1])
    else:
        lo = hi = float(missing)
    if not (0.0 <= lo <= hi < 1.0):
        raise ParameterError(f"mask_random: missing must be a fraction in [0, 1) or a range "
                             f"(low ≤ high), got {missing!r}")
    rng = np.random.RandomState(int(seed))
    prob = rng.uniform(lo, hi)
    total = H * W
    drop = rng.choice(total, int(total * prob), replace=False)
    mask = torch.ones(total)
    mask[torch.from_numpy(drop)] = 0
    return mask.reshape(H, W)
