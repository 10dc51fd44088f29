"""Nonlinear forward models y = A(x): no Aᵀ, no A⁺, no SVD — only a differentiable A.

Methods that use only the gradient of a data term through A (DPS, DCDP) accept them; methods
built on Aᵀ, A⁺, the SVD or the range–null-space projection (DDNM, DDRM, ΠGDM, CDDB, DiffPIR,
DeqIR, ILVR, RePaint) refuse them with a :class:`~dmir.errors.ParameterError` naming the
operator and the methods that accept it (:func:`dmir.solvers.base.require_linear`).

Phase retrieval (DPS, Chung et al., ICLR 2023, Sec. 4 "Fourier phase retrieval"; release
DPS2022 ``guided_diffusion/measurements.py``, ``PhaseRetrievalOperator``; DCDP uses DPS's
protocol): per channel, zero-pad the image by ``pad`` pixels on every side and take the
magnitude of its centred orthonormal 2-D DFT,

    y = |F(P x)|,   F = fftshift ∘ DFT_ortho ∘ ifftshift,   P: zero padding,

with pad = int(oversample / 8 · H) (the release writes 256 for H: pad = 64 at 256×256 for its
``oversample: 2.0``), x in the model domain [-1, 1] as the release feeds it (no [0, 1]
mapping). y ≥ 0 has shape (C, H + 2 pad, W + 2 pad); ‖y‖ = ‖x‖ (Parseval). The padding is the
support constraint that makes the problem solvable; what remains ambiguous, per channel, is the
global sign (x → -x) and the twin image (x → x rotated by 180°, exactly, when the padding is
symmetric): :func:`align_ambiguities` picks the best of the four before a PSNR is taken.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ParameterError, ShapeError

#: methods that accept nonlinear operators (keep in sync with the solvers' ``accepts_nonlinear``)
NONLINEAR_METHODS = ("dps", "dcdp")
#: where the magnitude is taken: 'model' ([-1, 1], the DPS release) or 'unit' ((x + 1)/2)
DOMAINS = ("model", "unit")


class NonlinearOperator(nn.Module):
    """Base class of nonlinear operators: ``A`` (differentiable) and the shapes; ``At``,
    ``pinv`` and ``project`` raise :class:`ParameterError` naming what accepts the operator."""

    name: str = "nonlinear"
    linear = False
    has_svd = False

    def __init__(self, x_shape, y_shape):
        super().__init__()
        self.x_shape = tuple(int(s) for s in x_shape)
        self.y_shape = tuple(int(s) for s in y_shape)
        self.y_dim = 1
        for s in self.y_shape:
            self.y_dim *= s

    def A(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != len(self.x_shape) + 1 \
                or tuple(x.shape[1:]) != self.x_shape:
            raise ShapeError(f"x must have shape (B, {', '.join(map(str, self.x_shape))}) for "
                             f"operator {self.name}, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)}")
        return self._A(x)

    def forward(self, x):
        return self.A(x)

    def _A(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def _refuse(self, what):
        raise ParameterError(f"operator '{self.name}' is nonlinear: it has no {what}; use a "
                             f"method that needs only a differentiable A "
                             f"({', '.join(NONLINEAR_METHODS)})")

    def At(self, y):
        self._refuse("transpose Aᵀ")

    def pinv(self, y):
        self._refuse("pseudo-inverse A⁺")

    def project(self, x, y):
        self._refuse("range–null-space projection")


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D DFT over the last two axes (fastMRI's ``fft2c``, DPS's
    ``fft2_m``): fftshift(DFT_ortho(ifftshift(x)))."""
    d = (-2, -1)
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=d), norm="ortho"), dim=d)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    d = (-2, -1)
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=d), norm="ortho"),
                              dim=d)


