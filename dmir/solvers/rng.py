"""Per-image random numbers for batched sampling.

A :class:`BatchGenerator` holds one ``torch.Generator`` per batch row. Every draw a sampler
makes through :func:`randn` / :func:`randint_rows` is then made row by row, row ``i`` from
generator ``i`` with the shape a batch of one would use — so image ``i`` of a batch gets exactly
the numbers it gets when restored alone with generator ``i``, and results do not depend on the
batch size or on the other images (the bench batches images this way: ``dmir bench --batch``).

A plain ``torch.Generator`` (or None) keeps the usual behaviour: one draw for the whole batch.
"""
from __future__ import annotations

import torch

from ..errors import ShapeError

__all__ = ["BatchGenerator", "randn", "randn_like", "randint_rows"]


class BatchGenerator:
    """One generator per batch row (see the module docstring)."""

    def __init__(self, generators):
        self.generators = list(generators)
        if not self.generators:
            raise ShapeError("BatchGenerator needs at least one generator")

    @classmethod
    def from_seeds(cls, seeds, device="cpu") -> "BatchGenerator":
        dev = torch.device(device)
        return cls(torch.Generator(device=dev).manual_seed(int(s)) for s in seeds)

    def __len__(self) -> int:
        return len(self.generators)

    @property
    def device(self) -> torch.device:
        return self.generators[0].device


def _rows(generator, n: int):
    if len(generator) != n:
        raise ShapeError(f"a BatchGenerator of {len(generator)} generators cannot draw a "
                         f"batch of {n} rows")
    return generator.generators


def randn(shape, generator=None, dtype=None, device=None) -> torch.Tensor:
    """``torch.randn(shape, ...)``; with a :class:`BatchGenerator`, row i from generator i."""
    if not isinstance(generator, BatchGenerator):
        return torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)
    shape = tuple(shape)
    return torch.cat([torch.randn((1, *shape[1:]), generator=g, dtype=dtype, device=device)
                      for g in _rows(generator, shape[0])])


def randn_like(x: torch.Tensor, generator=None) -> torch.Tensor:
    return randn(x.shape, generator, dtype=x.dtype, device=x.device)


def randint_rows(high: int, n: int, generator=None) -> list[int]:
    """One integer in [0, high) per row: a single shared draw with a plain generator (the
    value repeated), one draw per row's generator with a :class:`BatchGenerator`."""
    if not isinstance(generator, BatchGenerator):
        dev = generator.device if generator is not None else None
        return [int(torch.randint(high, (1,), generator=generator, device=dev))] * n
    return [int(torch.randint(high, (1,), generator=g, device=g.device))
            for g in _rows(generator, n)]
