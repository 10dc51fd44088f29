"""Exact-posterior accuracy of diffusion solvers on Gaussian-mixture priors.

With a Gaussian-mixture prior p(x) = Σ_k π_k N(μ_k, Σ_k) and a linear measurement
y = A x + N(0, σ² I), the posterior p(x | y) is again a Gaussian mixture, in closed form
(:meth:`dmir.models.GMMPrior.posterior`), and the prior's noise prediction ε(x_t, t) is exact at
every t. So a solver's samples can be scored against the *true* posterior: the only errors left
are the solver's own (its approximations, its discretisation) and Monte-Carlo noise.

This module holds what the posterior benchmark (``benchmarks/posterior.py``) and the tests
(``tests/test_posterior.py``) share; it reads no files and parses no options.

Problems
    Small gray images, (1, 4, 4) and (1, 8, 8). Two priors per size:

    * ``sym``: flip-symmetric. Two mirror pairs (μ, Σ) / (Fμ, FΣFᵀ) with equal weights plus one
      self-symmetric component, so p(x) = p(F x) exactly for the horizontal flip F, and the
      exact ε is flip-equivariant, ε(F x_t, t) = F ε(x_t, t).
      Each member of a pair is itself asymmetric (a left-right ramp of 0.35 in its mean, its
      correlations oriented at 30° or 60°).
    * ``asym``: not symmetric. Four components whose means share a left-to-right ramp (0.6
      across the image) and whose covariances are correlated along oriented (30°–60°) axes;
      F maps the prior to a different distribution and ε is not equivariant (relative change
      of the exact ε under a flipped input: ~100 % at t = 200, ~40 % at t = 400, see
      :func:`flip_asymmetry`) — a strongly oriented prior, like text or digits.

    Covariances: s²·exp(-½ dᵀ R diag(ℓ₁², ℓ₂²)⁻¹ Rᵀ d) (a smooth, anisotropic, rotated
    correlation over pixel offsets d; s² ∈ [0.04, 0.09]) + a rank-2 random term + a nugget δ I
    (δ ∈ [0.005, 0.01], so every Σ_k is well conditioned: condition numbers ≤ 220). Means: a
    smooth random field shared by all components (symmetrised for ``sym``) + a level offset in
    [-0.25, 0.25] + the ramp + a small own field, clipped to [-0.9, 0.9]. The components overlap
    enough that many posteriors are genuinely multimodal (``posterior_effective_components``
    up to 3.9 at 4×4, 2.0 at 8×8).

    Operators (:func:`make_operator`): ``inpainting`` (fixed random mask keeping 50% of the
    pixels), ``sr2`` (2×2 average pooling), ``cs`` (Walsh–Hadamard CS, ratio 0.5, fixed
    permutation), ``blur`` (``deblur`` with the separable kernel [¼, ½, ¼]⊗[¼, ½, ¼], exact SVD
    with 1-D singular values below 0.2 truncated: rank 9/16 at 4×4, 36/64 at 8×8).
    σ_y ∈ {0, 0.05} in [0, 1] pixel units (model units: 2σ_y, :func:`sigma_to_model`).

    A problem is named ``{sym|asym}{4|8}-{op}-{σ_y}``, e.g. ``sym8-inpainting-0.05``. Its ground
    truth x is drawn from the prior and y = A x + noise, all from a seed fixed by the name.

Estimators (all on N samples per set, float64)
    * Sliced Wasserstein-2: L directions θ_l uniform on the unit sphere of R^D (normalised
      Gaussians, fixed seed); per direction the 1-D W2² between the two projected sample sets of
      equal size N is mean_i (a_(i) - b_(i))² with a_(i), b_(i) sorted (the exact W2 between the
      two empirical measures); SW2 = sqrt(mean_l W2²_l). Comparing with *samples* of the exact
      posterior makes SW2 biased upward by the Monte-Carlo noise of both sets: the floor is
      SW2 between two independent exact sample sets of the same N (``floor``).
    * Mean error: ‖mean(samples) - m‖ / √D, with m = Σ_k w_k m_k the exact posterior mean
      (analytic, not sampled). Its Monte-Carlo standard error for an exact sampler is
      ``mean_se`` = sqrt(tr Cov / (N D)), Cov the exact posterior covariance.
    * Variance ratio: tr(sample covariance) / tr(Cov) (1 for an exact sampler).

Reference points (same N, same estimators)
    * ``prior``: samples of the prior (what ignoring y gives): the bar every solver must beat.
    * ``pinv_null``: A⁺y + (I - A⁺A) x_p with x_p from the prior — the measured part taken from
      y (noisy y as it is when σ_y > 0), the null space from the prior, ignoring the prior's
      coupling of the two (exact for decoupled priors and σ_y = 0, wrong otherwise).
    * ``floor``: a second set of exact posterior samples.
"""
from __future__ import annotations

