"""DeqIR initialisation optimisation: gradients through the fixed point optimise x_T.

DeqIR (Cao et al., CVPR 2024, arXiv 2311.11600, Sec. "initialization optimization") writes the
whole restoration chain as one fixed point z* = F(z*, x_T) over the stacked states, so the
restored image x̂0 = output(z*) is an implicit function of the initial noise x_T and a loss
L(x̂0) can be minimised over x_T alone (Adam), the network and the measurement fixed.

Two gradients of L(output(z*(x_T))) with respect to x_T are implemented:

* ``grad="phantom"`` (the published one; Geng et al., NeurIPS 2021, "On training implicit
  models"). With z* from the solver (no graph) and k damped unrolling steps,

      z_0 = z*  (detached),   z_{j+1} = (1 - τ) z_j + τ F(z_j, x_T),   j = 0..k-1,

  the loss is taken on output(z_k) and back-propagated to x_T. For k = 1 this gives
  dL/dx_T ≈ τ (∂F/∂x_T)ᵀ ∂L/∂z, a cheap approximation of the exact gradient below that drops
  the (I - ∂F/∂z)⁻ᵀ factor; Adam is invariant to the constant τ. Defaults τ = 0.1, k = 1: the
  reference code's command-line defaults (``--tau 0.1 --pg_steps 1``, caojiezhang/DeqIR
  ``main.py``; its ``find_source_noise_deq_sr`` has the same damped loop).
* ``grad="implicit"`` (implicit-function theorem, as the reference's ``..._ift`` variant): solve
  the adjoint fixed point

      gᵀ = gᵀ ∂F/∂z (z*, x_T) + ∂L/∂z (z*)

  by fixed-point iteration (each step one vector–Jacobian product through one evaluation graph
  of F, retained; exact after T + 1 steps because the chain's Jacobian is nilpotent — Anderson
  is available but slower here, see :func:`init_gradient`), then
  dL/dx_T = gᵀ ∂F/∂x_T (+ ∂L/∂x_T where ``output`` reads x_T). The adjoint system is linear and
  is solved for ∂L/∂z scaled to unit norm. Costs one graph of F plus T + 1 backward passes.

What the one-step phantom gradient sees, measured on DeqIR (5 states, Gaussian prior, 8×8
inpainting; the implicit gradient matches central finite differences to ~1e-9): for the MSE to
a target its cosine with the exact gradient is 0.75–0.93, but it is biased — Adam on it stops at
a different point than on the exact gradient. For the consistency loss it is *exactly zero*
under DDNM+ (σ_y > 0): the range of every x̂0 is replaced by the measurement, so ‖A x̂0 − y‖
depends on x_T only through the network outputs at later states, which one damped step holds
fixed. Use ``grad="implicit"`` (or ``pg_steps`` ≥ the number of states) for it. With σ_y = 0
DDNM's result satisfies A x̂0 = y exactly, so the consistency loss is zero (round-off) and
there is nothing to optimise (see ``stop_below``).

Losses (the registry :data:`LOSSES`; each is a per-image mean, reported in ``history``):

* ``"consistency"``: mean((A x̂0 - y)²) over the measurement entries. Needs no ground truth.
* ``"mse"``: mean((x̂0 - target)²) over the pixels, target in model units [-1, 1] (an oracle /
  "control the generation direction" experiment).
* ``"lpips"``: LPIPS-VGG distance to the reference image ``target`` (model units, fed to the
  network without rescaling, as the DeqIR code does); needs ``dmir metrics setup``.
* a callable ``loss(x0) -> (B,) or scalar`` (capture y / targets in a closure).

The optimised objective of the built-in losses is the per-image *sum* of squares (the mean
times the number of entries), summed over the batch: the reference code's
``(x̂0 - x).square().sum(dim=(1, 2, 3))``. This matters for Adam only through its ε = 1e-8:
with a per-pixel mean the gradients of a 256×256 image would be ~2·10⁵ times smaller and ε would
throttle the steps. Images in a batch are optimised independently (Adam is per coordinate).

Adam (β = (0.9, 0.999), ε = 1e-8, lr 2e-5) and at most 2000 iterations follow the reference
configuration (``configs/imagenet.yml``: ``optim.lr: 0.00002``, ``training.n_epochs: 2000``).
Early stopping is ours (the reference stops when the loss falls under a fixed threshold, 0.1 for
LPIPS, which has no meaning for other losses): an iteration *improves* when the batch-mean loss
is below (1 - ``rel_tol``) × the best so far (``rel_tol`` = 1e-4); optimisation stops after
``early_stop`` (default 20) consecutive iterations without improvement, when the loss is at or
under ``stop_below`` (default 1e-10, round-off level), when the gradient is exactly zero, or
after ``iters`` Adam steps. A slow but steady decrease therefore
does not stop early: the improvement is measured against the best recorded value, not
step-to-step. The returned x_T / x̂0 are, per image, those of the lowest loss evaluated (as the
reference keeps ``best_img_src``).

Each outer iteration re-solves the fixed point for the new x_T, warm-started from the previous
z* when the solver's ``solve`` accepts ``z0=`` (otherwise from its own default start). The
stochastic noises of the chain are drawn once and kept fixed, so the loss is a deterministic
function of x_T — up to the solver's tolerance: when a solve stops at ``max_iter`` unconverged,
part of the change between iterations is the warm start converging further, not x_T.

Two options of the release (caojiezhang/DeqIR ``runners/diffusion_inversion.py``,
``functions/latent_space_opt_anderson.py``):

* ``smart_init`` (the release's ``--smart_init``, "further improves results a lot"): start from
  the x_T that deterministic DDIM *inversion* (the release's ``forward_steps``) maps a reference
  image to, over the solver's own timesteps t_0 < … < t_{T-1} (the network is evaluated at
  t_0 … t_{T-2}):

      x_{t'} = √ᾱ_{t'} x̂0 + √(1-ᾱ_{t'}) ε(x_t, t),   x̂0 = (x_t - √(1-ᾱ_t) ε)/√ᾱ_t

  (:func:`ddim_invert`). The release inverts the ground-truth image (an oracle start);
  ``smart_init="target"`` does that with ``target``, ``smart_init="pinv"`` inverts A⁺y instead
  (no ground truth needed).
* ``inner="release"``: each outer iteration's fixed point is found as the release's
  ``find_source_noise_deq_sr`` does — Anderson with m 3, λ 1e-3, β 0.9, tol 1e-2, at most 15
  evaluations, per-state mixing, started from x_T repeated in every state (no warm start) and
  returning the last mixed iterate, i.e. usually *unconverged* — instead of dmir's default
  (``inner="converged"``: the solver's own solve, warm-started from the previous z*). The
  release starts from its optimised stack, whose rows other than x_T keep the initial noise;
  dmir repeats the current x_T.

The solver protocol used here (``dmir.solvers.deqir.DeqIR``): ``draw_noises(shape, generator)``,
``prepare(y, x_T, noises) -> ctx``, ``F(z, x_T, ctx)`` (differentiable in z and x_T),
``solve(x_T, ctx[, z0=]) -> (z*, info)``, ``output(z, ctx) -> x̂0`` and the operator ``op``.
``prepare`` is called again for every new x_T (without a graph), and gradients to x_T flow only
through the ``x_T`` argument of ``F`` (and of ``output``, if it takes one).
"""
from __future__ import annotations

