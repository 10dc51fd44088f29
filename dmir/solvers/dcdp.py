"""DCDP, pixel space (Li, Kwon, Alkhouri, Ravishankar & Qu, "Decoupled Data Consistency with
Diffusion Purification for Image Restoration", arXiv 2403.06054), as in the released code
(Morefre/Decoupled-Data-Consistency-with-Diffusion-Purification-for-Image-Restoration,
``dcdp.py`` and ``purification_configurations/*.yaml``).

DCDP does not run a diffusion chain guided by y. It alternates, for k = 0 … K-1, two decoupled
phases (the paper's Algorithm 1, as the release implements it — equation numbers of the
paper were not checked against its text, so none are cited; see :meth:`DCDP.outer_step`):

1. Reconstruction (data consistency) — starting at v_k (v_0 = 0 in the release), τ steps of a
   first-order optimiser (SGD with momentum 0.9, or Adam) on

       L(x) = mean((A(x) - y)²) + μ · mean((x - v_k)²)

   the mean taken over the elements of one sample's measurement (``torch.nn.MSELoss`` in the
   release, batch size 1). Only the gradient of A is used, through autograd, so any
   differentiable — also nonlinear — operator works. The optimiser state is fresh every outer
   iteration.
2. Refinement (diffusion purification) — with the level t*_k of the purification schedule,
   re-noise with fresh noise z to index t*_k - 1 of the model's schedule,

       x_{t*} = √ᾱ x + √(1-ᾱ) z,                ᾱ = ᾱ_{t*_k - 1}

   then denoise back to a clean image v_{k+1}:

   * ``purifier="ddim"`` (the paper's default): deterministic DDIM (η = 0) over
     n = min(ddim_steps_max, t*) timesteps of 0 … t*-1 (guided-diffusion's ``space_timesteps``
     spacing), x̂0 clipped to [-1, 1] at every step and ε recomputed from the clipped x̂0 —
     n network evaluations;
   * ``purifier="tweedie"`` (the release's ``full_ddim: False``): one Tweedie step, v_{k+1} =
     clip(x̂0(x_{t*}, t* - 1)) — one network evaluation.
   * ``purifier="consistency"`` (alias ``"cm"``; the default for a consistency model,
     :class:`dmir.models.nets.consistency.ConsistencyPrior`): one evaluation of the consistency
     function, v_{k+1} = clip(D(x + σ z, σ)) with σ = √((1-ᾱ)/ᾱ), ᾱ = ᾱ_{t*_k - 1} of the
     prior's VP schedule — one network evaluation. The re-noising is written in the CM's own
     variance-exploding parametrisation; x + σ z is exactly x_{t*}/√ᾱ, the VP state above
     rescaled, i.e. the same signal-to-noise ratio as DDIM/Tweedie purification at t*. So
     the purification strength of a level t* (and the released T0 = 400/700 presets, tuned as
     indices of the 1000-step linear schedule of the ADM priors) means the same for every
     purifier, which a direct σ schedule would not give. No 1 → 2 bump: a consistency
     function is evaluated at exactly the noise level that was added (σ ≥ 0.01 at t* = 1).

   A level t* = 1 is bumped to 2 after the re-noising and before the denoiser is built, as in
   the release (so noise is added at index 0 and DDIM runs over indices {1, 0}).

NFE = Σ_k min(ddim_steps_max, t*_k) (DDIM) or K (Tweedie, consistency). The output is v_K.

Purification schedules (t*_0 … t*_{K-1} from T0 down to T_end; with u_k = k/(K-1)):

* ``linear`` (all the paper's results): t*_k = round((1-u_k)(T0-T_end)) + T_end; 0 → 1.
* ``constant``: t*_k = T0.
* ``cosine``: t*_k = round(cos²(π u_k/2)(T0-T_end)) + T_end; 0 → 1.
* ``bias_t1``: round(sin(π/2 · (1-u_k)) (T0-T_end)) + T_end, flipped (more time at high t*).
* ``bias_t0``: round((sin(π/2 · ((1-u_k) - 1)) + 1)(T0-T_end)) + T_end (more time at low t*).
* ``reverse_cosine``: 2·linear - cosine; 0 → 1.

Released per-task settings (verified in the released YAML files; all SGD, momentum 0.9, DDIM
with at most 20 steps, linear schedule down to T_end, no proximal term):

=================  ===  ===  =====  ====  =====
preset             K    τ    lr     T0    T_end
=================  ===  ===  =====  ====  =====
deblur_gauss       10   100  1e5    400   0
deblur_motion      10   100  1e5    400   0
sr4                10   100  1e3    400   0
inpainting         20   50   1e3    700   0
phase_retrieval    200  100  500    1000  20
nonlinear_deblur   200  100  300    1000  50
=================  ===  ===  =====  ====  =====

(phase_retrieval, nonlinear_deblur: ``purification_config_phase_retrieval.yaml`` and
``..._nonlinear_deblur.yaml``, for the nonlinear :class:`dmir.operators.PhaseRetrieval` and
:class:`dmir.operators.NonlinearBlur`; the release's README reports 28.45 and 29.19 dB PSNR on
100 FFHQ images.) (One version of the released Gaussian-deblur YAML has τ = 10; the other and the motion-deblur
file have τ = 100, which we use.) Because the loss is a *mean*, the effective step is
lr · 2/M for M measurement elements: the released values were tuned for 256×256 RGB images
(M_ref = 196 608 for deblurring and for DPS's full-size masked inpainting y, 12 288 for ×4 SR).
When ``lr`` is not given, dmir uses lr_preset · M/M_ref, which is the released step exactly at
that size and the same per-entry step at any other size (and for dmir's gathered inpainting
measurement); an explicit ``lr`` is used as given.

Noise: σ_y is accepted for the common ``build`` signature and stored, but DCDP's update does
not use it (the release only uses it to synthesise y). The DPS/DCDP protocol σ = 0.05 in [-1, 1]
is ``sigma_y = 0.025`` in dmir's pixel units (:mod:`dmir.operators.noise`).

Deviations from the release, on purpose:

* Batches: the release runs batch size 1. We sum the per-sample mean losses, so every sample
  sees exactly the release's gradient and samples stay independent.
* Precision: the release runs purification under CUDA autocast (fp16); we use the model's dtype.
* ``init="pinv"`` (start from A⁺y) is offered as an option; the release starts from zeros.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from ..rng import randn
from ..errors import ParameterError, ShapeError, UnknownNameError
from .base import FiniteWatch, Sampler, _as_unit, check_result, require_linear
from .dps import ddpm_step
from .equivariance import predict

#: released per-task settings (purification_configurations/*.yaml): K, tau, lr, T0
#: M_ref: the number of measurement entries the released lr was tuned for (256×256 RGB; the
#: DPS inpainting y is the full masked image)
DCDP_PRESETS: dict[str, dict[str, float]] = {
    "deblur_gauss": {"K": 10, "tau": 100, "lr": 1e5, "T0": 400, "M_ref": 3 * 256 * 256},
    "deblur_motion": {"K": 10, "tau": 100, "lr": 1e5, "T0": 400, "M_ref": 3 * 256 * 256},
    "sr4": {"K": 10, "tau": 100, "lr": 1e3, "T0": 400, "M_ref": 3 * 64 * 64},
    "inpainting": {"K": 20, "tau": 50, "lr": 1e3, "T0": 700, "M_ref": 3 * 256 * 256},
    # purification_config_phase_retrieval.yaml (ddim_end_timestep 20); y = |F(pad x)| with
    # pad 64 at 256: 3 × 384 × 384 entries
    "phase_retrieval": {"K": 200, "tau": 100, "lr": 500, "T0": 1000, "T_end": 20,
                        "M_ref": 3 * 384 * 384},
    # purification_config_nonlinear_deblur.yaml (ddim_end_timestep 50)
    "nonlinear_deblur": {"K": 200, "tau": 100, "lr": 300, "T0": 1000, "T_end": 50,
                         "M_ref": 3 * 256 * 256},
}
#: dmir operator name → preset used when no ``task`` is given
_OP_PRESET = {"deblur_gauss": "deblur_gauss", "deblur": "deblur_gauss",
              "deblur_aniso": "deblur_gauss", "deblur_uni": "deblur_gauss",
              "deblur_motion": "deblur_motion", "inpainting": "inpainting",
              "sr_bicubic": "sr4", "sr_bicubic_aa": "sr4", "sr_averagepooling": "sr4",
              # the DPS/DCDP protocol operators (dmir.operators.dps_protocol)
              "deblur_dps_gauss": "deblur_gauss", "deblur_dps_motion": "deblur_motion",
              "sr_matlab_bicubic": "sr4", "inpainting_box": "inpainting",
              "inpainting_random": "inpainting", "phase_retrieval": "phase_retrieval",
              "nonlinear_blur": "nonlinear_deblur"}
#: preset for operators the release did not cover
DCDP_DEFAULT_PRESET = "sr4"

SCHEDULES = ("linear", "constant", "cosine", "bias_t1", "bias_t0", "reverse_cosine")
PURIFIERS = ("ddim", "tweedie", "consistency", "none")
_PURIFIER_ALIASES = {"cm": "consistency"}
OPTIMIZERS = ("sgd", "adam")
INITS = ("zeros", "pinv")


def purification_schedule(K: int, T0: int, T_end: int = 0, kind: str = "linear") -> list[int]:
    """The purification levels t*_0 … t*_{K-1} (release ``Purification_Schedule``)."""
    if kind not in SCHEDULES:
        raise ParameterError(f"dcdp: schedule must be one of {', '.join(SCHEDULES)}, got "
                             f"{kind!r}")
    if K > T0:
        raise ParameterError(f"dcdp: K ({K}) must be ≤ T0 ({T0}) (as in the release)")
    span = T0 - T_end
    u = np.linspace(0.0, 1.0, K)

    def rnd(v, nudge=0.0):  # linear: +1e-6 as in the release (halves round up)
        return np.round(v + nudge).astype(np.int64)

    if kind == "constant":
        return [int(T0)] * K
    if kind == "linear":
        t = rnd(u * span, 1e-6)[::-1] + T_end
    elif kind == "cosine":
        t = rnd(np.cos(u * np.pi / 2) ** 2 * span) + T_end
    elif kind == "bias_t1":
        t = rnd(np.sin(u * np.pi / 2) * span)[::-1] + T_end
    elif kind == "bias_t0":
        t = rnd((np.sin((u - 1) * np.pi / 2) + 1) * span)[::-1] + T_end
    else:   # reverse_cosine
        lin = np.array(purification_schedule(K, T0, T_end, "linear"))
        cos = np.array(purification_schedule(K, T0, T_end, "cosine"))
        t = 2 * lin - cos
    t = np.array(t)
    t[t == 0] = 1
    return [int(v) for v in t]


def ddim_timesteps(t_star: int, n: int) -> list[int]:
    """Indices 0 … t*-1 kept by guided-diffusion's ``space_timesteps(t*, n)``, descending."""
    stride = 1.0 if n <= 1 else (t_star - 1) / (n - 1)
    cur, out = 0.0, []
    for _ in range(n):
        out.append(round(cur))
        cur += stride
    return sorted(set(out), reverse=True)


