"""DiffPIR (Zhu, Zhang, Liang, Cao, Wen, Timofte & Van Gool, "Denoising Diffusion Models for
Plug-and-Play Image Restoration", CVPR Workshops (NTIRE) 2023), as in the reference code
(yuanzhi-zhu/DiffPIR, ``main_ddpir*.py``).

Half-quadratic splitting with the diffusion model as the denoiser (Algorithm 1), per step t → s:

    x̂0    = (x_t - √(1-ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t,  clamped to [-1, 1]     (Eq. 11, prior step)
    x̂0'   = argmin_x ‖y - A x‖² + ρ_t ‖x - x̂0‖²,  ρ_t = λ σ_n² / σ̄_t²   (Eq. 13, data step)
    ε̂     = (x_t - √ᾱ_t x̂0') / √(1-ᾱ_t)                                    (Eq. 14)
    x_s    = √ᾱ_s x̂0' + √(1-ᾱ_s) (√(1-ζ) ε̂ + √ζ z)                       (Eq. 15)

with σ̄_t = √(1-ᾱ_t)/√ᾱ_t the noise level of x_t/√ᾱ_t. The data step (Eq. 13) in closed form:

* operators with an SVD A = U Σ Vᵀ:   x̂0' = V (Σ Uᵀy + ρ Vᵀx̂0) / (Σ² + ρ)  (per coefficient;
  on the null space it keeps Vᵀx̂0; for inpainting it is the reference's (m·y + ρ x̂0)/(m + ρ));
* otherwise: (AᵀA + ρI) x̂0' = Aᵀy + ρ x̂0 by conjugate gradients started at x̂0
  (:mod:`dmir.solvers.cg`; the reference uses an FFT solve for its circular blurs, which CG
  reproduces to its tolerance).

Conventions and defaults, from the reference scripts/configs:

* σ_n = max(σ_y, 0.001) with σ_y in [0, 1] *pixel* units, exactly as the code does
  (``sigma = max(0.001, noise_level_img)``): noise-free problems keep a small ρ_t rather than
  ρ = 0. (In model units ρ_t = λ σ_model² / (4 σ̄_t²); λ is defined against pixel units.)
* λ and ζ per task (``main_ddpir.py`` + ``configs/*.yaml``): deblurring λ = 7, ζ = 0.3;
  inpainting λ = 1, ζ = 1 (and 20 steps); super-resolution: the script sweeps λ ∈ {2, …, 12}
  at ζ = 0.25 — no single published value, we take λ = 7. Defaults when the task is unknown:
  λ = 7, ζ = 0.3 (the deblurring setting).
* 100 steps (``iter_num``; 20 for inpainting, the ``iter_num`` of ``main_ddpir_inpainting.py``:
  ``DIFFPIR_STEPS``, ``steps=`` overrides) on DiffPIR's ``skip_type='quad'`` schedule
  (``diffpir_quad`` in :mod:`dmir.solvers.schedules`; it is *not* the EquS+ TAS); η = 0 (the reference's extra DDIM
  noise, ``eta``, which we take as DDIM's σ of the actual step t → s: the code multiplies by the
  single-step β_t — irrelevant at the default η = 0):

      σ_η = η √((1-ᾱ_s)/(1-ᾱ_t)) √(1-ᾱ_t/ᾱ_s),
      x_s = √ᾱ_s x̂0' + √(1-ζ) (√(1-ᾱ_s-σ_η²) ε̂ + σ_η z₁) + √ζ √(1-ᾱ_s) z₂.

Deviations from the reference, on purpose:

* The last step (t → clean) applies the data step and returns x̂0', as Algorithm 1 does. The
  reference skips the data step at its last timestep and returns the state x_{t=0} of the
  previous step (its last network evaluation is unused).
* x_T is pure noise. The reference starts from √ᾱ_T·(upsampled y) + √(1-ᾱ_T)·z, √ᾱ_T ≈ 0.006.
* ε̂ is recomputed from x_t and x̂0' (Eq. 14), so the network's ε is unused; under EquS only the
  mapped-back x̂0 matters.
"""
from __future__ import annotations