import inspect
import math
import warnings
from typing import Any, Callable, NamedTuple

import torch

from ..rng import randn
from ..errors import ParameterError, ShapeError, UnknownNameError

__all__ = ["optimize_init", "init_gradient", "LOSSES", "LossSpec", "loss_names", "LR", "ITERS",
           "TAU", "PG_STEPS", "PATIENCE", "REL_TOL", "STOP_BELOW", "ddim_invert", "INNER",
           "SMART_INITS", "RELEASE_INNER"]

#: defaults: the reference code's Adam lr, n_epochs, phantom damping τ and unrolled steps
#: (caojiezhang/DeqIR configs/imagenet.yml, main.py); patience and rel_tol are ours
LR, ITERS, TAU, PG_STEPS = 2e-5, 2000, 0.1, 1
PATIENCE, REL_TOL = 20, 1e-4
#: a loss at round-off level is not optimised further (Adam would amplify round-off gradients
#: into full-size steps): e.g. noise-free DDNM satisfies A x̂0 = y exactly
STOP_BELOW = 1e-10
#: inner fixed-point solves: dmir's converged one, or the release's unconverged Anderson
INNER = ("converged", "release")
#: the release's inner Anderson (find_source_noise_deq_sr)
RELEASE_INNER = {"m": 3, "lam": 1e-3, "beta": 0.9, "tol": 1e-2, "max_iter": 15}
#: what ``smart_init`` inverts: the target image (release) or A⁺y
SMART_INITS = ("target", "pinv")


