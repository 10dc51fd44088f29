"""The no-model baselines of the paper tables: A⁺y and the releases' "Apy" images.

``apy(op, y, form)``:

* ``form="pinv"`` — the true pseudo-inverse A⁺y (``op.pinv``), dmir's A⁺y row;
* ``form="release"`` — what the DDNM-based releases (EquS ``guided_diffusion/diffusion.py``,
  DeqIR, DDNM) save as ``Apy`` images and the papers score as their "A†y" / "Baseline" rows:
  for deblurring y itself viewed as an image (the blurred measurement, not a deconvolution);
  for inpainting A⁺y plus A⁺A·1 − 1, i.e. the kept pixels with black (−1) holes; for
  colorization y repeated over the channels; otherwise A⁺y.
"""
from __future__ import annotations

import torch

from ..errors import ParameterError

__all__ = ["APY_FORMS", "apy", "release_apy"]

APY_FORMS = ("pinv", "release")


def release_apy(op, y: torch.Tensor) -> torch.Tensor:
    """The release's ``Apy`` image for operator ``op`` and measurement ``y`` (model domain)."""
    name = getattr(op, "name", "")
    B = y.shape[0]
    if name.startswith("deblur") and tuple(y.shape[1:]) == tuple(op.x_shape):
        return y.clone()
    if name == "colorization":
        C = op.x_shape[0]
        return y.reshape(B, 1, *op.x_shape[1:]).expand(B, C, *op.x_shape[1:]).clone()
    x = op.pinv(y)
    if name.startswith("inpainting"):
        ones = torch.ones((1, *op.x_shape), dtype=y.dtype, device=y.device)
        x = x + op.pinv(op.A(ones)) - 1          # holes (A⁺A·1 = 0) become −1: black
    return x


def apy(op, y: torch.Tensor, form: str = "pinv") -> torch.Tensor:
    """A no-model baseline: ``form`` "pinv" (A⁺y) or "release" (:func:`release_apy`)."""
    if form == "pinv":
        return op.pinv(y)
    if form == "release":
        return release_apy(op, y)
    raise ParameterError(f"apy: form must be one of {', '.join(APY_FORMS)}, got {form!r}")