import math

from ..errors import ParameterError, UnknownNameError
from ..types import Schedule
from .base import Sampler
from .cg import conjugate_gradient

#: (λ, ζ) of the reference scripts by dmir task/operator name.
DIFFPIR_PRESETS = {
    "inpainting": (1.0, 1.0),
    "deblur": (7.0, 0.3), "deblur_gauss": (7.0, 0.3), "deblur_aniso": (7.0, 0.3),
    "deblur_uni": (7.0, 0.3),
    "sr_bicubic": (7.0, 0.25), "sr_bicubic_aa": (7.0, 0.25), "sr_averagepooling": (7.0, 0.25),
}
#: the reference scripts' ``iter_num`` by task (``main_ddpir_inpainting.py``: 20); others 100
DIFFPIR_STEPS = {"inpainting": 20}
DIFFPIR_DEFAULT_STEPS = 100
DIFFPIR_DEFAULT = (7.0, 0.3)
#: σ_n floor in [0, 1] pixel units (reference: ``max(0.001, noise_level_img)``)
SIGMA_FLOOR = 0.001


def diffpir_rho(lam: float, sigma_n: float, a_t: float) -> float:
    """ρ_t = λ σ_n² / σ̄_t², σ̄_t² = (1-ᾱ_t)/ᾱ_t (σ_n in pixel units, as the reference)."""
    return lam * sigma_n ** 2 * a_t / (1 - a_t)


def prox_svd(x0, op, state, rho: float):
    """argmin ‖y - A x‖² + ρ‖x - x̂0‖² through the SVD: V (Σ Uᵀy + ρ Vᵀx̂0)/(Σ² + ρ)."""
    s, ut_y = state["s"], state["ut_y"]
    return op.V((s * ut_y + rho * op.Vt(x0)) / (s * s + rho))


def prox_cg(x0, op, state, rho: float, max_iter: int, tol: float):
    """The same minimiser by conjugate gradients on (AᵀA + ρI) x = Aᵀy + ρ x̂0, from x̂0."""
    x, _ = conjugate_gradient(op, state["aty"] + rho * x0, rho, x_init=x0, max_iter=max_iter,
                              tol=tol)
    return x


def diffpir_renoise(x_t, x0_hat, a_t: float, a_s: float, zeta: float, eta: float, z1, z2):
    """Eqs. 14-15: x_s from x̂0' and the effective noise ε̂ of x_t (z1 used only if η > 0)."""
    eps_hat = (x_t - a_t ** 0.5 * x0_hat) / (1 - a_t) ** 0.5        # Eq. 14
    var_eta = eta ** 2 * (1 - a_s) / (1 - a_t) * (1 - a_t / a_s)
    det = max(1 - a_s - var_eta, 0.0) ** 0.5 * eps_hat
    if z1 is not None and var_eta > 0:
        det = det + var_eta ** 0.5 * z1
    out = a_s ** 0.5 * x0_hat + (1 - zeta) ** 0.5 * det                # Eq. 15
    if z2 is not None and zeta > 0:
        out = out + zeta ** 0.5 * (1 - a_s) ** 0.5 * z2
    return out