def purification_nfe(t_star: int, purifier: str, ddim_steps_max: int = 20) -> int:
    """Network evaluations of one purification at level t* (after the 1 → 2 bump)."""
    if purifier == "none":
        return 0
    if purifier in ("tweedie", "consistency"):
        return 1
    return min(ddim_steps_max, max(t_star, 2))


def _int(name, v, lo):
    try:
        iv = int(v)
    except (TypeError, ValueError):
        raise ParameterError(f"dcdp: {name} must be an integer ≥ {lo}, got {v!r}") from None
    if iv != v or iv < lo:
        raise ParameterError(f"dcdp: {name} must be an integer ≥ {lo}, got {v!r}")
    return iv


def _float(name, v, positive=False):
    try:
        fv = float(v)
    except (TypeError, ValueError):
        raise ParameterError(f"dcdp: {name} must be a number, got {v!r}") from None
    if not math.isfinite(fv) or fv < 0 or (positive and fv == 0):
        raise ParameterError(f"dcdp: {name} must be a finite number {'>' if positive else '≥'} "
                             f"0, got {v!r}")
    return fv


class DCDP:
    """Decoupled data consistency with diffusion purification (pixel space).

    Args:
        model: a prior with ``eps(x_t, t)`` and ``alphas_cumprod``.
        op: the operator; only ``op.A`` (differentiable, possibly nonlinear), ``op.x_shape``
            and ``op.y_shape`` are needed (``op.pinv`` only for ``init="pinv"``).
        steps: alias of ``K`` (the registry/CLI ``--steps``); an error if both differ.
        eta: η of the DDIM purification (release: 0, deterministic).
        sigma_y: measurement noise in [0, 1] pixel units; stored, not used by the update.
        task: a :data:`DCDP_PRESETS` key filling K, tau, lr, T0 (default: from the operator's
            name, else the ×4 SR preset). Explicit arguments override the preset.
        K: outer iterations. tau: optimiser steps per reconstruction phase. lr: step size.
        optimizer: 'sgd' (momentum 0.9, release default) or 'adam'. momentum: SGD momentum.
        mu: weight of the proximal term μ·mean((x - v_k)²) (release: 0).
        T0, T_end: first and last purification level (release T_end = 0; phase retrieval
            20).
        schedule: one of :data:`SCHEDULES` (default 'linear').
        purifier: 'ddim', 'tweedie' (one step), 'consistency' / 'cm' (one consistency-model
            step; needs a model with ``denoise(x, sigma)``) or 'none' (reconstruction only).
            Default: 'consistency' for a consistency model, else 'ddim'.
        ddim_steps_max: at most this many DDIM steps per purification (20).
        clip: clip x̂0 to [-1, 1] in the purification (release: True).
        init: 'zeros' (release) or 'pinv' (A⁺y).
    """

    method = "dcdp"

    def __init__(self, model, op, steps: int | None = None, eta: float = 0.0,
                 sigma_y: float = 0.0, task: str | None = None, K: int | None = None,
                 tau: int | None = None, lr: float | None = None, optimizer: str = "sgd",
                 momentum: float = 0.9, mu: float = 0.0, T0: int | None = None,
                 T_end: int | None = None, schedule: str = "linear",
                 purifier: str | None = None,
                 ddim_steps_max: int = 20, clip: bool = True, init: str = "zeros"):
        self.model, self.op = model, op
        if task is not None and task not in DCDP_PRESETS:
            raise UnknownNameError(f"dcdp: no preset for task {task!r}; known: "
                                   f"{', '.join(DCDP_PRESETS)}")
        self.task = task if task is not None else _OP_PRESET.get(getattr(op, "name", ""),
                                                                 DCDP_DEFAULT_PRESET)
        p = DCDP_PRESETS[self.task]
        if steps is not None and K is not None and int(steps) != int(K):
            raise ParameterError(f"dcdp: steps ({steps}) is an alias of K ({K}); give one")
        K = K if K is not None else steps
        self.K = _int("K", p["K"] if K is None else K, 1)
        self.tau = _int("tau", p["tau"] if tau is None else tau, 0)
        M = math.prod(op.y_shape)
        self.lr = _float("lr", p["lr"] * M / p["M_ref"] if lr is None else lr, positive=True)
        self.T0 = _int("T0", p["T0"] if T0 is None else T0, 0)
        self.T_end = _int("T_end", p.get("T_end", 0) if T_end is None else T_end, 0)
        self.mu = _float("mu", mu)
        self.momentum = _as_unit("momentum", momentum)
        self.eta = _as_unit("eta", eta)
        self.sigma_y = _as_unit("sigma_y", sigma_y)
        self.ddim_steps_max = _int("ddim_steps_max", ddim_steps_max, 1)
        self.clip = bool(clip)
        if purifier is None:
            purifier = "consistency" if callable(getattr(model, "denoise", None)) else "ddim"
        purifier = _PURIFIER_ALIASES.get(purifier, purifier)
        for name, v, allowed in (("optimizer", optimizer, OPTIMIZERS),
                                 ("purifier", purifier, PURIFIERS), ("init", init, INITS),
                                 ("schedule", schedule, SCHEDULES)):
            if v not in allowed:
                raise ParameterError(f"dcdp: {name} must be one of {', '.join(allowed)}, got "
                                     f"{v!r}")
        if purifier == "consistency" and not callable(getattr(model, "denoise", None)):
            raise ParameterError(
                f"dcdp: purifier 'consistency' needs a consistency model (a prior with "
                f"denoise(x, sigma), e.g. a cm-format checkpoint such as "
                f"cd-lsun-bedroom256-lpips); {getattr(model, 'name', type(model).__name__)!r} "
                f"has none — use purifier ddim or tweedie")
        if init == "pinv":
            require_linear(op, "dcdp (init='pinv')")
        self.optimizer, self.purifier, self.init, self.schedule = (optimizer, purifier, init,
                                                                   schedule)
        T = model.num_timesteps
        if purifier != "none":
            if not (1 <= self.T0 <= T):
                raise ParameterError(f"dcdp: T0 must be in 1..{T} (the model's timesteps), "
                                     f"got {self.T0}")
            if self.T_end > self.T0:
                raise ParameterError(f"dcdp: T_end ({self.T_end}) must be ≤ T0 ({self.T0})")
            self.levels = purification_schedule(self.K, self.T0, self.T_end, schedule)
            if max(self.levels) > T:
                raise ParameterError(f"dcdp: schedule {schedule!r} reaches t* = "
                                     f"{max(self.levels)} > {T}")
        else:
            self.levels = [0] * self.K
        self.steps = self.K          # what the CLI reports as "steps"
        self._abar = [float(a) for a in model.alphas_cumprod.cpu()]
        self.nfe = 0
        self.last_loss = None        # per-sample data loss after the last reconstruction phase

    # ------------------------------------------------------------------ accounting
    @property
    def total_nfe(self) -> int:
        """Σ_k min(ddim_steps_max, t*_k) (DDIM), K (Tweedie) or 0 (no purification)."""
        return sum(purification_nfe(t, self.purifier, self.ddim_steps_max) for t in self.levels)

    def alpha_bar(self, t: int) -> float:
        return 1.0 if t < 0 else self._abar[t]

    # ------------------------------------------------------------------ the two phases
    def data_loss(self, x, y, v):
        """Σ_b [mean((A(x_b) - y_b)²) + μ mean((x_b - v_b)²)] and the per-sample data term."""
        r = self.op.A(x) - y
        per = r.reshape(r.shape[0], -1).pow(2).mean(1)
        loss = per.sum()
        if self.mu > 0:
            loss = loss + self.mu * (x - v).reshape(x.shape[0], -1).pow(2).mean(1).sum()
        return loss, per.detach()

    def reconstruct(self, v, y):
        """Reconstruction phase: τ optimiser steps on :meth:`data_loss`, starting at v."""
        x = v.detach().clone().requires_grad_(True)
        if self.tau == 0:
            return x.detach()
        opt = (torch.optim.SGD([x], lr=self.lr, momentum=self.momentum)
               if self.optimizer == "sgd" else torch.optim.Adam([x], lr=self.lr))
        with torch.enable_grad():
            for _ in range(self.tau):
                loss, per = self.data_loss(x, y, v)
                (x.grad,) = torch.autograd.grad(loss, x)     # only through op.A
                opt.step()
            self.last_loss = self.data_loss(x, y, v)[1]
        return x.detach()

    def _x0(self, x_t, t):
        """Clipped Tweedie estimate x̂0 (one network evaluation; learned-sigma handled)."""
        x0, eps = predict(self.model, x_t, t, self.alpha_bar(t), None)
        self._see(eps)
        return x0.clamp(-1, 1) if self.clip else x0

    def _see(self, t):
        if getattr(self, "_watch", None) is None:
            self._watch = FiniteWatch()
        self._watch.see(t)

    def purify(self, x, t_star, generator, progress=None):
        """Refinement phase: re-noise x to index t*-1, denoise to a clean image."""
        if self.purifier == "none":
            return x
        a = self.alpha_bar(t_star - 1)
        z = randn(x.shape, generator, x.dtype, x.device)
        if self.purifier == "consistency":     # VE form of the same level: x_{t*}/√ᾱ
            sigma = ((1 - a) / a) ** 0.5
            out = self.model.denoise(x + sigma * z, sigma)
            self._see(out)
            self._tick(progress)
            return out.clamp(-1, 1) if self.clip else out
        x_t = a ** 0.5 * x + (1 - a) ** 0.5 * z
        t_star = max(t_star, 2)               # the release's 1 → 2 bump (after re-noising)
        if self.purifier == "tweedie":
            out = self._x0(x_t, t_star - 1)
            self._tick(progress)
            return out
        ts = ddim_timesteps(t_star, min(self.ddim_steps_max, t_star))
        for t, s in zip(ts, ts[1:] + [-1]):
            x0 = self._x0(x_t, t)
            self._tick(progress)
            a_t, a_s = self.alpha_bar(t), self.alpha_bar(s)
            var = self.eta ** 2 * (1 - a_s) / (1 - a_t) * (1 - a_t / a_s)
            zz = (randn(x.shape, generator, x.dtype, x.device)
                  if var > 0 and s >= 0 else None)
            x_t = ddpm_step(x_t, x0, a_t, a_s, self.eta, zz)   # DDIM, ε from the clipped x̂0
        return x_t

    def _tick(self, progress):
        self.nfe += 1
        if progress is not None:
            progress(self.nfe, self._total)

    def outer_step(self, v, y, k: int, generator=None, progress=None):
        """One outer iteration (paper's Algorithm 1; release ``Diffusion_Purified_CSGM``):
        v_k → v_{k+1}.

        x_{k}   = argmin-ish_x mean((A(x) - y)²) + μ mean((x - v_k)²)   (τ optimiser steps)
        v_{k+1} = Purify(x_k, t*_k)        (re-noise to t*_k, DDIM / Tweedie back to t = 0)
        """
        x = self.reconstruct(v, y)                                      # data consistency
        with torch.no_grad():
            return self.purify(x, self.levels[k], generator, progress)  # diffusion purification

    # ------------------------------------------------------------------ entry point
    def check_measurement(self, y):
        Sampler.check_measurement(self, y)

    def sample(self, y: torch.Tensor, x_T: torch.Tensor | None = None,
               generator: torch.Generator | None = None,
               progress: Callable[[int, int], None] | None = None,
               callback=None) -> torch.Tensor:
        """Restore x from y. ``x_T`` is accepted for the common signature (its shape is
        checked) but unused: DCDP starts from ``init`` and draws its re-noising from
        ``generator``. ``progress(i, n)`` after each network evaluation. ``callback(k, t*,
        tensors)`` after each outer iteration k with ``{"x_t": the estimate before it, "x0" and
        "x_next": the estimate after it}`` (:data:`dmir.solvers.base.StepCallback`)."""
        self.check_measurement(y)
        B = y.shape[0]
        if x_T is not None and tuple(x_T.shape) != (B, *self.op.x_shape):
            raise ShapeError(f"x_T must have shape {(B, *self.op.x_shape)}, got "
                             f"{tuple(x_T.shape)}")
        y = y.detach()
        with torch.no_grad():
            v = (torch.zeros((B, *self.op.x_shape), dtype=y.dtype, device=y.device)
                 if self.init == "zeros" else self.op.pinv(y).detach().clone())
        self.nfe, self._total, self._watch = 0, self.total_nfe, FiniteWatch()
        for k in range(self.K):
            v_in, v = v, self.outer_step(v, y, k, generator, progress)
            if callback is not None:
                callback(k, int(self.levels[k]), {"x_t": v_in.detach(), "x0": v.detach(),
                                                  "x_next": v.detach()})
        return check_result(v, self.method, self.K, self._watch)
