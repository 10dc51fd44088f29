"""Random draws that give the same numbers on every device.

:func:`randn` is the one place where dmir draws Gaussian noise from a user's generator. It
follows the rule of diffusers' ``randn_tensor``: the numbers are drawn **on the generator's
device** (with the requested dtype) and then moved to the tensor's device. So a CPU
``torch.Generator`` (the README's library example) works unchanged when the model, the operator
and y live on a GPU, and a seed gives the same image on every device: the noise is the CPU
stream in both cases. Without a generator the draw happens on the target device (torch's global
stream there).

Batches with per-image streams: a :class:`BatchGenerator` holds one generator per batch row;
every draw through :func:`randn` / :func:`randint_rows` is then made row by row, row ``i`` from
generator ``i`` with the shape a batch of one would use — so image ``i`` of a batch gets exactly
the numbers it gets when restored alone with generator ``i`` (``dmir bench --batch``).
"""
from __future__ import annotations

import torch

from .errors import ShapeError

__all__ = ["randn", "draw_device", "BatchGenerator", "randint_rows"]


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


def _rows(generator: BatchGenerator, n: int):
    if len(generator) != n:
        raise ShapeError(f"a BatchGenerator of {len(generator)} generators cannot draw a "
                         f"batch of {n} rows")
    return generator.generators


def draw_device(generator: torch.Generator | None, device) -> torch.device:
    """Where a draw for a tensor on ``device`` happens: the generator's device, else
    ``device``."""
    if generator is not None:
        return torch.device(generator.device)
    return torch.device(device) if device is not None else torch.device("cpu")


def randn(shape, generator: torch.Generator | None = None, dtype=None, device=None
          ) -> torch.Tensor:
    """N(0, I) of ``shape`` on ``device`` (default CPU) with ``dtype`` (default float32),
    drawn from ``generator`` on the generator's device, then moved (diffusers' rule)."""
    dtype = dtype if dtype is not None else torch.float32
    target = torch.device(device) if device is not None else torch.device("cpu")
    if isinstance(generator, BatchGenerator):
        shape = tuple(shape)
        return torch.cat([randn((1, *shape[1:]), g, dtype, target)
                          for g in _rows(generator, shape[0])])
    where = draw_device(generator, target)
    z = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=where)
    if where == target:
        return z
    if where.type == "cpu" and target.type == "cuda":
        # from pinned memory the copy is queued without waiting for the device (a plain .to()
        # from pageable memory synchronises the stream: a host stall every sampling step)
        return z.pin_memory().to(target, non_blocking=True)
    return z.to(target)


def randint_rows(high: int, n: int, generator=None) -> list[int]:
    """One integer in [0, high) per row: a single shared draw with a plain generator (the
    value repeated), one draw per row's generator with a :class:`BatchGenerator`."""
    if not isinstance(generator, BatchGenerator):
        dev = generator.device if generator is not None else None
        return [int(torch.randint(high, (1,), generator=generator, device=dev))] * n
    return [int(torch.randint(high, (1,), generator=g, device=g.device))
            for g in _rows(generator, n)]