import copy
import math
import time
import zlib
from typing import Any
from dataclasses import dataclass, field

import torch

from . import operators, solvers
from .models.analytic import GMMPrior
from .operators.noise import sigma_to_model

SIZES = (4, 8)
PRIOR_KINDS = ("sym", "asym")
OPERATORS = ("inpainting", "sr2", "cs", "blur")
SIGMAS = (0.0, 0.05)
BLUR_KERNEL = (0.25, 0.5, 0.25)
BLUR_THRESHOLD = 0.2


def _gen(*keys) -> torch.Generator:
    """A generator seeded from a stable hash of ``keys`` (independent of run order)."""
    return torch.Generator().manual_seed(zlib.crc32(repr(keys).encode()) & 0x7FFFFFFF)


# ----------------------------------------------------------------------------- flips
def hflip_perm(shape) -> torch.Tensor:
    """Index vector P with (F x).flatten() == x.flatten()[P] for the horizontal flip F."""
    idx = torch.arange(math.prod(shape)).reshape(shape)
    return torch.flip(idx, (-1,)).reshape(-1)


def gmm_flip(prior: GMMPrior) -> GMMPrior:
    """The pushforward F#p of a GMM under the horizontal flip (a GMMPrior)."""
    P = hflip_perm(prior.shape)
    K = len(prior.weights)
    means = prior.means.reshape(K, -1)[:, P].reshape(K, *prior.shape)
    covs = prior.covs[:, P][:, :, P]
    return GMMPrior(prior.weights, means, covs, schedule=_betas(prior))


def _betas(prior) -> torch.Tensor:
    a = prior.alphas_cumprod
    return 1 - a / torch.cat([a.new_ones(1), a[:-1]])


def gmm_log_prob(prior: GMMPrior, x: torch.Tensor, t: int = -1) -> torch.Tensor:
    """log p_t(x) of the diffused GMM at timestep t (t = -1: the prior itself), float64, (B,)."""
    a = float(prior.alpha_bar(t))
    xv = x.double().reshape(x.shape[0], -1)
    K = len(prior.weights)
    mu = prior.means.reshape(1, K, -1)
    r = xv[:, None, :] - math.sqrt(a) * mu
    rq = torch.einsum("bkd,kde->bke", r, prior.Q)
    c = a * prior.lam + (1 - a)                                   # (K, D)
    if t < 0:
        c = c.clamp_min(1e-300)
    maha = (rq ** 2 / c).sum(-1)
    logn = -0.5 * (maha + torch.log(c).sum(-1) + xv.shape[1] * math.log(2 * math.pi))
    return torch.logsumexp(torch.log(prior.weights)[None] + logn, dim=1)


def flip_asymmetry(prior: GMMPrior, n: int = 2000, ts=(50, 200, 400, 600, 800),
                   seed: int = 0) -> dict:
    """How far a GMM prior is from flip invariance.

    * ``logp_max_abs``: max |log p(x) - log p(F x)| over n prior samples (0 up to round-off for a
      flip-invariant prior).
    * ``eps_rel``: {t: sqrt(E‖ε(F x_t) - F ε(x_t)‖² / E‖ε(x_t)‖²)} with x_t ~ p_t — the relative
      change of the exact ε when its input is flipped (what EquS assumes is 0).
    """
    g = torch.Generator().manual_seed(seed)
    x = prior.sample(n, generator=g)
    F = lambda v: torch.flip(v, (-1,))  # noqa: E731
    out: dict[str, Any] = dict(logp_max_abs=float((gmm_log_prob(prior, x) - gmm_log_prob(prior, F(x)))
                                  .abs().max()))
    rel = {}
    for t in ts:
        a = float(prior.alpha_bar(t))
        xt = math.sqrt(a) * x + math.sqrt(1 - a) * torch.randn(x.shape, generator=g,
                                                                dtype=x.dtype)
        e = prior.eps(xt, t)
        ef = prior.eps(F(xt), t)
        rel[int(t)] = float(((ef - F(e)).pow(2).sum() / e.pow(2).sum()).sqrt())
    out["eps_rel"] = rel
    return out