class DiffPIR(Sampler):
    """DiffPIR: HQS data step (closed form via SVD, or CG) + ζ-mixed re-noising.

    Args:
        lam: λ of ρ_t = λσ_n²/σ̄_t² (default: preset of ``task``/operator, else 7).
        zeta: ζ ∈ [0, 1], the share of fresh noise in the re-noising (default: preset, else 0.3).
        task: a DIFFPIR_PRESETS key (default: the operator's name).
        sigma_floor: lower bound of σ_n in pixel units (reference 0.001).
        clip: clamp x̂0 to [-1, 1] before the data step (reference: True).
        svd: use the closed form when the operator has an SVD (default True; False forces CG).
        cg_iters, cg_tol: conjugate-gradient cap and relative tolerance (no-SVD operators).
        steps: None = the reference's ``iter_num`` for the task (20 for inpainting, else 100);
            schedule: 'diffpir_quad'; eta: 0 (see the module docstring).
    """

    method = "diffpir"

    def __init__(self, model, op, steps=None, eta=0.0, sigma_y=0.0, lam=None, zeta=None,
                 task: str | None = None, sigma_floor: float = SIGMA_FLOOR, clip: bool = True,
                 svd: bool = True, cg_iters: int = 50, cg_tol: float = 1e-6,
                 schedule: Schedule = "diffpir_quad", **kw):
        if task is not None and task not in DIFFPIR_PRESETS:
            raise UnknownNameError(f"diffpir: no preset for task {task!r}; known: "
                                   f"{', '.join(DIFFPIR_PRESETS)} (or pass lam=, zeta=)")
        key = task if task is not None else getattr(op, "name", "")
        if steps is None:
            steps = DIFFPIR_STEPS.get(key, DIFFPIR_DEFAULT_STEPS)
        super().__init__(model, op, steps=steps, eta=eta, sigma_y=sigma_y, schedule=schedule,
                         **kw)
        p_lam, p_zeta = DIFFPIR_PRESETS.get(key, DIFFPIR_DEFAULT)
        lam = p_lam if lam is None else lam
        zeta = p_zeta if zeta is None else zeta
        try:
            lam, zeta, sigma_floor = float(lam), float(zeta), float(sigma_floor)
        except (TypeError, ValueError):
            raise ParameterError(f"diffpir: lam, zeta and sigma_floor must be numbers, got "
                                 f"{lam!r}, {zeta!r}, {sigma_floor!r}") from None
        if not (math.isfinite(lam) and lam > 0):
            raise ParameterError(f"diffpir: lam must be a finite number > 0, got {lam}")
        if not (0.0 <= zeta <= 1.0):
            raise ParameterError(f"diffpir: zeta must be in [0, 1], got {zeta}")
        if not (math.isfinite(sigma_floor) and sigma_floor > 0):
            raise ParameterError(f"diffpir: sigma_floor must be a finite number > 0, got "
                                 f"{sigma_floor}")
        if int(cg_iters) < 1 or not (float(cg_tol) > 0):
            raise ParameterError(f"diffpir: cg_iters must be ≥ 1 and cg_tol > 0, got "
                                 f"{cg_iters}, {cg_tol}")
        self.lam, self.zeta = lam, zeta
        self.sigma_n = max(self.sigma_y, sigma_floor)      # pixel units, as the reference
        self.clip = bool(clip)
        self.use_svd = bool(svd) and op.has_svd
        self.cg_iters, self.cg_tol = int(cg_iters), float(cg_tol)

    def prepare(self, y):
        if self.use_svd:
            return {"s": self.op.singulars().to(y.dtype), "ut_y": self.op.Ut(y)}
        return {"aty": self.op.At(y)}

    def data_step(self, x0, state, rho: float):
        """Eq. 13: the proximal step of ‖y - A x‖² at x̂0 with weight ρ."""
        if self.use_svd:
            return prox_svd(x0, self.op, state, rho)
        return prox_cg(x0, self.op, state, rho, self.cg_iters, self.cg_tol)

    def update(self, x_t, x0, eps, t, t_next, y, state, generator):
        a_t, a_s = self.alpha_bar(t), self.alpha_bar(t_next)
        if self.clip:
            x0 = x0.clamp(-1, 1)
        x0_hat = self.data_step(x0, state, diffpir_rho(self.lam, self.sigma_n, a_t))
        if a_s >= 1.0:                                   # last step: return x̂0' (Algorithm 1)
            return x0_hat
        var_eta = self.eta ** 2 * (1 - a_s) / (1 - a_t) * (1 - a_t / a_s)
        z1 = self.noise_like(x0, generator) if var_eta > 0 else None
        z2 = self.noise_like(x0, generator) if self.zeta > 0 else None
        return diffpir_renoise(x_t, x0_hat, a_t, a_s, self.zeta, self.eta, z1, z2)
