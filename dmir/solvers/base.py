"""The one sampling loop every diffusion solver shares.

A solver subclasses :class:`Sampler` and implements :meth:`Sampler.update` — the per-step rule
of its paper — plus, optionally, :meth:`Sampler.prepare` (per-measurement precomputation).
Schedules, time travel, EquS transforms, NFE counting, progress reporting and random draws
live here once.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch

from ..errors import InputError, NumericalError, ParameterError, ShapeError
from ..rng import randn
from ..operators.base import warn_inexact_pinv
from ..operators.noise import sigma_to_model
from ..types import EqusGroup, Operator, Prior, Schedule
from .equivariance import Equivariance, predict
from .schedules import check_steps, make_plan, resolve_schedule


#: ``callback(i, t, tensors)`` after each denoising step (diffusers-style step callback):
#: ``i`` = 0-based step, ``t`` = the timestep the network was evaluated at, ``tensors`` =
#: ``{"x_t": state at t, "x0": x̂0 predicted from it, "x_next": the state after the step}``
#: (model domain, detached; read them, do not modify them in place). The return value is
#: ignored.
StepCallback = Callable[[int, int, Dict[str, torch.Tensor]], object]


def _as_unit(name, v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number in [0, 1], got {v!r}") from None
    if not (0.0 <= v <= 1.0):
        raise ParameterError(f"{name} must be in [0, 1], got {v}")
    return v


def check_start(x_T: torch.Tensor) -> None:
    """A given initial state must be finite (a NaN x_T used to give a NaN result silently)."""
    if not bool(torch.isfinite(x_T).all()):
        raise InputError("x_T (the initial state) contains NaN or Inf values")


class FiniteWatch:
    """Remembers whether every prediction it was shown was finite, without a device-to-host
    sync per step (one flag tensor, read once by :func:`check_result`). Clamping x̂0 would
    otherwise turn an Inf prediction into a plausible-looking but meaningless image."""

    def __init__(self):
        self.ok = None

    def see(self, t: torch.Tensor) -> None:
        f = torch.isfinite(t.detach()).all()
        self.ok = f if self.ok is None else self.ok & f

    @property
    def failed(self) -> bool:
        return self.ok is not None and not bool(self.ok)


def check_result(x: torch.Tensor, method: str, steps=None,
                 watch: FiniteWatch | None = None) -> torch.Tensor:
    """``x`` if it and every prediction ``watch`` saw are finite, else :class:`NumericalError`
    (the prior returned NaN/Inf predictions, or the iteration diverged). Checked once, after
    the loop."""
    what = f"{method}{f' ({steps} steps)' if steps else ''}"
    if watch is not None and watch.failed:
        raise NumericalError(f"{what}: the prior returned NaN/Inf predictions (check the "
                             f"model's weights, or use float32)")
    if not bool(torch.isfinite(x).all()):
        raise NumericalError(f"{what} produced NaN/Inf values: the prior returned non-finite "
                             f"predictions or the iteration diverged (check the model's "
                             f"weights, try float32 or other settings)")
    return x


def require_linear(op, method: str, accepts_nonlinear: bool = False) -> None:
    """Refuse a nonlinear operator (``op.linear`` False: no Aᵀ, A⁺ or SVD) for a method built
    on them, naming the operator and the methods that take it."""
    if getattr(op, "linear", True) or accepts_nonlinear:
        return
    from ..operators.nonlinear import NONLINEAR_METHODS
    raise ParameterError(f"{method}: operator '{getattr(op, 'name', type(op).__name__)}' is "
                         f"nonlinear (no Aᵀ, A⁺ or SVD), which {method} needs; methods that "
                         f"accept nonlinear operators: {', '.join(NONLINEAR_METHODS)}")


class Sampler:
    """Shared loop: x_T → … → x_0 over a :class:`~dmir.solvers.schedules.Plan`.

    Args:
        model: a prior with ``eps(x_t, t)`` and ``alphas_cumprod``.
        op: the degradation operator (``dmir.operators``).
        steps: number of schedule indices T (network evaluations without time travel).
        eta: stochasticity of the re-noising (0 = deterministic DDIM-like, 1 = fresh noise).
        sigma_y: measurement noise level in [0, 1] pixel units (converted once to model units).
        schedule: 'uniform', 'quadratic' (EquS+ TAS) or 'diffpir_quad' (DiffPIR).
        equs: None or an EquS group name ('hflip', 'vflip', 'rot90', 'shift', 'random').
        equs_map_eps_back: map ε back from the transformed frame (reference: False).
        equs_shift: (dy, dx) for the 'shift' group.
        travel_length, travel_repeat: RePaint-style time travel (1, 1 = none).

    Autograd: :meth:`sample` runs the whole loop under ``torch.no_grad()`` — no graph is kept
    between steps. A solver that needs gradients through the network (DPS, ΠGDM) sets the class
    attribute ``needs_grad = True``; then, at every denoising step, the loop evaluates the
    network (EquS transform included) with autograd enabled on ``x_t.detach().requires_grad_()``
    and calls :meth:`update` still inside ``torch.enable_grad()``, so ``update`` receives an
    ``x_t`` that is a graph leaf and an ``x0``/``eps`` differentiable with respect to it. It
    takes its gradients with ``torch.autograd.grad(..., x_t)`` (never ``.backward()``: model
    parameters must not accumulate ``.grad``); the loop detaches what it returns, so the graph
    lives for one step only. One network evaluation per step either way.
    """

    #: short name used by the registry
    method = "sampler"
    #: run predict + update with autograd enabled (see the class docstring)
    needs_grad: bool = False
    #: the method needs only a differentiable A (DPS): nonlinear operators are accepted
    accepts_nonlinear: bool = False
    #: images of a batch do not interact: with a BatchGenerator (one generator per image,
    #: :mod:`dmir.rng`) a batch gives each image what it gets alone
    batch_invariant: bool = True
    #: the update is the exact range–null-space split A⁺y + (I − A⁺A)x: warn once
    #: (:class:`~dmir.operators.base.InexactPinvWarning`) for an operator whose A⁺ is not exact
    needs_exact_pinv: bool = False

    def __init__(self, model: Prior, op: Operator, steps: int = 100, eta: float = 0.85,
                 sigma_y: float = 0.0, schedule: Schedule = "uniform",
                 equs: EqusGroup | None = None,
                 equs_map_eps_back: bool = False, equs_shift=None,
                 travel_length: int = 1, travel_repeat: int = 1):
        require_linear(op, self.method, self.accepts_nonlinear)
        self.model = model
        self.op = op
        if self.needs_exact_pinv:
            warn_inexact_pinv(op, self.method)
        self.eta = _as_unit("eta", eta)
        self.sigma_y = _as_unit("sigma_y", sigma_y)
        self.sigma_model = sigma_to_model(self.sigma_y)
        self.steps = check_steps(steps)
        self.schedule = resolve_schedule(schedule, steps)
        self.plan = make_plan(steps, model.num_timesteps, self.schedule, int(travel_length),
                              int(travel_repeat))
        self.equs = (Equivariance(equs, op.x_shape, equs_map_eps_back, equs_shift)
                     if equs else None)
        # ᾱ as Python floats, read once: no device-to-host sync inside the sampling loop
        self._abar = [float(a) for a in model.alphas_cumprod.cpu()]
        self.nfe = 0

    # -------------------------------------------------------------- to implement
    def prepare(self, y: torch.Tensor) -> dict:
        """Per-measurement precomputation (e.g. Uᵀy); the dict is passed to every update."""
        return {}

    def update(self, x_t, x0, eps, t: int, t_next: int, y, state: dict,
               generator: torch.Generator | None) -> torch.Tensor:  # pragma: no cover
        """One step of the method: (x_t, x̂0, ε at t) → x_{t_next}."""
        raise NotImplementedError

    def initial_state(self, z: torch.Tensor, y: torch.Tensor, state: dict) -> torch.Tensor:
        """The first state x_T from the white noise ``z`` (the ``x_T`` given to
        :meth:`sample`); the default is z itself. Methods with a y-dependent start (DDRM's
        p(x_T | y), ΠGDM's √ᾱ_T A⁺y + √(1-ᾱ_T) z) override it."""
        return z

    def before_step(self, x: torch.Tensor, t: int, first: bool, y, state: dict,
                    generator) -> torch.Tensor:
        """Hook before the network evaluation at timestep t (``first``: the chain's first
        step); returns the state the network sees. Default: x unchanged (RePaint replaces
        the known part here, as its release does)."""
        return x

    def time_travel(self, x, x0, t: int, t_next: int, generator) -> torch.Tensor:
        """A time-travel step t → t_next > t. Default (DDNM): re-noise the last x̂0,
        √ᾱ_{t_next} x̂0 + √(1-ᾱ_{t_next}) z. RePaint overrides it with one forward step."""
        a = self.alpha_bar(t_next)
        return a ** 0.5 * x0 + (1 - a) ** 0.5 * self.noise_like(x0, generator)

    # -------------------------------------------------------------- shared mechanics
    def alpha_bar(self, t: int) -> float:
        """ᾱ_t of the model's schedule; t = -1 gives 1."""
        return 1.0 if t < 0 else self._abar[t]

    def noise_like(self, x, generator):
        return randn(x.shape, generator, x.dtype, x.device)

    def check_measurement(self, y: torch.Tensor) -> None:
        if not isinstance(y, torch.Tensor):
            raise ShapeError(f"y must be a torch.Tensor, got {type(y).__name__}")
        if y.dim() != len(self.op.y_shape) + 1 or tuple(y.shape[1:]) != self.op.y_shape:
            raise ShapeError(f"y must have shape (B, {', '.join(map(str, self.op.y_shape))}) for "
                             f"operator {self.op.name}, got {tuple(y.shape)}")
        if not torch.isfinite(y).all():
            raise InputError("the measurement y contains NaN or Inf values")

    def sample(self, y: torch.Tensor, x_T: torch.Tensor | None = None,
               generator: torch.Generator | None = None,
               progress: Callable[[int, int], None] | None = None,
               callback: StepCallback | None = None) -> torch.Tensor:
        """Restore x from y = A x + n. Returns (B, C, H, W) in the model domain (unclamped).

        ``x_T``: the initial noise (default: drawn from ``generator``). ``progress(i, n)`` is
        called after each network evaluation with i = 1..n. ``callback(i, t, tensors)`` after
        each denoising step with the current ``x_t``, ``x0`` (x̂0) and ``x_next``
        (:data:`StepCallback`), e.g. to watch a restoration in a notebook.
        """
        self.check_measurement(y)
        B = y.shape[0]
        if x_T is None:
            x_T = randn((B, *self.op.x_shape), generator, y.dtype, y.device)
        elif tuple(x_T.shape) != (B, *self.op.x_shape):
            raise ShapeError(f"x_T must have shape {(B, *self.op.x_shape)}, got "
                             f"{tuple(x_T.shape)}")
        else:
            check_start(x_T)
        self._watch = FiniteWatch()
        with torch.no_grad():
            return check_result(self._loop(y, x_T, generator, progress, callback),
                                self.method, self.steps, self._watch)

    def _loop(self, y, x_T, generator, progress, callback=None):
        state = self.prepare(y)
        if getattr(self, "_watch", None) is None:
            self._watch = FiniteWatch()
        x, x0 = self.initial_state(x_T, y, state), None
        total, self.nfe = self.plan.nfe, 0
        map_back = self.equs.map_eps_back if self.equs else False
        step = 0
        for k_i, k_j in self.plan.pairs:
            t_next = self.plan.timestep(k_j)
            if k_j < k_i:          # denoising step
                t = self.plan.timestep(k_i)
                x = self.before_step(x, t, step == 0, y, state, generator)
                x_in = x
                g = (self.equs.transform_for_step(k_i, generator, x.shape[0]) if self.equs
                     else None)
                if self.needs_grad:
                    with torch.enable_grad():
                        x = x.detach().requires_grad_(True)
                        x0, eps = predict(self.model, x, t, self.alpha_bar(t), g, map_back)
                        self._watch.see(eps)
                        self.nfe += 1
                        x = self.update(x, x0, eps, t, t_next, y, state, generator)
                    x, x0 = x.detach(), x0.detach()
                else:
                    x0, eps = predict(self.model, x, t, self.alpha_bar(t), g, map_back)
                    self._watch.see(eps)
                    self.nfe += 1
                    x = self.update(x, x0, eps, t, t_next, y, state, generator)
                if callback is not None:
                    callback(step, t, {"x_t": x_in.detach(), "x0": x0.detach(),
                                       "x_next": x.detach()})
                step += 1
                if progress is not None:
                    progress(self.nfe, total)
            else:                  # time travel (DDNM: re-noise x̂0; RePaint: forward steps)
                x = self.time_travel(x, x0, self.plan.timestep(k_i), t_next, generator)
        return x
