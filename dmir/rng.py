"""Random draws that give the same numbers on every device.

:func:`randn` is the one place where dmir draws Gaussian noise from a user's generator. It
follows the rule of diffusers' ``randn_tensor``: the numbers are drawn **on the generator's
device** (with the requested dtype) and then moved to the tensor's device. So a CPU
``torch.Generator`` (the README's library example) works unchanged when the model, the operator
and y live on a GPU, and a seed gives the same image on every device: the noise is the CPU
stream in both cases. Without a generator the draw happens on the target device (torch's global
stream there).
"""
from __future__ import annotations

import torch

__all__ = ["randn", "draw_device"]


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
    where = draw_device(generator, target)
    z = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=where)
    return z if where == target else z.to(target)
