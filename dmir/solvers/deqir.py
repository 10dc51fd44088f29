"""DeqIR (Cao, Shi, Zhang, Zhang, Timofte & Van Gool, "Deep Equilibrium Diffusion Restoration with
Parallel Sampling", CVPR 2024, arXiv 2311.11600; reference code caojiezhang/DeqIR,
``functions/ddim_anderson.py`` and ``runners/diffusion.py``).

The whole DDNM/DDIM restoration chain is one joint fixed-point system over all T states, solved
with Anderson acceleration; every iteration evaluates the network on all states in one batched
call (split into chunks and across devices), instead of T sequential calls.

Notation (ours; the paper's Proposition 1 in the same quantities — its equation numbers could
not be confirmed here, the formulas below are derived from the DDNM step and agree with the
reference code). Step i = 0..T-1 goes from timestep t_i to t'_i (uniform schedule:
t_i = (T-1-i)·⌊1000/T⌋, t'_i = t_{i+1}, t'_{T-1} = -1 where ᾱ = 1). With a_i = ᾱ_{t_i},
a'_i = ᾱ_{t'_i}, P = A⁺A (projector onto the row space of A), ε_i = ε_θ(x_i, t_i) the network
output at the input state of step i (x_0 = x_T) and ξ_i the fresh noise of step i, one step of
noise-free DDNM (Eqs. 12–13 of DDNM, DDIM re-noising with the DeqIR weights) is

    x̂0_i  = x_i/√a_i − s_i ε_i,                      s_i = √((1 − a_i)/a_i)
    x_{i+1} = √a'_i (A⁺y + (I − P) x̂0_i) + c1_i ξ_i + c2_i ε_i,
    c1_i = nw·√(1 − a'_i)   (fresh noise),   c2_i = √(1 − etw²)·√(1 − a'_i)   (ε term).

Dividing by √a'_i and using (I − P)A⁺y = 0 and P² = P unrolls the chain (Proposition 1): every
state is an explicit function of x_T, y, the noises and the network outputs at all noisier
states,

    z_j := x_{j+1} = √a'_j [ A⁺y + (I − P)( x_T/√a_0 + Σ_{i≤j} (e_i ε_i − s_i ε_i + n_i ξ_i) )
                             + P (e_j ε_j + n_j ξ_j) ],
    e_i = c2_i/√a'_i,   n_i = c1_i/√a'_i.

The fixed-point map F stacks the T states z = (z_0, …, z_{T-1}) — **layout (T, B, C, H, W)**,
z_j the state *after* step j, so z_{T-1} is the restored image (the last data-consistent x̂0)
— evaluates ε_i at the inputs (x_T, z_0, …, z_{T-2}) in one batched call and returns the
right-hand side above for all j at once (a cumulative sum over i). Its fixed point is exactly
the sequential chain (F is triangular: z_j depends on z_{<j} only), so with the same x_T and
noises DeqIR at convergence equals the sequential sampler; with nw = etw = η it is DDNM with
that η (same noise draws, same order).

Units: images in the model domain [-1, 1]; σ_y in [0, 1] pixel units (×2 inside); timesteps are
indices of the model's schedule.

What ``--method deqir`` returns. By default (``strategy="auto"``) the converged chain — the
fixed point, i.e. the sequential DDNM chain with the same x_T and noises: on a CPU it is
evaluated state by state (T network evaluations; a batched evaluation of all states costs as
much there, so this is the cheapest exact way), on a GPU by the sliding window (batched, exact).
``solver.ran`` says which strategy ran and ``solver.nfe`` how many evaluations it spent. The
paper's protocol is available by name, ``strategy="published"``, and is what the DeqIR presets
of ``dmir bench`` use; its stop after 15 evaluations leaves the chain unconverged for T ≥ 20
(measured: errors 0.04–16 against the sequential chain), so it is not the default.

Anderson acceleration as published: memory m = 5, regularisation λ = 1e-3 (absolute, on the
Gram matrix of the residuals), β = 1, stop when ‖F(z) − z‖/(‖F(z)‖ + 1e-5) < 1e-3 or after 15
evaluations of F; the mixing least-squares problem is solved separately for every state (the
reference's Anderson batches over the T states with per-state weights; with B images we solve
per (state, image)). The initial iterate is x_T in every state (reference).

Defaults and their source: T = 25 steps, nw = 0, etw = 0.1 — the reference README's command
(``--timesteps 25 --use_svd --etw 0.1``, nw left at its default 0); Anderson parameters from
``fp_implicit_iters_anderson`` (m from ``--m 5``). Passing ``eta`` sets nw = etw = η (the DDNM
re-noising); explicit ``nw``/``etw`` override it.

σ_y > 0 (not covered by the reference, which runs the noise-free projection onto the noisy y):
we run the DDNM+ update (:mod:`dmir.solvers.ddnm`: per singular value for operators with an
SVD, the simplified rule otherwise) inside the same fixed-point map. DDNM+ has one η for both
noise weights, so nw must equal etw (pass ``eta``); with none of eta/nw/etw given, η = 0.85
(DDNM+'s default). Its map is evaluated by the frozen-ε affine recurrence (the same unrolled
chain as above, written step by step; no network call inside) since the DDNM+ range update is
not a projection. The default strategy ends on the exact chain here too (sequential on a CPU,
the sliding window elsewhere): full per-state Anderson does not converge on this stochastic
chain (measured on the natural-image prior, T = 20, η = 0.85: relative residual still ≈ 1 after
40 evaluations; after the published 15 the output is garbage), and the paper has no σ_y > 0
mode to be faithful to.

Measured behaviour (benchmarks/deqir.py, CPU): the published per-state mixing converges more
slowly than plain fixed-point iteration of the same map (m = 1) on every prior tried — analytic
Gaussian, the natural-image prior and a small trained DDPM, T = 20…100 — and the published stop
after 15 evaluations leaves the chain unconverged for T ≥ 20 (a warning says so). The reason is
structural: F is strictly triangular (z_j depends on z_{<j} only), so a state's own history says
nothing about how its image moves, which is what per-state Anderson extrapolates from; plain
iteration is exact in T evaluations, and joint weights do about as well as it. The options below
(``m=1``, ``mixing='joint'``, ``window=``, ``strategy=``) are there for that reason, and the
default is the converged chain; the published protocol is ``strategy="published"``.

Deviations from the reference code, on purpose: (1) it draws ONE noise image and reuses it at
every step (``all_noise = repeat_interleave(randn_like(x_T), T)``); we draw a fresh ξ_i per step,
in the sequential sampler's order, so the fixed point is the DDNM chain (they coincide for
nw = 0, the default). (2) Its non-SVD operator branch multiplies the ε and noise coefficients by
√(1 − ᾱ_next²); we use the same coefficients for every operator (its SVD branch). (3) It returns
the last mixed iterate x_k; ``strategy="published"`` does the same, the other full-Anderson
solve returns F(x_k), already computed for the residual test (for a triangular map at least as
accurate). (4) With EquS the ε of x̂0 is the one mapped back and the
re-noising ε stays in the transformed frame (the EquS reference semantics), i.e. the Σ above
uses e_i ε_i^renoise − s_i ε_i^x̂0.

Beyond the paper:

* ``window=w``: a sliding-window solve (ParaDiGMS, Shih et al. 2023; :mod:`.window`): only the
  w oldest not-yet-converged states are iterated; network evaluations are spent only where
  states still move.
* EquS (``equs=``, the registry's ``deqir-equs``/``deqir-equs+``): the transform of even
  schedule indices k = T-1-i is applied to those rows inside the batched evaluation.
* Multi-device: the batched evaluation is split over ``devices`` (:mod:`.parallel`).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import torch

from ..rng import randn
from ..errors import ParameterError, ShapeError
from ..types import EqusGroup, Schedule
from ..operators.base import safe_inverse, warn_inexact_pinv
from ..operators.noise import sigma_to_model
from .anderson import anderson, check_options
from .base import FiniteWatch, Sampler, _as_unit, check_result, check_start, require_linear
from .ddnm import ddnm_plus_simple_step, ddnm_plus_svd_step
from .equivariance import Equivariance
from .parallel import default_devices, eps_on_devices, resolve_devices
from .schedules import check_steps, make_plan, resolve_schedule
from .window import check_layout, solve_window

class ConvergenceWarning(UserWarning):
    """The fixed-point solve stopped at ``max_iter`` before reaching ``tol``: the returned image
    is an approximation of the sequential chain's."""