# ----------------------------------------------------------------------------- priors
def _coords(H, W):
    ii = torch.stack(torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij"), -1)
    return ii.reshape(-1, 2).double()


def _oriented_cov(H, W, scale2, l1, l2, angle, nugget, lowrank, g):
    """s² exp(-½ dᵀ R diag(l1², l2²)⁻¹ Rᵀ d) + V Vᵀ + δ I over pixel offsets d = (row, col)."""
    X = _coords(H, W)
    d = X[:, None, :] - X[None, :, :]                       # (D, D, 2) (row, col)
    c, s = math.cos(angle), math.sin(angle)
    u = d[..., 1] * c - d[..., 0] * s                       # along the axis at `angle` from
    v = d[..., 1] * s + d[..., 0] * c                       # the horizontal, and across it
    S = scale2 * torch.exp(-0.5 * ((u / l1) ** 2 + (v / l2) ** 2))
    D = H * W
    V = lowrank * torch.randn(D, 2, generator=g, dtype=torch.float64)
    return S + V @ V.T + nugget * torch.eye(D, dtype=torch.float64)


def _smooth_field(H, W, level, amp, g):
    X = _coords(H, W)
    K = torch.exp(-0.5 * torch.cdist(X, X) ** 2 / (0.25 * max(H, W)) ** 2)
    lam, Q = torch.linalg.eigh(K)
    z = torch.randn(H * W, generator=g, dtype=torch.float64)
    f = Q @ (lam.clamp_min(0).sqrt() * z)
    f = f / f.std().clamp_min(1e-12)
    return (level + amp * f).clamp(-0.9, 0.9).reshape(1, H, W)


def make_prior(kind: str, size: int, seed: int = 0) -> GMMPrior:
    """The ``sym`` (flip-invariant, K = 5) or ``asym`` (K = 4) GMM prior on (1, size, size)."""
    H = W = int(size)
    g = _gen("prior", kind, size, seed)
    ramp = (torch.arange(W, dtype=torch.float64) / (W - 1) - 0.5).expand(1, H, W)

    P = hflip_perm((1, H, W))
    base = _smooth_field(H, W, 0.0, 0.3, g)                     # shared by all components
    if kind == "sym":
        base = 0.5 * (base + base.reshape(-1)[P].reshape(1, H, W))

    def uniform(lo, hi):
        return float(torch.empty(1, dtype=torch.float64).uniform_(lo, hi, generator=g))

    def component(angle, ramp_amp):
        # mean = shared field + a level offset + a left-right ramp + a small own field
        mu = base + uniform(-0.25, 0.25) + ramp_amp * ramp + _smooth_field(H, W, 0.0, 0.1, g)
        s2, nug = uniform(0.04, 0.09), uniform(0.005, 0.01)
        l1, l2 = uniform(0.25, 0.4) * W, uniform(0.08, 0.15) * W
        return mu.clamp(-0.9, 0.9), _oriented_cov(H, W, s2, l1, l2, angle, nug, 0.1, g)

    if kind == "sym":
        means, covs, weights = [], [], []
        for angle, w in ((math.pi / 6, 0.25), (math.pi / 3, 0.15)):
            mu, S = component(angle, 0.35)                      # each member is asymmetric
            means += [mu, mu.reshape(-1)[P].reshape(1, H, W)]
            covs += [S, S[P][:, P]]
            weights += [w, w]
        mu, S = component(0.0, 0.0)
        means.append(0.5 * (mu + mu.reshape(-1)[P].reshape(1, H, W)))
        covs.append(0.5 * (S + S[P][:, P]))
        weights.append(0.2)
    elif kind == "asym":
        means, covs = [], []
        for angle in (math.pi / 6, math.pi / 4, math.pi / 3, math.pi / 5):
            mu, S = component(angle, 0.6)
            means.append(mu)
            covs.append(S)
        weights = [0.35, 0.3, 0.2, 0.15]
    else:
        raise ValueError(f"prior kind must be one of {PRIOR_KINDS}, got {kind!r}")
    return GMMPrior(torch.tensor(weights), torch.stack(means), torch.stack(covs))


# ----------------------------------------------------------------------------- operators
def make_operator(name: str, size: int, seed: int = 0):
    """``inpainting`` | ``sr2`` | ``cs`` | ``blur`` on (1, size, size) (float32, as solvers use)."""
    shape = (1, size, size)
    g = _gen("operator", name, size, seed)
    if name == "inpainting":
        D = size * size
        mask = torch.zeros(D)
        mask[torch.randperm(D, generator=g)[: D // 2]] = 1
        return operators.build("inpainting", shape, mask=mask.reshape(size, size))
    if name == "sr2":
        return operators.build("sr_averagepooling", shape, scale=2)
    if name == "cs":
        return operators.build("cs_walshhadamard", shape, ratio=0.5,
                               perm=torch.randperm(size * size, generator=g))
    if name == "blur":
        return operators.build("deblur", shape, kernel=torch.tensor(BLUR_KERNEL),
                               threshold=BLUR_THRESHOLD)
    raise ValueError(f"operator must be one of {OPERATORS}, got {name!r}")


# ----------------------------------------------------------------------------- problems
@dataclass
class Problem:
    """One posterior-sampling problem with its exact answer."""

    name: str
    kind: str
    size: int
    op_name: str
    sigma_y: float
    prior: GMMPrior
    op: Any                       # a dmir operator
    x_true: torch.Tensor           # (1, 1, H, W) float32
    y: torch.Tensor                # (1, *y_shape) float32
    posterior: GMMPrior
    mean: torch.Tensor             # (D,) float64, exact posterior mean
    cov: torch.Tensor              # (D, D) float64, exact posterior covariance
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def D(self) -> int:
        return self.size * self.size

    def exact_samples(self, n: int, set_index: int = 0) -> torch.Tensor:
        """(n, D) float64 exact posterior samples; set 0 is the comparison set, set 1 the
        independent one that gives the Monte-Carlo floor."""
        key = ("exact", n, set_index)
        if key not in self._cache:
            g = _gen("exact", self.name, n, set_index)
            self._cache[key] = self.posterior.sample(n, generator=g).reshape(n, -1)
        return self._cache[key]

    def directions(self, n_dirs: int) -> torch.Tensor:
        key = ("dirs", n_dirs)
        if key not in self._cache:
            self._cache[key] = random_directions(self.D, n_dirs, _gen("dirs", self.D, n_dirs))
        return self._cache[key]

    def summary(self) -> dict:
        w = self.posterior.weights
        ent = float(-(w * torch.log(w.clamp_min(1e-300))).sum())
        return dict(name=self.name, prior=self.kind, size=self.size, operator=self.op_name,
                    sigma_y=self.sigma_y, D=self.D, y_dim=self.op.y_dim,
                    posterior_weights=[round(float(v), 4) for v in w],
                    posterior_effective_components=math.exp(ent),
                    posterior_std_per_pixel=math.sqrt(float(self.cov.trace()) / self.D),
                    prior_std_per_pixel=math.sqrt(float(_gmm_cov(self.prior)[1].trace())
                                                  / self.D))


def _gmm_cov(g: GMMPrior):
    K = len(g.weights)
    m = g.means.reshape(K, -1)
    mean = (g.weights[:, None] * m).sum(0)
    second = (g.weights[:, None, None] * (g.covs + m[:, :, None] * m[:, None, :])).sum(0)
    cov = second - mean[:, None] * mean[None, :]
    return mean, 0.5 * (cov + cov.T)


def problem_name(kind: str, size: int, op_name: str, sigma_y: float) -> str:
    return f"{kind}{size}-{op_name}-{sigma_y:g}"


def parse_problem(name: str) -> tuple[str, int, str, float]:
    """``sym8-inpainting-0.05`` → ('sym', 8, 'inpainting', 0.05)."""
    try:
        head, op_name, s = name.split("-")
        kind = head.rstrip("0123456789")
        size = int(head[len(kind):])
        sigma = float(s)
    except ValueError:
        raise ValueError(f"bad problem name {name!r}; expected e.g. 'sym8-inpainting-0.05' "
                         f"(prior {PRIOR_KINDS}, size {SIZES}, operator {OPERATORS})") from None
    if kind not in PRIOR_KINDS or op_name not in OPERATORS or size not in SIZES:
        raise ValueError(f"bad problem name {name!r}: prior must be one of {PRIOR_KINDS}, size "
                         f"one of {SIZES}, operator one of {OPERATORS}")
    return kind, size, op_name, sigma


def all_problem_names() -> list[str]:
    return [problem_name(k, s, o, sy) for k in PRIOR_KINDS for s in SIZES for o in OPERATORS
            for sy in SIGMAS]


_PRIORS: dict = {}


def make_problem(name: str, seed: int = 0) -> Problem:
    """Build problem ``name`` (see :func:`parse_problem`): prior, operator, x, y, posterior."""
    kind, size, op_name, sigma_y = parse_problem(name)
    pkey = (kind, size, seed)
    if pkey not in _PRIORS:
        _PRIORS[pkey] = make_prior(kind, size, seed)
    prior = _PRIORS[pkey]
    op = make_operator(op_name, size, seed)
    g = _gen("truth", name, seed)
    x = prior.sample(1, generator=g).float()
    y = op.A(x)
    sm = sigma_to_model(sigma_y)
    if sm > 0:
        y = y + sm * torch.randn(y.shape, generator=g, dtype=y.dtype)
    post = prior.posterior(op, y, sm)
    mean, cov = _gmm_cov(post)
    return Problem(name, kind, size, op_name, float(sigma_y), prior, op, x, y, post, mean, cov)


# ----------------------------------------------------------------------------- metrics
def random_directions(D: int, n_dirs: int, generator: torch.Generator | None = None):
    """(D, n_dirs) float64 unit vectors, uniform on the sphere."""
    th = torch.randn(D, n_dirs, generator=generator, dtype=torch.float64)
    return th / th.norm(dim=0, keepdim=True)


def sliced_w2(X: torch.Tensor, Y: torch.Tensor, directions: torch.Tensor) -> float:
    """Sliced Wasserstein-2 between two equal-size sample sets (N, D), see the module doc."""
    X = X.double().reshape(X.shape[0], -1)
    Y = Y.double().reshape(Y.shape[0], -1)
    if X.shape != Y.shape:
        raise ValueError(f"sliced_w2 needs equal-size sample sets, got {tuple(X.shape)} and "
                         f"{tuple(Y.shape)}")
    a = (X @ directions).sort(0).values
    b = (Y @ directions).sort(0).values
    return float((a - b).pow(2).mean(0).mean().sqrt())


def score(samples: torch.Tensor, problem: Problem, n_dirs: int = 500) -> dict:
    """SW2 against the exact sample set, mean error and variance ratio of (N, …) samples."""
    S = samples.double().reshape(samples.shape[0], -1)
    n = S.shape[0]
    if not torch.isfinite(S).all():
        return dict(sw=float("inf"), mean_err=float("inf"), var_ratio=float("nan"),
                    nonfinite=int((~torch.isfinite(S)).any(1).sum()))
    ref = problem.exact_samples(n, 0)
    sw = sliced_w2(S, ref, problem.directions(n_dirs))
    mean_err = float((S.mean(0) - problem.mean).norm()) / math.sqrt(problem.D)
    var_ratio = float(torch.cov(S.T).trace() / problem.cov.trace())
    return dict(sw=sw, mean_err=mean_err, var_ratio=var_ratio)


def pinv_null_samples(problem: Problem, n: int) -> torch.Tensor:
    """A⁺y + (I - A⁺A) x_p, x_p ~ prior: (n, D) float64."""
    op = _double_op(problem)
    xp = problem.prior.sample(n, generator=_gen("pinv_null", problem.name, n))
    y = problem.y.double().expand(n, *problem.y.shape[1:])
    return (op.pinv(y) + xp - op.pinv(op.A(xp))).reshape(n, -1)


def _double_op(problem: Problem):
    if "op64" not in problem._cache:
        problem._cache["op64"] = copy.deepcopy(problem.op).double()
    return problem._cache["op64"]


def references(problem: Problem, n: int, n_dirs: int = 500) -> dict:
    """Scores of the reference points (prior, pinv_null, floor) and the MC standard error."""
    out: dict[str, Any] = {}
    prior_s = problem.prior.sample(n, generator=_gen("prior_ref", problem.name, n))
    out["prior"] = score(prior_s, problem, n_dirs)
    out["pinv_null"] = score(pinv_null_samples(problem, n), problem, n_dirs)
    out["floor"] = score(problem.exact_samples(n, 1), problem, n_dirs)
    out["mean_se"] = math.sqrt(float(problem.cov.trace()) / (n * problem.D))
    return out


# ----------------------------------------------------------------------------- solvers
def base_method(name: str) -> str:
    """'ddnm-equs+' → 'ddnm'."""
    return name.split("-equs")[0]


def method_spec(m) -> tuple[str, str, dict]:
    """A method given as a registry name or as (label, name, options) → (label, name, options)."""
    if isinstance(m, str):
        return m, m, {}
    label, name, opts = m
    return label, name, dict(opts)


def resolve_steps(name: str, steps_override: dict | None):
    """Steps for ``name``: an override for the exact name, else for its base method, else None
    (the method's own default)."""
    if not steps_override:
        return None
    if name in steps_override:
        return steps_override[name]
    return steps_override.get(base_method(name))


def run_method(problem: Problem, method, n: int = 500, seed: int = 0,
               steps_override: dict | None = None, n_dirs: int = 500) -> dict:
    """Draw n posterior samples with one solver (one batch, fixed generator) and score them.

    Failures (a method that needs an SVD, a NaN blow-up, …) are recorded, not raised:
    ``status`` is 'ok' or 'n/a: <reason>'.
    """
    label, name, opts = method_spec(method)
    steps = resolve_steps(label, steps_override)
    if steps is None and label != name:
        steps = resolve_steps(name, steps_override)
    rec = dict(problem=problem.name, method=label, name=name, options=_jsonable(opts),
               steps=steps, n=n)
    try:
        s = solvers.build(name, problem.prior, problem.op, steps=steps,
                          sigma_y=problem.sigma_y, **opts)
        y = problem.y.expand(n, *problem.y.shape[1:]).contiguous()
        g = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        out = s.sample(y, generator=g)       # the sampler manages autograd itself
        rec["time_s"] = time.perf_counter() - t0
        rec["nfe"] = getattr(s, "nfe", None)
        rec["steps"] = getattr(s, "steps", steps)
        rec.update(score(out.detach(), problem, n_dirs))
        rec["status"] = "ok" if math.isfinite(rec["sw"]) else "n/a: non-finite samples"
    except Exception as e:  # noqa: BLE001 — record any failure, keep benchmarking
        rec["status"] = f"n/a: {type(e).__name__}: {e}"
    return rec


def _jsonable(d):
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v))
            for k, v in d.items()}