class PhaseRetrieval(NonlinearOperator):
    """Fourier phase retrieval with oversampling: y = |fft2c(pad(x))| per channel.

    Args:
        shape: (C, H, W) of the images.
        oversample: padding pad = int(oversample/8 · H) on every side (DPS release: 2.0).
        pad: the padding in pixels, instead of ``oversample``.
    """

    name = "phase_retrieval"

    def __init__(self, shape, oversample: float = 2.0, pad: int | None = None,
                 domain: str = "model"):
        C, H, W = (int(s) for s in shape)
        if domain not in DOMAINS:
            raise ParameterError(f"phase_retrieval: domain must be one of {', '.join(DOMAINS)}, "
                                 f"got {domain!r}")
        self.domain = domain
        if pad is None:
            try:
                oversample = float(oversample)
            except (TypeError, ValueError):
                raise ParameterError(f"phase_retrieval: oversample must be a number ≥ 0, got "
                                     f"{oversample!r}") from None
            if not oversample >= 0:
                raise ParameterError(f"phase_retrieval: oversample must be ≥ 0, got "
                                     f"{oversample}")
            pad = int(oversample / 8.0 * H)
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise ParameterError(f"phase_retrieval: pad must be an integer ≥ 0, got {pad!r}")
        self.pad = pad
        super().__init__((C, H, W), (C, H + 2 * pad, W + 2 * pad))

    def _A(self, x):
        p = self.pad
        if self.domain == "unit":
            x = 0.5 * x + 0.5
        return fft2c(nn.functional.pad(x, (p, p, p, p))).abs()

    def random_phase_baseline(self, y: torch.Tensor, generator=None) -> torch.Tensor:
        """The baseline of the phase-retrieval literature: the measured magnitude with uniformly
        random phases, inverse-transformed, real part, cropped to the image, clipped to [-1, 1]."""
        dev = generator.device if generator is not None else torch.device("cpu")
        phase = 2 * torch.pi * torch.rand(y.shape, generator=generator, dtype=y.dtype,
                                          device=dev).to(y.device)
        img = ifft2c(torch.polar(y, phase)).real
        p = self.pad
        H, W = self.x_shape[1:]
        img = img[..., p:p + H, p:p + W]
        return (2 * img - 1 if self.domain == "unit" else img).clamp(-1, 1)


def align_ambiguities(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """x with each channel replaced by the one of {x, -x, rot180(x), -rot180(x)} closest to
    ``ref`` (mean squared error): the ambiguities of Fourier phase retrieval with a symmetric
    support. (B, C, H, W) → same."""
    cands = torch.stack([x, -x, x.flip(-2, -1), -x.flip(-2, -1)])          # (4, B, C, H, W)
    err = (cands - ref.unsqueeze(0)).pow(2).mean((-2, -1))                # (4, B, C)
    best = err.argmin(0)                                                  # (B, C)
    idx = best[None, :, :, None, None].expand(1, *x.shape)
    return cands.gather(0, idx)[0]


class NonlinearBlur(NonlinearOperator):
    """The nonlinear deblurring task of DPS (release ``NonlinearBlurOperator``) and DCDP:
    y = clip(2 G((x + 1)/2, k) - 1, -1, 1), G the blur network's ``adapt_kernel`` (the
    bkse ``KernelWizard`` with the ``GOPRO_wVAE.pth`` weights:
    :func:`dmir.models.nets.kernel_wizard.load_kernel_wizard`) and k a kernel code of N(0, 1.2²)
    entries, shape (kernel_dim, H/128, W/128).

    Deviation: the release draws a new code at every call of its forward (so y and each
    gradient step see different blurs); here the code is drawn once, from ``seed``, or given
    as ``code`` — one fixed blur, which the task's y = A(x) presupposes.

    Args:
        net: the blur network (an object with ``adapt_kernel(x, k)`` and ``kernel_dim``).
        shape: (C, H, W), H and W multiples of 128.
        code: the kernel code (1, kernel_dim, H/128, W/128); default: drawn from ``seed``.
        seed: seed of the drawn code.
    """

    name = "nonlinear_blur"

    def __init__(self, net, shape, code: torch.Tensor | None = None, seed: int = 0):
        C, H, W = (int(s) for s in shape)
        if H % 128 or W % 128:
            raise ShapeError(f"nonlinear_blur: the blur network needs H and W multiples of "
                             f"128, got {H}x{W}")
        super().__init__((C, H, W), (C, H, W))
        self.net = net
        for p in net.parameters():
            p.requires_grad_(False)
        want = (1, int(net.kernel_dim), H // 128, W // 128)
        if code is None:
            g = torch.Generator().manual_seed(int(seed))
            code = 1.2 * torch.randn(want, generator=g)
        if tuple(code.shape) != want:
            raise ShapeError(f"nonlinear_blur: code must have shape {want}, got "
                             f"{tuple(code.shape)}")
        self.register_buffer("code", code.float())

    def _A(self, x):
        k = self.code.to(x.dtype).expand(x.shape[0], *self.code.shape[1:])
        return (2 * self.net.adapt_kernel((x + 1) / 2, k) - 1).clamp(-1, 1)
