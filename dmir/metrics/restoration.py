"""Restoration-specific measurements: measurement consistency (Cons), NFE and wall time.

**Cons** (DDNM's colorization table): the distance between the measurement of the result and the
measurement, ‖A x̂ − y‖. We use the **ℓ1 norm** — DDNM reports Cons for colorization as
‖A x₀ − y‖₁ — computed per image in **[0, 1] pixel units** (the model-domain residual halved:
for a linear A, A(2u − 1) − A(2v − 1) = 2 (A u − A v)), summed over all measurement entries,
then averaged over the batch. ℓ1 rather than ℓ2 because it is the published definition and
because it weighs many small violations (8-bit rounding, clipping to [0, 1]) and a few large ones
(a solver that ignores y in some region) by their total, not by their peak; ``norm="l2"`` gives
‖·‖₂ and ``per_entry=True`` divides by the number of measurement entries (a mean absolute /
RMS error that does not grow with the image size). The result is clamped to [-1, 1] first
(``clamp=True``: what a written file holds) and, with ``uint8=True``, rounded to 8-bit levels.

**NFE / wall time**: :class:`NFECounter` counts the network evaluations a solver makes by
wrapping ``model.eps`` while it is active (calls, and images evaluated: a DeqIR-style batch over
timesteps counts as many evaluations per image as it has states); :func:`timed` runs a callable
and returns its result with the elapsed seconds (synchronising CUDA around it).
"""
from __future__ import annotations

import time

import torch

from ..errors import ParameterError, ShapeError

__all__ = ["consistency", "NFECounter", "timed"]


def consistency(x_hat: torch.Tensor, y: torch.Tensor, op, norm: str = "l1",
                reduction: str = "mean", per_entry: bool = False, clamp: bool = True,
                uint8: bool = False):
    """‖A x̂ − y‖ (Cons) in [0, 1] pixel units; ``x_hat`` (B, C, H, W) and ``y`` (B, *y_shape)
    in the model domain [-1, 1]; ``op`` an operator (``op.A``) or a callable A.

    ``reduction="mean"`` → float (mean over the batch), ``"none"`` → (B,) tensor.
    """
    if norm not in ("l1", "l2"):
        raise ParameterError(f"norm must be 'l1' or 'l2', got {norm!r}")
    A = op.A if hasattr(op, "A") else op
    x = x_hat.clamp(-1, 1) if clamp else x_hat
    if uint8:
        x = torch.round((x + 1) / 2 * 255) / 255 * 2 - 1
    with torch.no_grad():
        Ax = A(x)
    if Ax.shape != y.shape:
        raise ShapeError(f"A(x_hat) has shape {tuple(Ax.shape)} but y has {tuple(y.shape)}")
    r = ((Ax - y) / 2).flatten(1).to(torch.float64)
    v = r.abs().sum(1) if norm == "l1" else r.pow(2).sum(1).sqrt()
    if per_entry:
        v = v / r.shape[1] if norm == "l1" else v / r.shape[1] ** 0.5
    if reduction == "mean":
        return float(v.mean())
    if reduction == "none":
        return v
    raise ParameterError(f"reduction must be 'mean' or 'none', got {reduction!r}")


class NFECounter:
    """Counts ``model.eps`` calls while active::

        with NFECounter(model) as c:
            x = solver.sample(y)
        c.calls, c.images, c.per_image(len(y))

    ``calls``: network invocations; ``images``: batch elements evaluated in total;
    ``per_image(n)`` = images / n, the NFE per restored image.
    """

    def __init__(self, model):
        self.model = model
        self.calls = 0
        self.images = 0
        self._had_attr = False

    def __enter__(self):
        inner = self.model.eps
        self._had_attr = "eps" in vars(self.model)
        self._saved = vars(self.model).get("eps")

        def eps(x_t, t, *args, **kwargs):
            self.calls += 1
            self.images += int(x_t.shape[0])
            return inner(x_t, t, *args, **kwargs)

        self.model.eps = eps
        return self

    def __exit__(self, *exc):
        if self._had_attr:
            self.model.eps = self._saved
        else:
            del self.model.eps
        return False

    def per_image(self, n: int) -> float:
        return self.images / n


def timed(fn, *args, **kwargs):
    """(fn(*args, **kwargs), seconds), with CUDA synchronised before and after."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    sync()
    return out, time.perf_counter() - t0
