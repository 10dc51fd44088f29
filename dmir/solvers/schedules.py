"""Timestep schedules and RePaint-style time travel, shared by every sampler.

A plan has ``steps`` = T schedule indices k = T-1 … 0 and a table mapping each index to a model
timestep (``table[k]``; index -1 maps to timestep -1, the clean image). The sampler walks the
list of index pairs (k_i, k_j): k_j < k_i is a denoising step from timestep table[k_i] to
table[k_j]; k_j > k_i is a time-travel (re-noising) step.

* uniform (DDNM/DDIM reference): table[k] = k · ⌊T_train / T⌋.
* quadratic (EquS+ Timestep-Aware Schedule): table[k] = ⌊(√(T_train-1) · k/(T-1))²⌋, i.e. the
  reference ``int(linspace(√999, 0, T)²)`` read backwards. It spends most steps at low noise and
  contains repeated 0 → 0 steps at the end (kept: they are part of the published protocol).
* diffpir_quad (DiffPIR's ``skip_type='quad'``, yuanzhi-zhu/DiffPIR): the reference visits
  t_i = (T_train-1) - s_i with s_i = ⌊√(linspace(0, T_train², T))_i⌋ (last entry minus 1), so
  table[k] = (T_train-1) - s_{T-1-k}. Not the EquS TAS: its spacing is ∝ √ near the start and
  *linear* near t = 0 (t ≈ 500·k/(T-1) for small k), where TAS is quadratic (t ≈ 999(k/(T-1))²).
  Like TAS it spends more steps at low noise than uniform; for T ≳ 200 it repeats timesteps.

Few steps: TAS always starts at t = T_train - 1 (ᾱ ≈ 4e-5 for the linear schedule), where x̂0 is
the noise prediction's error amplified √((1-ᾱ)/ᾱ) ≈ 156 times, and its second timestep is
⌊999 (1 - 1/(T-1))²⌋. For T < 8 that second timestep is already at low noise (T = 5: t = 561,
ᾱ = 0.04), so the blown-up x̂0 is carried into x_t almost undamped (×√(ᾱ_t1/ᾱ_t0) = 31 at T = 5,
against ≤ 5.4 for uniform): x_t leaves the network's input distribution (std 4 instead of 1),
and the range–null-space projection repairs only the range of A. With the shipped prior, SR×2 on
64² gave 5–7 dB at 3–5 steps (DDNM: 23–25 dB). :func:`resolve_schedule` therefore replaces TAS
by the uniform schedule below :data:`TAS_MIN_STEPS` steps, with a :class:`FewStepsWarning`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError
from ..types import Schedule


#: fewest steps for which the quadratic TAS is used (below it: uniform, with a warning)
TAS_MIN_STEPS = 8


class FewStepsWarning(UserWarning):
    """A schedule was replaced because the step count is too small for it."""


def check_steps(steps) -> int:
    """``steps`` as an int: an integer ≥ 1 (an integral float such as 10.0 is accepted); 3.7,
    NaN, a bool or a string is a :class:`ParameterError`, never silently truncated."""
    if isinstance(steps, bool):
        raise ParameterError(f"steps must be a positive integer, got {steps!r}")
    try:
        n = int(steps)
        exact = n == steps if isinstance(steps, (int, float)) else n == float(steps)
    except (TypeError, ValueError, OverflowError):
        raise ParameterError(f"steps must be a positive integer, got {steps!r}") from None
    if not exact:
        raise ParameterError(f"steps must be a whole number, got {steps!r}")
    if n < 1:
        raise ParameterError(f"steps must be a positive integer, got {steps!r}")
    return n


def resolve_schedule(schedule: Schedule, steps) -> Schedule:
    """The schedule actually used for ``steps`` steps: 'quadratic' (TAS) with fewer than
    :data:`TAS_MIN_STEPS` steps degenerates (module docstring) and becomes 'uniform', with a
    :class:`FewStepsWarning`; every other case is returned unchanged."""
    n = check_steps(steps)
    if schedule in ("quadratic", "tas") and 1 <= n < TAS_MIN_STEPS:
        warnings.warn(f"the quadratic timestep-aware schedule (EquS+) needs at least "
                      f"{TAS_MIN_STEPS} steps; with {n} it degenerates, so the uniform "
                      f"schedule is used", FewStepsWarning, stacklevel=3)
        return "uniform"
    return schedule


#: the most network evaluations one sampling walk may make, time travel included (10x the
#: 1000-step chain; RePaint's own setting, 250 steps x jumps of 10 repeated 10 times, is 4,750)
MAX_NFE = 10_000


def jump_schedule(steps: int, travel_length: int = 1, travel_repeat: int = 1) -> list[int]:
    """RePaint/DDNM ``get_schedule_jump``: the visited indices, ending with -1.

    Every ``travel_length`` indices the walk goes back up by ``travel_length`` and repeats,
    ``travel_repeat - 1`` extra times. travel_repeat = 1 gives [T-1, …, 0, -1].
    """
    if travel_length < 1 or travel_repeat < 1:
        raise ParameterError("travel_length and travel_repeat must be ≥ 1")
    if travel_length >= steps and travel_repeat > 1:
        raise ParameterError(f"travel_length ({travel_length}) must be smaller than the number "
                             f"of steps ({steps})")
    jumps = {j: travel_repeat - 1 for j in range(0, steps - travel_length, travel_length)}
    nfe = steps + (travel_repeat - 1) * travel_length * len(jumps)
    if nfe > MAX_NFE:
        raise ParameterError(
            f"time travel would make {nfe:,} network evaluations ({steps} steps + "
            f"{travel_repeat - 1:,} repeats x {travel_length} steps at {len(jumps)} points); "
            f"at most {MAX_NFE:,} are allowed (steps alone are capped at 1000): lower "
            f"travel_repeat or travel_length")
    t = steps
    ts = []
    while t >= 1:
        t -= 1
        ts.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(travel_length):
                t += 1
                ts.append(t)
    ts.append(-1)
    return ts


@dataclass(frozen=True)
class Plan:
    """Schedule table (index → timestep) and the walk over indices."""

    table: tuple            # table[k] for k = 0..T-1
    walk: tuple             # visited indices, ending at -1

    def timestep(self, k: int) -> int:
        return -1 if k < 0 else self.table[k]

    @property
    def pairs(self):
        return list(zip(self.walk[:-1], self.walk[1:]))

    @property
    def nfe(self) -> int:
        """Network evaluations: one per denoising (downward) pair."""
        return sum(1 for i, j in self.pairs if j < i)


def make_plan(steps: int, num_train_timesteps: int = 1000, schedule: Schedule = "uniform",
              travel_length: int = 1, travel_repeat: int = 1) -> Plan:
    """Build a sampling plan. ``schedule``: 'uniform', 'quadratic' (EquS+ TAS) or
    'diffpir_quad' (DiffPIR's quad spacing)."""
    steps = check_steps(steps)
    if not (1 <= steps <= num_train_timesteps):
        raise ParameterError(f"steps must be in 1..{num_train_timesteps}, got {steps}")
    if schedule == "uniform":
        skip = num_train_timesteps // steps
        table = [k * skip for k in range(steps)]
    elif schedule in ("quadratic", "tas"):
        quad = np.linspace(np.sqrt(num_train_timesteps - 1), 0, steps) ** 2
        table = [int(s) for s in quad][::-1]
    elif schedule == "diffpir_quad":
        if steps == 1:
            table = [num_train_timesteps - 1]
        else:
            seq = [int(s) for s in np.sqrt(np.linspace(0, num_train_timesteps ** 2, steps))]
            seq[-1] -= 1
            table = [num_train_timesteps - 1 - s for s in seq][::-1]
    else:
        raise ParameterError(f"schedule must be 'uniform', 'quadratic' or 'diffpir_quad', got "
                             f"{schedule!r}")
    return Plan(tuple(table), tuple(jump_schedule(steps, travel_length, travel_repeat)))