def evaluate(problem_names, methods, n: int = 500, seed: int = 0,
             steps_override: dict | None = None, n_dirs: int = 500, progress=None) -> dict:
    """Every problem × method. Returns {'problems': [...], 'results': [...]}: per problem its
    summary, references and flip asymmetry of its prior; per (problem, method) a run_method
    record. ``progress(msg)`` is called after each run."""
    probs, results = [], []
    asym_cache = {}
    for pname in problem_names:
        p = make_problem(pname, seed)
        info = p.summary()
        info["references"] = references(p, n, n_dirs)
        key = (p.kind, p.size)
        if key not in asym_cache:
            asym_cache[key] = flip_asymmetry(p.prior)
        info["prior_flip_asymmetry"] = asym_cache[key]
        probs.append(info)
        for m in methods:
            rec = run_method(p, m, n, seed, steps_override, n_dirs)
            results.append(rec)
            if progress is not None:
                progress(rec)
    return dict(problems=probs, results=results)


def default_methods(extras: bool = True) -> list:
    """Every registered solver name, plus (``extras``) diagnostic variants of DDNM: η = 0 (the
    exact-for-decoupled-priors setting) and EquS with ε mapped back to the original frame."""
    ms: list[Any] = list(solvers.names())
    if extras and "ddnm" in ms:
        ms += [("ddnm(eta=0)", "ddnm", {"eta": 0.0}),
               ("ddnm-equs(eps-back)", "ddnm-equs", {"equs_map_eps_back": True})]
    return ms
