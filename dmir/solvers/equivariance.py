"""EquS: equivariant dual-trajectory sampling (Wu et al., arXiv 2511.09965).

On alternate steps the network sees a transformed state T_g(x_t) and its clean-image prediction
is mapped back with T_g⁻¹, so two trajectories (plain and transformed frame) are interleaved at
no extra network cost. This module holds the transformation groups and the policy that picks
the transform for a step; samplers call :meth:`Equivariance.predict` instead of the network.

Reference semantics (``map_eps_back=False``, the published code): on steps with even schedule
index k the network sees the transformed x_t; x̂0 is mapped back, but the ε used in the
re-noising term stays in the transformed frame. ``map_eps_back=True`` maps ε back too (the
equivariant reading of the method).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import ParameterError, ShapeError


@dataclass(frozen=True)
class Transform:
    """An invertible image transform acting on the last two axes."""

    name: str
    apply: Callable[[torch.Tensor], torch.Tensor]
    inverse: Callable[[torch.Tensor], torch.Tensor]


def _flip(dims):
    f = lambda x: torch.flip(x, dims)  # noqa: E731
    return f, f


def _dihedral(square: bool) -> list[Transform]:
    """Flips (and, for square images, rotations): the symmetries of the pixel grid."""
    out = [
        Transform("identity", lambda x: x, lambda x: x),
        Transform("hflip", *_flip((-1,))),
        Transform("vflip", *_flip((-2,))),
        Transform("rot180", *_flip((-2, -1))),
    ]
    if square:
        out += [
            Transform("rot90", lambda x: torch.rot90(x, 1, (-2, -1)),
                      lambda x: torch.rot90(x, -1, (-2, -1))),
            Transform("rot270", lambda x: torch.rot90(x, -1, (-2, -1)),
                      lambda x: torch.rot90(x, 1, (-2, -1))),
            Transform("transpose", lambda x: x.transpose(-1, -2), lambda x: x.transpose(-1, -2)),
            Transform("antitranspose", lambda x: torch.rot90(x, 1, (-2, -1)).flip(-2),
                      lambda x: torch.rot90(x.flip(-2), -1, (-2, -1))),
        ]
    return out


GROUPS = ("hflip", "vflip", "rot90", "shift", "random")


class Equivariance:
    """Which transform to use at each step, and the transformed network evaluation.

    Args:
        group: 'hflip' (reference), 'vflip', 'rot90' (square images), 'shift' (circular shift
            by ``shift`` pixels, default a quarter of the image), or 'random' (every step draws
            one element of the grid's symmetry group — flips, and rotations for square images —
            uniformly, identity included, from the sampler's generator).
        map_eps_back: also map the predicted ε back to the original frame.
        shape: (C, H, W) of the images, to check the group is valid.
    """

    g: Transform | None      # the fixed transform (None: drawn per step)

    def __init__(self, group: str, shape, map_eps_back: bool = False, shift=None):
        if group not in GROUPS:
            raise ParameterError(f"unknown EquS group {group!r}; available: {', '.join(GROUPS)}")
        _, H, W = shape
        self.group = group
        self.map_eps_back = bool(map_eps_back)
        if group == "rot90" and H != W:
            raise ShapeError(f"EquS group 'rot90' needs square images, got {H}x{W}; use "
                             f"'hflip', 'vflip', 'shift' or 'random'")
        if group == "hflip":
            self.g = _dihedral(False)[1]
        elif group == "vflip":
            self.g = _dihedral(False)[2]
        elif group == "rot90":
            self.g = _dihedral(True)[4]
        elif group == "shift":
            sh, sw = (H // 4, W // 4) if shift is None else (int(shift[0]), int(shift[1]))
            self.g = Transform(f"shift({sh},{sw})",
                               lambda x: torch.roll(x, (sh, sw), (-2, -1)),
                               lambda x: torch.roll(x, (-sh, -sw), (-2, -1)))
        else:
            self.g = None
            self.elements = _dihedral(H == W)

    def transform_for_step(self, k: int, generator: torch.Generator | None) -> Transform | None:
        """The transform used at schedule index k (None = plain frame)."""
        if self.group == "random":
            dev = generator.device if generator is not None else None
            i = int(torch.randint(len(self.elements), (1,), generator=generator, device=dev))
            return None if i == 0 else self.elements[i]
        return self.g if k % 2 == 0 else None


def predict(model, x_t: torch.Tensor, t: int, a: float, g: Transform | None,
            map_eps_back: bool = False):
    """One network evaluation, optionally in a transformed frame.

    ``a`` is ᾱ_t. Returns (x̂0, ε) with x̂0 = (x_t - √(1-ᾱ_t) ε)/√ᾱ_t (DDNM Eq. 12) in the
    original frame.
    With a transform g: ε_g = ε_θ(T_g x_t), x̂0 = T_g⁻¹((T_g x_t - √(1-ᾱ) ε_g)/√ᾱ), and ε is
    ε_g (reference) or T_g⁻¹ ε_g (``map_eps_back``).
    """
    xg = x_t if g is None else g.apply(x_t)
    eps = model.eps(xg, t)
    if eps.shape[1] == 2 * x_t.shape[1]:   # learned-sigma networks: ε is the first half
        eps = eps[:, : x_t.shape[1]]
    x0 = (xg - (1 - a) ** 0.5 * eps) / a ** 0.5
    if g is not None:
        x0 = g.inverse(x0)
        if map_eps_back:
            eps = g.inverse(eps)
    return x0, eps