#: η of the DDNM+ update when σ_y > 0 and none of eta / nw / etw is given (DDNM's default)
DDNM_PLUS_ETA = 0.85
#: the sliding-window size of ``strategy="auto"`` off the CPU (and of ``strategy="window"``)
AUTO_WINDOW = 5
NOISY_WINDOW = AUTO_WINDOW      # the former name (σ_y > 0 default)
#: how the fixed point is found (see the class docstring)
STRATEGIES = ("auto", "sequential", "window", "anderson", "published")
#: the published protocol (README command, ``fp_implicit_iters_anderson``): Anderson m = 5,
#: λ = 1e-3, β = 1, relative-residual tolerance 1e-3, at most 15 evaluations of F, per-state
#: mixing; the release returns the last mixed iterate
PUBLISHED: dict[str, Any] = {"m": 5, "lam": 1e-3, "beta": 1.0, "tol": 1e-3, "max_iter": 15}
#: relative-residual tolerance of the converged strategies (window, anderson)
CONVERGED_TOL = 1e-4


class DeqIR:
    """DeqIR: parallel (fixed-point) DDNM restoration solved with Anderson acceleration.

    Args:
        model: a prior with ``eps(x_t, t)`` (t an int or a (N,) tensor of ints) and
            ``alphas_cumprod``.
        op: the degradation operator.
        steps: number of states T (default 25, the reference README).
        eta: shorthand for nw = etw = η (DDNM's η); ``None`` = use nw / etw.
        sigma_y: measurement noise in [0, 1] pixel units (> 0: DDNM+ rules, nw must equal etw).
        nw: weight of the fresh noise, c1 = nw·√(1-ᾱ_next) (default 0, reference).
        etw: ε weight, c2 = √(1-etw²)·√(1-ᾱ_next) (default 0.1, reference README).
        strategy: how the fixed point is found:

            * ``'auto'`` (default): the converged chain, cheapest exact way for the devices —
              ``'sequential'`` when every evaluation device is a CPU, else ``'window'``.
              Explicit ``window=w`` selects ``'window'``, explicit ``window=None``
              ``'anderson'``.
            * ``'sequential'``: the chain state by state (the window solver with w = 1): T
              network evaluations, exact.
            * ``'window'``: the sliding window (``window``, default 5): batched, exact.
            * ``'anderson'``: full Anderson over all T states until ``tol``, at most
              ``max_iter`` evaluations (default T + 1: exact for m = 1, since F is strictly
              triangular); returns F of the last iterate.
            * ``'published'``: the release's protocol — m 5, λ 1e-3, β 1, tol 1e-3, at most 15
              evaluations, returning the last mixed iterate as the release does (not converged
              for T ≥ 20; no warning: it is the protocol). The DeqIR paper presets use it.

            After a solve, ``ran`` names the strategy that ran and ``nfe`` its evaluations.
        m, lam, beta, tol, max_iter: Anderson memory, regularisation, mixing, relative-residual
            tolerance and maximum number of evaluations of F (defaults: 5, 1e-3, 1.0, 1e-4 —
            1e-3 for 'published' — and T + 1 — 15 for 'published'). m = 1 is plain fixed-point
            iteration (exact after T evaluations: F is triangular). A converged strategy that
            stops at max_iter before tol emits a :class:`ConvergenceWarning`.
        mixing: 'state' (mixing weights per state and image, the published choice) or 'joint'
            (one set of weights for the whole system; not with ``window``).
        chunk: the memory budget of one network call, in images (None = all states of an
            iteration in one call per device).
        devices: devices for the batched evaluation. None: every visible CUDA device when the
            model is on a CUDA device, else the model's device. A replica of the model is made
            (``copy.deepcopy``) on each device other than the model's own, once, at first use;
            rebuild the solver after changing the model's weights.
        window: None (full Anderson over all T states), the sliding-window size w ≥ 1, or
            'auto' (default: chosen by ``strategy``). The window solver always terminates with the exact chain (≤ T rounds, each state
            evaluated ≤ w times; ``tol`` is then a per-state relative residual and ``max_iter``
            is not used); m = 1 inside the window is plain (Picard) iteration.
        schedule: 'uniform' (reference), 'quadratic' (EquS+ TAS) or 'diffpir_quad'.
        equs, equs_map_eps_back, equs_shift: EquS transforms as in the sequential samplers
            (deterministic groups only: 'random' draws per step and is not supported).
        svd: DDNM+ per-singular-value rules when the operator has an SVD (σ_y > 0).
        form: how F is evaluated: 'cumsum' (the unrolled sums, σ_y = 0 only) or 'recurrence'
            (the same map step by step with the network outputs frozen); None = cumsum when
            σ_y = 0, else recurrence.

    After :meth:`sample` (or :meth:`solve`): ``nfe`` (single-image network evaluations per
    image: T per iteration for full Anderson, the window size per round for the window),
    ``iterations`` (batched evaluations of F), ``residuals`` (relative residual after each; the
    largest per-state residual in the window for the window solver), ``converged``.
    """

    method = "deqir"

    def __init__(self, model, op, steps: int = 25, eta: float | None = None,
                 sigma_y: float = 0.0, nw: float | None = None, etw: float | None = None,
                 m: int | None = None, lam: float = 1e-3, beta: float = 1.0,
                 tol: float | None = None, max_iter: int | None = None,
                 mixing: str | None = None, chunk: int | None = None, devices=None,
                 window: int | str | None = "auto", schedule: Schedule = "uniform",
                 equs: EqusGroup | None = None, equs_map_eps_back: bool = False, equs_shift=None,
                 svd: bool = True, form: str | None = None, strategy: str = "auto"):
        require_linear(op, self.method)
        self.model = model
        self.op = op
        self.sigma_y = _as_unit("sigma_y", sigma_y)
        self.sigma_model = sigma_to_model(self.sigma_y)
        eta = None if eta is None else _as_unit("eta", eta)
        if eta is None and nw is None and etw is None and self.sigma_y > 0:
            eta = DDNM_PLUS_ETA
        self.nw = _as_unit("nw", nw) if nw is not None else (eta if eta is not None else 0.0)
        self.etw = _as_unit("etw", etw) if etw is not None else (eta if eta is not None
                                                                 else 0.1)
        self.eta = eta if eta is not None else self.etw          # reported (CLI prints it)
        if self.sigma_y > 0 and self.nw != self.etw:
            raise ParameterError(
                f"deqir with sigma_y > 0 runs the DDNM+ update, which has a single η for the "
                f"fresh noise and the ε term: nw ({self.nw:g}) must equal etw ({self.etw:g}); "
                f"pass eta=... (sets both)")
        T = steps = check_steps(steps)       # 3.7 / NaN: ParameterError, never truncated
        strategy = self._resolve_strategy(strategy, window, m, max_iter, mixing)
        if strategy == "published":
            m = PUBLISHED["m"] if m is None else m
            max_iter = PUBLISHED["max_iter"] if max_iter is None else max_iter
            tol = PUBLISHED["tol"] if tol is None else tol
        m = PUBLISHED["m"] if m is None else m
        tol = CONVERGED_TOL if tol is None else tol
        if max_iter is None:            # a cap that makes plain iteration exact (F triangular)
            max_iter = T + 1
        mixing = "state" if mixing is None else mixing
        if strategy in ("published", "anderson"):
            window = None
        elif strategy == "sequential":
            window = 1
        elif strategy == "window" and window in ("auto", None):
            window = AUTO_WINDOW
        elif strategy == "auto":        # by device, at solve time (see _pick)
            window = None
        self.strategy = strategy
        for name, v in (("max_iter", max_iter), ("m", m)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ParameterError(f"{name} must be an integer, got {v!r}")
        check_options(m, lam, beta, tol, max_iter)
        self.m, self.lam, self.beta = int(m), float(lam), float(beta)
        self.tol, self.max_iter = float(tol), int(max_iter)
        if mixing not in ("state", "joint"):
            raise ParameterError(f"mixing must be 'state' (per-state weights, published) or "
                                 f"'joint', got {mixing!r}")
        self.mixing = mixing
        self.chunk, self.window, self.form = check_layout(chunk, window, mixing, form,
                                                          self.sigma_model)
        self.use_svd = bool(svd) and op.has_svd
        warn_inexact_pinv(op, "deqir")      # its map is DDNM's projection (Eq. 13)

        self.schedule = resolve_schedule(schedule, steps)
        self.plan = make_plan(steps, model.num_timesteps, self.schedule)
        self.steps = T = int(steps)
        ks = list(range(T - 1, -1, -1))                   # schedule index of step i
        self.t = [self.plan.timestep(k) for k in ks]
        self.t_next = [self.plan.timestep(k - 1) for k in ks]
        abar = [float(a) for a in model.alphas_cumprod.cpu()]
        ab = lambda t: 1.0 if t < 0 else abar[t]  # noqa: E731
        self.a = [ab(t) for t in self.t]
        self.a_next = [ab(t) for t in self.t_next]
        self._coef = {
            "s": [math.sqrt((1 - a) / a) for a in self.a],
            "e": [math.sqrt(1 - self.etw ** 2) * math.sqrt((1 - a) / a) for a in self.a_next],
            "n": [self.nw * math.sqrt((1 - a) / a) for a in self.a_next],
            "r": [math.sqrt(a) for a in self.a_next],
        }
        if equs:
            if equs == "random":
                raise ParameterError("deqir supports the deterministic EquS groups ('hflip', "
                                     "'vflip', 'rot90', 'shift'); 'random' draws a transform "
                                     "per step")
            self.equs: Equivariance | None = Equivariance(equs, op.x_shape, equs_map_eps_back,
                                                          equs_shift)
            self._flip = [self.equs.transform_for_step(k, None) is not None for k in ks]
        else:
            self.equs, self._flip = None, [False] * T
        self._devices = None if devices is None else resolve_devices(devices)
        self._replicas: dict = {}
        self.residuals: list[float] = []
        self.nfe, self.iterations, self.converged = 0, 0, None
        self.info: dict[str, Any] = {}
        self.ran: str | None = None

    # ------------------------------------------------------------------ strategy
    @staticmethod
    def _resolve_strategy(strategy, window, m, max_iter, mixing) -> str:
        if strategy not in STRATEGIES:
            raise ParameterError(f"strategy must be one of {', '.join(STRATEGIES)}, got "
                                 f"{strategy!r}")
        if strategy != "auto":
            return strategy
        if window is None:                       # explicit: the full Anderson solve
            return "anderson"
        if window != "auto":                     # an explicit window size
            return "window"
        return "auto"

    def _pick(self) -> str:
        """The strategy that runs: ``auto`` resolves here, by device — the sequential chain
        (T evaluations, exact) when every evaluation device is a CPU, where a batch of states
        costs as much as evaluating them one by one; else the sliding window (exact, batched)."""
        if self.strategy != "auto":
            return self.strategy
        cpu = all(torch.device(d).type == "cpu" for d in self.devices)
        self.window = 1 if cpu else AUTO_WINDOW
        return "sequential" if cpu else "window"

    # ------------------------------------------------------------------ network
    @property
    def devices(self) -> list:
        """The devices of the batched evaluation (resolved at each call when the option is
        None, so moving the model after construction is honoured)."""
        return self._devices if self._devices is not None else default_devices(self.model)

    def _eps_batch(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε for a flat batch x (M, C, H, W) at timesteps t (M,), chunked over the devices."""
        eps = eps_on_devices(self.model, x, t, self.devices, self.chunk, self._replicas)
        C = x.shape[1]
        if eps.shape[1] == 2 * C:           # learned-sigma networks: ε is the first half
            eps = eps[:, :C]
        watch = getattr(self, "_watch", None)
        if watch is not None:
            watch.see(eps)
        return eps

    def _eval(self, x_in: torch.Tensor, lo: int):
        """(ε for the x̂0 formula, ε for the re-noising) at the inputs x_in (N, B, C, H, W) of
        steps lo..lo+N-1, in one batched evaluation (EquS transforms applied per row)."""
        N, B = x_in.shape[:2]
        flips = self._flip[lo:lo + N]
        g = self.equs.g if self.equs is not None and any(flips) else None
        if g is not None:
            mask = torch.tensor(flips, device=x_in.device).view(N, 1, 1, 1, 1)
            x_in = torch.where(mask, g.apply(x_in), x_in)
        t = torch.tensor(self.t[lo:lo + N], device=x_in.device).repeat_interleave(B)
        eps = self._eps_batch(x_in.reshape(N * B, *x_in.shape[2:]), t).reshape(x_in.shape)
        self.nfe += N
        if g is None:
            return eps, eps
        assert self.equs is not None                 # g comes from it
        eps_x = torch.where(mask, g.inverse(eps), eps)
        return eps_x, (eps_x if self.equs.map_eps_back else eps)

    # ------------------------------------------------------------------ protocol
    def check_measurement(self, y):
        Sampler.check_measurement(self, y)

    def draw_noises(self, shape, generator: torch.Generator | None = None,
                    dtype=torch.float32, device=None):
        """The fresh noises ξ_0 … ξ_{T-1} of the chain, (T, *shape), drawn one step at a time
        in the order of the sequential sampler (none when nw = 0, as DDNM with η = 0 draws
        none). ``device`` defaults to the generator's."""
        if self.nw == 0:
            return None
        if device is None:
            device = generator.device if generator is not None else "cpu"
        return torch.stack([randn(shape, generator, dtype, device) for _ in range(self.steps)])

    def _check_xT(self, x_T, B):
        if not isinstance(x_T, torch.Tensor) or tuple(x_T.shape) != (B, *self.op.x_shape):
            raise ShapeError(f"x_T must have shape {(B, *self.op.x_shape)}, got "
                             f"{tuple(getattr(x_T, 'shape', ()))}")
        check_start(x_T)

    def prepare(self, y: torch.Tensor, x_T: torch.Tensor, noises=None) -> dict:
        """Precomputations for one measurement: A⁺y, the noise terms, DDNM+ spectra.

        ``noises``: (T, B, C, H, W) from :meth:`draw_noises` (required when nw > 0).
        """
        self.check_measurement(y)
        B = y.shape[0]
        self._check_xT(x_T, B)
        T = self.steps
        dt, dev = y.dtype, y.device
        ctx: dict[str, Any] = {"y": y, "B": B, "dtype": dt, "device": dev, "zeros": {}}
        if self.nw > 0:
            if noises is None:
                raise ParameterError("nw > 0: pass the chain noises (solver.draw_noises(...))")
            if tuple(noises.shape) != (T, B, *self.op.x_shape):
                raise ShapeError(f"noises must have shape {(T, B, *self.op.x_shape)}, got "
                                 f"{tuple(noises.shape)}")
            noises = noises.to(device=dev, dtype=dt)
        else:
            noises = None
        ctx["noises"] = noises
        with torch.no_grad():
            ctx["Apy"] = self.op.pinv(y)
            ctx["coef"] = {k: torch.tensor(v, dtype=dt, device=dev).view(T, 1, 1, 1, 1)
                           for k, v in self._coef.items()}
            if self.form == "cumsum" and noises is not None:
                nul = self._null(noises, ctx)
                n = ctx["coef"]["n"]
                ctx["noise_null"] = n * nul                  # n_i (I-P) ξ_i
                ctx["noise_rng"] = n * (noises - nul)        # n_i P ξ_i
            if self.sigma_model > 0 and self.use_svd:
                s = self.op.singulars().to(dt)
                ctx.update(s=s, s_inv=safe_inverse(s), ut_y=self.op.Ut(y))
        return ctx

    def _null(self, v, ctx):
        """(I − A⁺A) v for v (N, B, C, H, W) (the operator's projection with y = 0)."""
        flat = v.reshape(-1, *v.shape[2:])
        n = flat.shape[0]
        z = ctx["zeros"].get(n)
        if z is None:
            z = ctx["zeros"][n] = torch.zeros((n, *self.op.y_shape), dtype=v.dtype,
                                              device=v.device)
        return self.op.project(flat, z).reshape(v.shape)

    def _step(self, x0, eps_r, xi, i, ctx):
        """One update x̂0 → x_{i+1} (DDNM, or DDNM+ when σ_y > 0)."""
        a_next = self.a_next[i]
        if self.sigma_model == 0:
            proj = self.op.project(x0, ctx["y"])                           # DDNM Eq. 13
            sig = math.sqrt(1 - a_next)
            out = math.sqrt(a_next) * proj + sig * math.sqrt(1 - self.etw ** 2) * eps_r
            return out if xi is None else out + sig * self.nw * xi
        if self.use_svd:
            return ddnm_plus_svd_step(x0, eps_r, self.op, ctx, a_next, self.nw,
                                      self.sigma_model, xi)
        return ddnm_plus_simple_step(x0, eps_r, ctx["y"], self.op, a_next, self.nw,
                                     self.sigma_model, xi)

    def _unrolled(self, x_start, lo: int, eps_x, eps_r, ctx):
        """States lo..lo+N-1 of the chain that starts at ``x_start`` (the input of step lo),
        given the network outputs of those steps (Proposition 1)."""
        N = eps_x.shape[0]
        sl = slice(lo, lo + N)
        noises = ctx["noises"]
        if self.form == "recurrence":
            x, out = x_start, []
            for j in range(N):
                i = lo + j
                x0 = x / math.sqrt(self.a[i]) - self._coef["s"][i] * eps_x[j]
                x = self._step(x0, eps_r[j], None if noises is None else noises[i], i, ctx)
                out.append(x)
            return torch.stack(out)
        c = ctx["coef"]
        s, e, r = c["s"][sl], c["e"][sl], c["r"][sl]
        if eps_x is eps_r:
            nul = self._null(eps_r, ctx)
            v_null = (e - s) * nul                      # (I-P)(e_i - s_i) ε_i
            v_rng = e * (eps_r - nul)                   # P e_j ε_j
        else:                                           # EquS: x̂0 and re-noising ε differ
            w = e * eps_r - s * eps_x
            v_null = self._null(w, ctx)
            v_rng = e * (eps_r - self._null(eps_r, ctx))
        if noises is not None:
            v_null = v_null + ctx["noise_null"][sl]
            v_rng = v_rng + ctx["noise_rng"][sl]
        base = self._null(x_start[None], ctx) / math.sqrt(self.a[lo])   # (I-P) x_start/√a
        return r * (ctx["Apy"][None] + base + torch.cumsum(v_null, 0) + v_rng)

    def F(self, z: torch.Tensor, x_T: torch.Tensor, ctx: dict) -> torch.Tensor:
        """The fixed-point map over the stacked states z (T, B, C, H, W) (z[j] = state after
        step j): one batched network evaluation at (x_T, z_0, …, z_{T-2}), all states updated
        at once. Differentiable in z and x_T under autograd."""
        T = self.steps
        if tuple(z.shape) != (T, ctx["B"], *self.op.x_shape):
            raise ShapeError(f"z must have shape {(T, ctx['B'], *self.op.x_shape)} (T states "
                             f"× batch), got {tuple(z.shape)}")
        x_in = torch.cat([x_T[None], z[:-1]])
        eps_x, eps_r = self._eval(x_in, 0)
        return self._unrolled(x_T, 0, eps_x, eps_r, ctx)

    def output(self, z: torch.Tensor, ctx: dict) -> torch.Tensor:
        """The restored image: the last state, (B, C, H, W)."""
        return z[-1]

    def initial_states(self, x_T: torch.Tensor) -> torch.Tensor:
        """The published starting iterate: x_T in every state."""
        return x_T[None].expand(self.steps, *x_T.shape).clone()

    def solve(self, x_T: torch.Tensor, ctx: dict, z0: torch.Tensor | None = None,
              progress: Callable[[int, int], None] | None = None):
        """Find the fixed point z* = F(z*, x_T) (no graph). Returns (z*, info)."""
        self.nfe = 0
        warm = z0 is not None
        if z0 is None:
            z0 = self.initial_states(x_T)
        elif tuple(z0.shape) != (self.steps, *x_T.shape):
            raise ShapeError(f"z0 must have shape {(self.steps, *x_T.shape)} (T states × "
                             f"batch), got {tuple(z0.shape)}")
        ran = self._pick()
        with torch.no_grad():
            if self.window is None:
                z, info = self._solve_full(x_T, ctx, z0, progress)
                if ran == "published":          # the release returns the last mixed iterate
                    z = info.pop("iterate")
                info.pop("iterate", None)
            else:
                z, info = solve_window(self, x_T, ctx, z0, progress, warm)
        info["nfe"] = self.nfe
        info["strategy"] = self.ran = ran
        self.iterations, self.residuals = info["iterations"], info["residuals"]
        self.converged, self.info = info["converged"], info
        if not info["converged"] and ran != "published":
            warnings.warn(f"DeqIR stopped after {info['iterations']} evaluations of F "
                          f"(max_iter={self.max_iter}) at relative residual "
                          f"{info['residuals'][-1]:.2g} > tol={self.tol:g}: the result "
                          f"approximates the sequential chain; raise max_iter, or use "
                          f"window=... or m=1 (plain fixed-point iteration, exact after "
                          f"T evaluations)", ConvergenceWarning, stacklevel=3)
        if progress is not None:
            progress(self.nfe, self.nfe)
        return z, info

    def _solve_full(self, x_T, ctx, z0, progress):
        T, B = self.steps, ctx["B"]
        shape = z0.shape

        def f(zf):
            return self.F(zf.reshape(shape), x_T, ctx).reshape(T * B, *shape[2:])

        cb = None
        if progress is not None:
            cb = lambda k, r: progress(self.nfe, T * self.max_iter)  # noqa: E731
        z, info = anderson(f, z0.reshape(T * B, *shape[2:]), m=self.m, lam=self.lam,
                           beta=self.beta, tol=self.tol, max_iter=self.max_iter,
                           groups="slot" if self.mixing == "state" else None, callback=cb)
        info["slot_residuals"] = info["slot_residuals"].reshape(T, B)
        info["iterate"] = info["iterate"].reshape(shape)
        return z.reshape(shape), info

    # ------------------------------------------------------------------ entry points
    def _inputs(self, y, x_T, generator, noises):
        self.check_measurement(y)
        B = y.shape[0]
        if x_T is None:
            x_T = randn((B, *self.op.x_shape), generator, y.dtype, y.device)
        else:
            self._check_xT(x_T, B)
        if noises is None and self.nw > 0:
            noises = self.draw_noises(x_T.shape, generator, dtype=y.dtype, device=y.device)
        return x_T, noises

    def sample(self, y: torch.Tensor, x_T: torch.Tensor | None = None,
               generator: torch.Generator | None = None,
               progress: Callable[[int, int], None] | None = None,
               callback=None) -> torch.Tensor:
        """Restore x from y = A x + n. Returns (B, C, H, W) in the model domain (unclamped).

        ``x_T`` (default drawn from ``generator``) and then the chain noises (when nw > 0) are
        drawn in the order of the sequential sampler. ``progress(i, n)``: i network evaluations
        so far of an estimated n. ``callback``: not available — DeqIR updates all steps at
        once (watch :meth:`sequential` with ``return_states=True`` instead).
        """
        if callback is not None:
            raise ParameterError("deqir solves all steps at once, so it has no per-step "
                                 "callback; use progress=, or sequential(return_states=True)")
        x_T, noises = self._inputs(y, x_T, generator, None)
        self._watch: FiniteWatch | None = FiniteWatch()
        try:
            with torch.no_grad():
                ctx = self.prepare(y, x_T, noises)
                z, _ = self.solve(x_T, ctx, progress=progress)
                return check_result(self.output(z, ctx), self.method, self.steps, self._watch)
        finally:
            self._watch = None

    def sequential(self, y: torch.Tensor, x_T: torch.Tensor | None = None,
                   noises: torch.Tensor | None = None,
                   generator: torch.Generator | None = None, return_states: bool = False):
        """The same chain run step by step (T network calls), with the same x_T and noises —
        the reference the fixed point converges to. Returns x0 (B, C, H, W), or the stacked
        states (T, B, C, H, W) with ``return_states``. Sets ``nfe`` = T."""
        x_T, noises = self._inputs(y, x_T, generator, noises)
        self.nfe = 0
        with torch.no_grad():
            ctx = self.prepare(y, x_T, noises)
            x, states = x_T, []
            for i in range(self.steps):
                eps_x, eps_r = self._eval(x[None], i)
                a = self.a[i]
                x0 = (x - math.sqrt(1 - a) * eps_x[0]) / math.sqrt(a)       # DDNM Eq. 12
                x = self._step(x0, eps_r[0], None if ctx["noises"] is None
                               else ctx["noises"][i], i, ctx)
                states.append(x)
        return torch.stack(states) if return_states else x