def ddim_invert(solver, x0: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM inversion of ``x0`` (model units, (B, C, H, W)) over the solver's
    timesteps, ascending: the release's ``forward_steps``; returns x_T."""
    from .equivariance import predict

    ts = sorted(solver.t)
    abar = solver.model.alphas_cumprod
    x = x0
    with torch.no_grad():
        for t, t_next in zip(ts[:-1], ts[1:]):
            a, a_next = float(abar[t]), float(abar[t_next])
            x0_hat, eps = predict(solver.model, x, t, a, None)
            x = a_next ** 0.5 * x0_hat + (1 - a_next) ** 0.5 * eps
    return x


def _release_solve(solver, x_T, ctx):
    """The release's inner solve (module docstring): unconverged Anderson, last iterate."""
    from .anderson import anderson

    solver.nfe = 0
    z0 = solver.initial_states(x_T)
    shape = z0.shape
    flat = (shape[0] * shape[1], *shape[2:])

    def f(zf):
        return solver.F(zf.reshape(shape), x_T, ctx).reshape(flat)

    _, info = anderson(f, z0.reshape(flat), groups="slot", **RELEASE_INNER)
    z = info.pop("iterate").reshape(shape)
    info["inner"] = "release"
    info["converged"] = None        # not a convergence claim: the release stops by design
    return z, info


# ----------------------------------------------------------------------------- losses
def _consistency(x0, y, op, target):
    r = op.A(x0) - y
    return r.pow(2).flatten(1).mean(1)


def _mse(x0, y, op, target):
    return (x0 - target).pow(2).flatten(1).mean(1)


_LPIPS_NET: dict = {}


def _lpips(x0, y, op, target):
    """LPIPS-VGG distance to the reference image, on model-domain ([-1, 1]) images as the
    DeqIR code feeds them; the weights come from ``dmir metrics setup`` (a clear
    WeightsNotSetUpError otherwise)."""
    if "vgg" not in _LPIPS_NET:
        from ..metrics.lpips import LPIPS
        _LPIPS_NET["vgg"] = LPIPS("vgg", input_range="model")
    net = _LPIPS_NET["vgg"]
    net.to(x0.device)
    return net.distance(x0, target.expand_as(x0))

class LossSpec(NamedTuple):
    """A registered loss. ``fn(x0, y, op, target) -> (B,)`` is the per-image value that is
    reported; the optimised objective is ``scale(op) * fn(...)`` summed over the batch (the
    number of squared entries for the squared errors: the per-image sum of squares)."""
    fn: Callable
    needs_target: bool
    available: bool
    scale: Callable


def _numel(shape) -> float:
    return float(math.prod(shape))


#: The loss registry: name → LossSpec (per-image value, needs a target, available, scale).
LOSSES: dict[str, LossSpec] = {
    "consistency": LossSpec(_consistency, False, True, lambda op: _numel(op.y_shape)),
    "mse": LossSpec(_mse, True, True, lambda op: _numel(op.x_shape)),
    "lpips": LossSpec(_lpips, True, True, lambda op: 1.0),
}


def loss_names() -> list[str]:
    return list(LOSSES)


class _Loss:
    """A resolved loss: ``per_image(x0)`` → (B,) reported values; ``objective(x0)`` → scalar."""

    def __init__(self, loss, y, op, target, batch: int):
        self.y, self.op, self.target, self.B = y, op, target, batch
        if callable(loss):
            self.name, self.fn, self.spec = getattr(loss, "__name__", "custom"), loss, None
            return
        if not isinstance(loss, str) or loss not in LOSSES:
            raise UnknownNameError(f"unknown init-optimisation loss {loss!r}; available: "
                                   f"{', '.join(n for n, e in LOSSES.items() if e.available)} "
                                   f"or a callable loss(x0)")
        spec = LOSSES[loss]
        if not spec.available:
            raise ParameterError(f"loss {loss!r} is not available")
        if spec.needs_target and target is None:
            raise ParameterError(f"loss {loss!r} needs target= (an image (B, C, H, W) in model "
                                 f"units [-1, 1]); 'consistency' needs none")
        self.name, self.fn, self.spec = loss, spec.fn, spec
        self.scale = spec.scale(op)

    def _raw(self, x0):
        if self.spec is not None:
            return self.fn(x0, self.y, self.op, self.target)
        v = self.fn(x0)
        if not isinstance(v, torch.Tensor) or v.dim() > 1 or (v.dim() == 1
                                                             and v.shape[0] != self.B):
            raise ShapeError(f"a custom loss must return a scalar tensor or one value per image "
                             f"({self.B},), got {getattr(v, 'shape', type(v).__name__)}")
        return v

    def per_image(self, x0):
        v = self._raw(x0)
        return v.expand(self.B) if v.dim() == 0 else v

    def objective(self, x0):
        v = self._raw(x0)
        return v.sum() * self.scale if self.spec is not None else v.sum()


# ----------------------------------------------------------------------------- solver protocol
def _output(solver, z, ctx, x_T):
    """``solver.output(z, ctx)``; passes x_T too when the solver's ``output`` takes it."""
    params = inspect.signature(solver.output).parameters
    if "x_T" in params:
        return solver.output(z, ctx, x_T=x_T)
    return solver.output(z, ctx)


def _solve(solver, x_T, ctx, z0):
    """``solver.solve(x_T, ctx)``, warm-started from ``z0`` when ``solve`` accepts ``z0=``."""
    if z0 is not None and "z0" in inspect.signature(solver.solve).parameters:
        return solver.solve(x_T, ctx, z0=z0)
    return solver.solve(x_T, ctx)


def _adjoint_solve(f, g0, tol, max_iter, method):
    """Solve g = f(g) (the linear adjoint fixed point). Returns (g, relative residual)."""
    if method == "anderson":
        from .anderson import anderson  # the shared Anderson solver (dmir/solvers/anderson.py)

        g, _ = anderson(f, g0, tol=tol, max_iter=max_iter)
    elif method == "iteration":         # plain fixed-point iteration (exact in T + 1 steps for
        g = g0                          # a strictly triangular chain Jacobian)
        for _ in range(max_iter):
            g_new = f(g)
            step = float((g_new - g).norm())
            g = g_new
            if step <= tol * float(g_new.norm()):
                break
    else:
        raise ParameterError(f"adjoint solver must be 'anderson' or 'iteration', got "
                             f"{method!r}")
    res = float((f(g) - g).norm()) / (float(g.norm()) + 1e-30)
    return g, res


# ----------------------------------------------------------------------------- one gradient
def init_gradient(solver, x_T, ctx, z_star, loss, grad: str = "phantom", tau: float = TAU,
                  pg_steps: int = PG_STEPS, adjoint_tol: float = 0.0,
                  adjoint_max_iter: int | None = None, adjoint_solver: str = "iteration"):
    """The gradient of ``loss`` at output(z*) with respect to ``x_T`` (see the module doc).

    ``loss`` is a :class:`_Loss` or any callable mapping x̂0 to a scalar objective.
    ``z_star`` is the fixed point for ``x_T`` (no graph needed). Returns (grad, info) with
    ``info["adjoint_residual"]`` for ``grad="implicit"``. Model parameters never get ``.grad``.

    Adjoint solve (``grad="implicit"``): ``adjoint_solver="iteration"`` (default) is the plain
    iteration g ← Jᵀg + v. DeqIR's Jacobian ∂F/∂z is strictly block-triangular (state j reads
    only states before it), hence nilpotent: the iteration is exact after T + 1 steps and stops
    there (update exactly zero; ``adjoint_tol`` = 0). Its partial sums are huge before that
    (measured: relative error 10³ after 5 of 25 steps), and Anderson mixing does not help on
    this system (m = 5: relative error 0.1–2 after 30 steps for T = 25, where the plain
    iteration is exact) — so ``adjoint_max_iter`` defaults to ``solver.steps + 1`` (50 for a
    solver without ``steps``). ``"anderson"`` uses :func:`dmir.solvers.anderson.anderson`
    (joint mixing, for general contractive maps).
    """
    objective = loss.objective if isinstance(loss, _Loss) else loss
    xT = x_T.detach().requires_grad_(True)
    zs = z_star.detach()
    info = {}
    with torch.enable_grad():
        if grad == "phantom":
            z = zs
            for _ in range(int(pg_steps)):          # damped unrolling, Geng et al. 2021
                z = (1 - tau) * z + tau * solver.F(z, xT, ctx)
            L = objective(_output(solver, z, ctx, xT))
            (g,) = torch.autograd.grad(L, xT, allow_unused=True)
            g = torch.zeros_like(xT) if g is None else g
        elif grad == "implicit":
            zl = zs.clone().requires_grad_(True)
            L = objective(_output(solver, zl, ctx, xT))
            v, direct = torch.autograd.grad(L, (zl, xT), allow_unused=True)
            v = torch.zeros_like(zl) if v is None else v.detach()
            zf = zs.clone().requires_grad_(True)
            Fz = solver.F(zf, xT, ctx)               # one graph of F, reused by every VJP
            # the adjoint system is linear: solve it for v/‖v‖ so that the Anderson solver's
            # absolute regularisation λ and its 1e-5 in the residual see unit-scale vectors
            vn = float(v.norm())
            vs = v / vn if vn > 0 else v

            def adj(gv):                              # gᵀ ↦ gᵀ ∂F/∂z + ∂L/∂z (scaled)
                (jt,) = torch.autograd.grad(Fz, zf, gv, retain_graph=True, allow_unused=True)
                return vs if jt is None else jt + vs

            if vn > 0:
                n_it = adjoint_max_iter or int(getattr(solver, "steps", 49)) + 1
                gz, res = _adjoint_solve(adj, vs.clone(), adjoint_tol, n_it, adjoint_solver)
                gz = gz * vn
            else:                                     # ∂L/∂z = 0: nothing flows back
                gz, res = v, 0.0
            info["adjoint_residual"] = res
            (g,) = torch.autograd.grad(Fz, xT, gz, allow_unused=True)
            g = torch.zeros_like(xT) if g is None else g
            if direct is not None:
                g = g + direct
        else:
            raise ParameterError(f"grad must be 'phantom' or 'implicit', got {grad!r}")
    return g.detach(), info


# ----------------------------------------------------------------------------- the loop
def optimize_init(solver, y: torch.Tensor, x_T: torch.Tensor | None = None,
                  loss="consistency", target: torch.Tensor | None = None, lr: float = LR,
                  iters: int = ITERS, tau: float = TAU, grad: str = "phantom",
                  early_stop: int | None = PATIENCE, rel_tol: float = REL_TOL,
                  stop_below: float | None = STOP_BELOW, generator: torch.Generator | None = None,
                  noises=None, progress: Callable[[int, int], None] | None = None,
                  pg_steps: int = PG_STEPS, adjoint_tol: float = 0.0,
                  adjoint_max_iter: int | None = None, adjoint_solver: str = "iteration",
                  smart_init: str | None = None, inner: str = "converged"):
    """Optimise DeqIR's initial noise x_T with Adam on a loss of the restored image.

    Args:
        solver: a DeqIR solver (the protocol in the module doc).
        y: the measurement (B, *op.y_shape).
        x_T: the starting noise (B, *op.x_shape); drawn from ``generator`` when None (before
            the chain noises, as sampling does).
        loss: "consistency" (default), "mse" (needs ``target``), "lpips" (needs ``target``)
            or a callable ``loss(x0) -> (B,) or scalar``.
        target: the target image (B or 1, C, H, W) in model units, for "mse" / "lpips".
        lr: Adam learning rate (2e-5, the reference configuration; small images and analytic
            priors need far larger values).
        iters: maximum number of Adam steps (2000, the reference's n_epochs); the loss is
            evaluated iters + 1 times (before the first step and after each).
        tau, pg_steps: phantom-gradient damping and number of unrolled steps (0.1, 1).
        grad: "phantom" (published) or "implicit" (adjoint fixed point).
        early_stop: patience in iterations without a relative improvement of ``rel_tol``
            (None or 0: never stop early). ``stop_below``: stop once the batch-mean loss is
            ≤ it (default 1e-10, round-off level; None: never).
        generator: draws x_T (if None) and the chain noises (if ``noises`` is None), once.
        progress: ``progress(i, n)`` after each loss evaluation, i = 1..n (n = iters + 1).
        adjoint_*: the adjoint solve of ``grad="implicit"`` (relative tolerance, iterations,
            "iteration" or "anderson"; see :func:`init_gradient`).
        smart_init: None, "target" (the release's --smart_init: x_T = DDIM inversion of
            ``target``) or "pinv" (of A⁺y); not together with ``x_T``.
        inner: "converged" (dmir: the solver's solve, warm-started) or "release" (Anderson
            m 3, β 0.9, tol 1e-2, ≤ 15 evaluations, the last iterate; module docstring).

    Returns:
        (x0, x_T_opt, history): the restoration (B, C, H, W) and x_T of the lowest loss per
        image, and a dict with ``loss`` (batch-mean loss per evaluation; index 0 = before
        optimisation), ``loss_per_image`` (list of (B,) lists), ``grad_norm``, ``solver_info``
        (the last solve's info), ``best_iter`` (per image), ``steps`` (Adam steps taken),
        ``x0_start`` (the restoration from the initial x_T, before any step), ``nfe``
        (network evaluations per image in all, from ``solver.nfe``, which each solve resets),
        ``stopped`` ("early_stop", "stop_below", "zero_grad" — the gradient is exactly zero,
        nothing would change — or "iters"), ``unconverged_solves`` (solves whose info says
        ``converged: False``; warnings from the solves are gathered into one per kind, issued
        at the end with their count), ``warm_start`` (bool) and, for
        implicit gradients, ``adjoint_residual``.
    """
    op = solver.op
    if not isinstance(y, torch.Tensor) or y.dim() < 1:
        raise ShapeError(f"y must be a tensor (B, *y_shape), got {type(y).__name__}")
    B = y.shape[0]
    shape = (B, *op.x_shape)
    if inner not in INNER:
        raise ParameterError(f"inner must be one of {', '.join(INNER)}, got {inner!r}")
    if smart_init is not None:
        if smart_init not in SMART_INITS:
            raise ParameterError(f"smart_init must be None or one of {', '.join(SMART_INITS)}, "
                                 f"got {smart_init!r}")
        if x_T is not None:
            raise ParameterError("give x_T or smart_init, not both")
        if smart_init == "target" and target is None:
            raise ParameterError("smart_init='target' inverts the target image: give target=")
        ref = op.pinv(y) if smart_init == "pinv" else torch.as_tensor(target).to(
            device=y.device, dtype=y.dtype).expand(shape)
        if tuple(ref.shape) != shape:
            raise ShapeError(f"target must have shape ({B} or 1, "
                             f"{', '.join(map(str, op.x_shape))}), got {tuple(ref.shape)}")
        x_T = ddim_invert(solver, ref.contiguous())
    if x_T is None:
        x_T = randn(shape, generator, y.dtype, y.device)
    elif tuple(x_T.shape) != shape:
        raise ShapeError(f"x_T must have shape {shape}, got {tuple(x_T.shape)}")
    if target is not None:
        target = torch.as_tensor(target).to(device=y.device, dtype=y.dtype)
        if target.dim() != 4 or tuple(target.shape[1:]) != tuple(op.x_shape) \
                or target.shape[0] not in (1, B):
            raise ShapeError(f"target must have shape ({B} or 1, "
                             f"{', '.join(map(str, op.x_shape))}), got {tuple(target.shape)}")
    _check(lr=lr, iters=iters, tau=tau, grad=grad, early_stop=early_stop, rel_tol=rel_tol,
           pg_steps=pg_steps)
    L = _Loss(loss, y, op, target, B)              # validates the name / target first

    if noises is None:       # after x_T, as sampling draws them; y's dtype/device if accepted
        dn = inspect.signature(solver.draw_noises).parameters
        kw = {k: v for k, v in (("dtype", y.dtype), ("device", y.device)) if k in dn}
        noises = solver.draw_noises(tuple(x_T.shape), generator, **kw)
    warm = inner == "converged" and "z0" in inspect.signature(solver.solve).parameters
    xT = x_T.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([xT], lr=lr, betas=(0.9, 0.999), eps=1e-8)
    hist: dict[str, Any] = {"loss": [], "loss_per_image": [], "grad_norm": [], "steps": 0, "stopped": "iters",
            "warm_start": warm, "solver_info": None, "lr": lr, "loss_name": L.name,
            "grad": grad, "unconverged_solves": 0, "inner": inner, "smart_init": smart_init}
    if grad == "implicit":
        hist["adjoint_residual"] = []
    best = torch.full((B,), math.inf, dtype=torch.float64)
    best_iter = [0] * B
    best_x0: torch.Tensor | None = None
    best_xT: torch.Tensor | None = None
    best_mean, since = math.inf, 0
    z, nfe = None, 0
    seen: dict[tuple, tuple] = {}
    total = int(iters) + 1
    for i in range(total):
        x_cur = xT.detach()
        if i > 0:                    # solve resets solver.nfe: count what the last step used
            nfe += getattr(solver, "nfe", 0)
        with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")     # one summary at the end, not one per solve
            ctx = solver.prepare(y, x_cur, noises)
            z, info = (_release_solve(solver, x_cur, ctx) if inner == "release" else
                       _solve(solver, x_cur, ctx, z if warm else None))
            x0 = _output(solver, z, ctx, x_cur)
            per = L.per_image(x0).detach().to("cpu", torch.float64)
        for w in caught:
            key = (w.category, str(w.message).split(":")[0])
            first, count = seen.get(key, (w, 0))
            seen[key] = (first, count + 1)
        if isinstance(info, dict) and info.get("converged") is False:
            hist["unconverged_solves"] += 1
        hist["solver_info"] = info
        hist["loss_per_image"].append(per.tolist())
        mean = float(per.mean())
        hist["loss"].append(mean)
        if not math.isfinite(mean):
            raise ParameterError(f"initialisation optimisation diverged at iteration {i} "
                                 f"(loss {mean}); lower the learning rate (lr={lr:g})")
        better = per < best
        if best_x0 is None or best_xT is None:
            best_x0, best_xT = x0.detach().clone(), x_cur.clone()
            hist["x0_start"] = best_x0
        else:
            m = better.to(x0.device).view(B, *([1] * (x0.dim() - 1)))
            best_x0 = torch.where(m, x0.detach(), best_x0)
            best_xT = torch.where(m, x_cur, best_xT)
        for b in range(B):
            if better[b]:
                best_iter[b] = i
        best = torch.where(better, per, best)
        if progress is not None:
            progress(i + 1, total)
        # -- stopping rules (evaluated on the batch-mean loss)
        if mean < best_mean * (1 - rel_tol) or best_mean == math.inf:
            best_mean, since = mean, 0
        else:
            since += 1
        if stop_below is not None and mean <= stop_below:
            hist["stopped"] = "stop_below"
            break
        if early_stop and since >= early_stop:
            hist["stopped"] = "early_stop"
            break
        if i == total - 1:
            break
        # -- one Adam step on x_T
        g, ginfo = init_gradient(solver, x_cur, ctx, z, L, grad=grad, tau=tau,
                                 pg_steps=pg_steps, adjoint_tol=adjoint_tol,
                                 adjoint_max_iter=adjoint_max_iter,
                                 adjoint_solver=adjoint_solver)
        if "adjoint_residual" in ginfo:
            hist["adjoint_residual"].append(ginfo["adjoint_residual"])
        hist["grad_norm"].append(float(g.norm()))
        if not bool(g.any()):       # nothing reaches x_T (e.g. the one-step phantom gradient
            hist["stopped"] = "zero_grad"   # of the consistency loss under DDNM+, see above)
            break
        opt.zero_grad(set_to_none=True)
        xT.grad = g.to(xT.dtype)
        opt.step()
        hist["steps"] += 1
    hist["best_iter"] = best_iter
    hist["nfe"] = nfe + getattr(solver, "nfe", 0)
    n_solves = len(hist["loss"])
    for w, count in seen.values():
        warnings.warn(f"{count} of {n_solves} fixed-point solves during the initialisation "
                      f"optimisation warned; the first: {w.message}"
                      + ("; the loss history then mixes the effect of x_T with the solver's "
                         "convergence (warm starts converge further each iteration)"
                         if hist["unconverged_solves"] else ""), w.category, stacklevel=2)
    return best_x0, best_xT, hist


def _check(lr, iters, tau, grad, early_stop, rel_tol, pg_steps):
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ParameterError(f"lr must be a positive number, got {lr!r}")
    if not (isinstance(iters, int) and iters >= 0):
        raise ParameterError(f"iters must be an integer ≥ 0, got {iters!r}")
    if not (0 < tau <= 1):
        raise ParameterError(f"tau (phantom-gradient damping) must be in (0, 1], got {tau!r}")
    if grad not in ("phantom", "implicit"):
        raise ParameterError(f"grad must be 'phantom' or 'implicit', got {grad!r}")
    if early_stop is not None and (not isinstance(early_stop, int) or early_stop < 0):
        raise ParameterError(f"early_stop must be None or an integer ≥ 0 (patience), got "
                             f"{early_stop!r}")
    if not (0 <= rel_tol < 1):
        raise ParameterError(f"rel_tol must be in [0, 1), got {rel_tol!r}")
    if not (isinstance(pg_steps, int) and pg_steps >= 1):
        raise ParameterError(f"pg_steps must be an integer ≥ 1, got {pg_steps!r}")
