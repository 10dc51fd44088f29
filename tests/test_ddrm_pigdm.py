"""DDRM and ΠGDM: reference-formula conformance, exact-posterior accuracy, mechanics, errors."""
import math

import pytest
import torch

from dmir import models, operators, solvers
from dmir.errors import ParameterError, ShapeError
from dmir.models.analytic import operator_matrix
from dmir.models.base import linear_betas
from dmir.solvers.ddrm import ddrm_step
from dmir.solvers.pigdm import pigdm_vector
from solver_helpers import SMALL, fft_blur_problem, posterior_errors, small_ops



def _prior():
    g = torch.Generator().manual_seed(1)
    return models.GaussianPrior(0.3 * torch.randn(*SMALL, generator=g), 0.25)


def _blur_op():
    """Separable blur with an exact SVD and a spread of singular values (0.03 … 1)."""
    k = torch.tensor([1.0, 2.0, 1.0]) / 4
    return operators.build("deblur", SMALL, kernel=torch.outer(k, k))


# ----------------------------------------------------------------------------- registry
def test_registry_and_published_defaults():
    names = solvers.names()
    for n in ["ddrm", "ddrm-equs", "ddrm-equs+", "pigdm", "pigdm-equs", "pigdm-equs+"]:
        assert n in names
    prior, op = _prior(), small_ops()["inpainting"]
    d = solvers.build("ddrm", prior, op)
    assert (d.steps, d.eta, d.eta_b) == (20, 0.85, 1.0)
    p = solvers.build("pigdm", prior, op)
    assert (p.steps, p.eta, p.guidance) == (100, 1.0, 1.0) and type(p).needs_grad
    e = solvers.build("ddrm-equs+", prior, op, steps=10)
    assert e.equs is not None and e.plan.table != solvers.build("ddrm", prior, op,
                                                                 steps=10).plan.table


def test_ddrm_timesteps_and_alphas_match_the_reference():
    """Reference: seq = range(0, 1000, 1000 // T), seq_next = [-1] + seq[:-1], ᾱ from the
    cumulative product of (1 - β) with a prepended β = 0, read at index t + 1."""
    prior, op = _prior(), small_ops()["inpainting"]
    for T in (20, 50, 100):
        s = solvers.build("ddrm", prior, op, steps=T)
        seq = list(range(0, 1000, 1000 // T))
        seq_next = [-1] + seq[:-1]
        ours = [(s.plan.timestep(i), s.plan.timestep(j)) for i, j in s.plan.pairs]
        assert ours == list(zip(reversed(seq), reversed(seq_next)))
    b = torch.cat([torch.zeros(1, dtype=torch.float64), linear_betas(1000)])
    ref = (1 - b).cumprod(0)
    for t in (-1, 0, 49, 500, 999):
        assert abs(s.alpha_bar(t) - float(ref[t + 1])) < 1e-12


# ----------------------------------------------------------------------------- DDRM conformance
def _ref_ddrm(prior, op, y, x_noise, ws, T, sigma_0, etaA, etaB, etaC):
    """A port of the reference ``efficient_generalized_steps`` on the dense SVD of A (float64,
    flattened vectors, the reference's singulars/padding layout). Zero singular values are left
    out of the singulars list (our documented deviation: they are null space). The reference's
    three separate draws per step are one white vector ``Vh w_k`` split over disjoint cases."""
    A = operator_matrix(op)
    U, S, Vh = torch.linalg.svd(A, full_matrices=True)
    keep = S > 1e-6
    U, sing = U[:, keep], S[keep]
    m, n = len(sing), A.shape[1]
    Vt = lambda v: v.reshape(v.shape[0], -1) @ Vh.T          # noqa: E731
    V = lambda v: (v @ Vh).reshape(v.shape[0], *op.x_shape)  # noqa: E731
    b = torch.cat([torch.zeros(1, dtype=torch.float64), linear_betas(1000)])
    cum = (1 - b).cumprod(0)
    abar = lambda t: float(cum[t + 1])                       # noqa: E731
    U_t_y = y.reshape(y.shape[0], -1) @ U
    Sig_inv_U_t_y = U_t_y / sing
    seq = list(range(0, 1000, 1000 // T))
    # initialisation
    aT = abar(seq[-1])
    sT = math.sqrt(1 - aT) / math.sqrt(aT)
    large = sing * sT > sigma_0
    inv_sz = torch.zeros(n, dtype=torch.float64)
    inv_sz[:m][large] = sigma_0 / sing[large]
    init = torch.zeros(y.shape[0], n, dtype=torch.float64)
    init[:, :m][:, large] = Sig_inv_U_t_y[:, large]
    rem = (sT ** 2 - inv_sz ** 2).clamp_min(0).sqrt()
    init = (init + rem * Vt(x_noise)) / sT
    x = V(init)
    seq_next = [-1] + seq[:-1]
    for k, (i, j) in enumerate(zip(reversed(seq), reversed(seq_next))):
        at, at_next = abar(i), abar(j)
        et = prior.eps(x, i)
        x0 = (x - et * math.sqrt(1 - at)) / math.sqrt(at)
        sigma_next = math.sqrt(1 - at_next) / math.sqrt(at_next)
        V_t_x0 = Vt(x0)
        SVt_x0 = V_t_x0[:, :m] * sing
        z = Vt(ws[k]) if k < len(ws) else torch.zeros_like(V_t_x0)
        before = torch.cat([sing * sigma_next > sigma_0, torch.zeros(n - m, dtype=torch.bool)])
        after = torch.cat([sing * sigma_next < sigma_0, torch.zeros(n - m, dtype=torch.bool)])
        stdC = sigma_next * etaC
        stdA = sigma_next * etaA
        nxt = V_t_x0 + math.sqrt(sigma_next ** 2 - stdC ** 2) * Vt(et) + stdC * z
        a_val = (V_t_x0[:, :m] + math.sqrt(sigma_next ** 2 - stdA ** 2)
                 * ((U_t_y - SVt_x0) / max(sigma_0, 1e-300)) + stdA * z[:, :m])
        nxt[:, after] = a_val[:, after[:m]]
        bl = before[:m]
        diffB = (sigma_next ** 2 - sigma_0 ** 2 / sing[bl] ** 2 * etaB ** 2).sqrt()
        nxt[:, before] = (Sig_inv_U_t_y[:, bl] * etaB + (1 - etaB) * V_t_x0[:, before]
                          + diffB * z[:, before])
        x = math.sqrt(at_next) * V(nxt)
    return x, x0


@pytest.mark.parametrize("sigma_y", [0.0, 0.05])
@pytest.mark.parametrize("eta", [0.0, 0.85])
def test_ddrm_matches_a_port_of_the_reference(sigma_y, eta):
    """Whole trajectories (10 steps, float64) against the reference formulas, same noise."""
    prior = models.GaussianPrior(_prior().mean, 0.25)
    op = _blur_op().double()
    g = torch.Generator().manual_seed(0)
    x = prior.sample(2, generator=g)
    y = op.A(x) + 2 * sigma_y * torch.randn(2, *op.y_shape, generator=g, dtype=torch.float64)
    x_noise = torch.randn(2, *SMALL, generator=g, dtype=torch.float64)
    ws = [torch.randn(2, *SMALL, generator=g, dtype=torch.float64) for _ in range(9)]
    ref, ref_x0 = _ref_ddrm(prior, op, y, x_noise, ws, 10, 2 * sigma_y, eta, 1.0, eta)
    s = solvers.build("ddrm", prior, op, steps=10, eta=eta, sigma_y=sigma_y)
    it = iter(ws)
    s.noise_like = lambda x0, gen: op.Vt(next(it))
    out = s.sample(y, x_T=op.Vt(x_noise))
    # the operator stores its SVD factors in float32 (orthogonal to ~1e-7), the port uses a
    # float64 dense SVD: measured differences ≤ 7e-7; a wrong formula gives O(0.1)
    assert (out - ref).abs().max() < 1e-5
    assert (out - ref_x0).abs().max() < 1e-5     # the output is the last step's x̂0


def test_ddrm_step_cases_and_eta_b():
    """One step with z = 0 against the three closed-form cases, η_b ∈ {0, 0.5, 1}."""
    op = _blur_op().double()
    g = torch.Generator().manual_seed(0)
    x0, eps = (torch.randn(1, *SMALL, generator=g, dtype=torch.float64) for _ in range(2))
    y = op.A(torch.randn(1, *SMALL, generator=g, dtype=torch.float64))
    s = op.singulars()
    from dmir.operators.base import safe_inverse
    st = {"s": s, "s_inv": safe_inverse(s), "ut_y": op.Ut(y), "ybar": op.Ut(y) * safe_inverse(s)}
    a_next, eta, sy = 0.9, 0.6, 0.1
    sig = math.sqrt((1 - a_next) / a_next)          # 0.333: s σ straddles σ_y = 0.1
    assert ((s > 0) & (s * sig < sy)).any() and (s * sig > sy).any()
    for eta_b in (0.0, 0.5, 1.0):
        out = op.Vt(ddrm_step(x0, eps, op, st, a_next, eta, eta_b, sy, torch.zeros_like(x0)))
        v0, ve = op.Vt(x0), op.Vt(eps)
        exp = v0 + sig * math.sqrt(1 - eta ** 2) * ve
        exp = torch.where((s > 0) & (s * sig < sy),
                          v0 + sig * math.sqrt(1 - eta ** 2) * (st["ybar"] - v0) * s / sy, exp)
        exp = torch.where(s * sig > sy, eta_b * st["ybar"] + (1 - eta_b) * v0, exp)
        # Vt∘V is the identity to ~3e-7 (float32-stored SVD factors)
        assert (out - math.sqrt(a_next) * exp).abs().max() < 1e-5


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("opname", ["inpainting", "sr_averagepooling"])
def test_ddrm_noise_free_posterior(opname):
    """Isotropic Gaussian prior, noise-free y: the posterior is A⁺y + the prior on the null space.
    DDRM (η_b = 1) puts the range exactly on ȳ + σ z; the null space is DDIM with DDRM's η,
    which re-noises x̂0 with η σ z *independently of the step size*: η = 0 (the ODE) converges
    to the posterior, η > 0 does not — it keeps the mean and loses variance, like DDNM's η.
    Measured (n = 1000, 20 steps): mean error 0.6–0.9 × the MC standard error for every η;
    variance ratio 0.75 (η = 0; 0.94 at 100 steps), 0.58 (η = 0.85), 0.39 (η = 1; 0.45 at 100
    steps — not a posterior sampler in the limit). Bounds: mean < 2.5 s.e. (≈ 4σ of the
    per-coordinate MC noise averaged over 64 coordinates), variance ratio ±0.07."""
    prior, op = _prior(), small_ops()[opname]
    for eta, lo, hi in ((0.0, 0.68, 0.82), (0.85, 0.51, 0.65), (1.0, 0.32, 0.46)):
        me, se, pe, vr, dc = posterior_errors(prior, op, 0.0, "ddrm", eta=eta)
        assert me < 2.5 * se, (eta, me, se)
        assert me < 0.1 * pe
        assert lo < vr < hi, (eta, vr)


@pytest.mark.slow
def test_ddrm_eta0_converges_to_the_posterior():
    """η = 0 at 100 steps: variance ratio 0.94 (inpainting and pooling), as DDNM η = 0."""
    prior = _prior()
    for opname in ("inpainting", "sr_averagepooling"):
        me, se, pe, vr, dc = posterior_errors(prior, small_ops()[opname], 0.0, "ddrm", eta=0.0,
                                               steps=100)
        assert me < 2.5 * se and 0.88 < vr < 1.05, (opname, me, se, vr)


def test_ddrm_noise_free_data_consistency():
    """Noise-free DDRM is *not* exactly consistent with y: like the reference it returns the
    last step's x̂0 (t = 0 → -1 falls into the boundary case), whose range part is the
    denoised ȳ + σ_0 z with σ_0 = √((1-ᾱ_0)/ᾱ_0) = 0.01. Measured RMS of A x̂ - y: 0.00995
    (inpainting, s = 1) and 0.00496 (2×2 pooling, s = 1/2), i.e. s·σ_0 to 1%; the last
    *state* before it is exact. Bounds: s·σ_0 within ±10%."""
    prior = _prior()
    s0 = math.sqrt((1 - prior.alpha_bar(0).item()) / prior.alpha_bar(0).item())
    for opname, sv in (("inpainting", 1.0), ("sr_averagepooling", 0.5)):
        *_, dc = posterior_errors(prior, small_ops()[opname], 0.0, "ddrm", n=200)
        assert 0.9 * sv * s0 < dc < 1.1 * sv * s0, (opname, dc, sv * s0)


@pytest.mark.parametrize("opname", ["inpainting", "sr_averagepooling", "cs_walshhadamard"])
def test_ddrm_noisy_posterior(opname):
    """σ_y = 0.05 (0.1 in model units). DDRM's noisy rule is exact-ish at η = 0 (measured at
    100 steps: mean 0.96–2.0 s.e., variance ratio 0.90–0.93) and biased towards the prior
    mean for η > 0 (the renoised x̂0 is shrunk at every step of case 8b). Measured at the
    defaults (20 steps, η = 0.85, n = 1000): mean error 0.022–0.043 (s.e. 0.011–0.014, prior
    mean error 0.28–0.43), variance ratio 0.59–0.62. Bounds: mean < 0.07 and < 0.2 × the prior
    error, variance ratio in [0.5, 0.72]."""
    prior = _prior()
    me, se, pe, vr, dc = posterior_errors(prior, small_ops()[opname], 0.05, "ddrm")
    assert me < 0.07 and me < 0.2 * pe, (me, se, pe)
    assert 0.5 < vr < 0.72, vr


# ----------------------------------------------------------------------------- ΠGDM
def _ref_pigdm(prior, op, y, x_noise, ws, T, eta):
    """A port of RED-diff ``algos/pgdm.py`` (awd = True, weight 1, noise-free A⁺)."""
    b = torch.cat([torch.zeros(1, dtype=torch.float64), linear_betas(1000)])
    cum = (1 - b).cumprod(0)
    abar = lambda t: float(cum[t + 1])                 # noqa: E731
    ts = list(range(0, 1000, 1000 // T))
    ss = [-1] + ts[:-1]
    aT = abar(ts[-1])
    x = math.sqrt(aT) * op.pinv(y) + math.sqrt(1 - aT) * x_noise
    for k, (ti, si) in enumerate(zip(reversed(ts), reversed(ss))):
        at, as_ = abar(ti), abar(si)
        c1 = math.sqrt((1 - at / as_) * (1 - as_) / (1 - at)) * eta
        c2 = math.sqrt(1 - as_ - c1 ** 2)
        xt = x.clone().requires_grad_(True)
        et = prior.eps(xt, ti)
        x0 = (xt - et * math.sqrt(1 - at)) / math.sqrt(at)
        mat = op.pinv(y) - op.pinv(op.A(x0))
        grad = torch.autograd.grad((mat.detach() * x0).sum(), xt)[0]
        x = (math.sqrt(as_) * x0.detach() + c1 * ws[k] + c2 * et.detach()
             + math.sqrt(as_) * math.sqrt(at) * grad)
    return x.detach()


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_pigdm_matches_a_port_of_the_reference(eta):
    prior = models.GaussianPrior(_prior().mean, 0.25)
    op = small_ops()["sr_averagepooling"].double()
    g = torch.Generator().manual_seed(0)
    y = op.A(prior.sample(2, generator=g))
    x_noise = torch.randn(2, *SMALL, generator=g, dtype=torch.float64)
    ws = [torch.randn(2, *SMALL, generator=g, dtype=torch.float64) for _ in range(10)]
    ref = _ref_pigdm(prior, op, y, x_noise, ws, 10, eta)
    s = solvers.build("pigdm", prior, op, steps=10, eta=eta)
    it = iter(ws)
    s.noise_like = lambda x0, gen: next(it)
    out = s.sample(y, x_T=x_noise)
    assert not out.requires_grad
    assert (out - ref).abs().max() < 1e-10


def test_pigdm_noisy_vector_svd_cg_and_noise_free_limit():
    """r² Aᵀ(r² AAᵀ + σ²I)⁻¹ res: the SVD formula, CG on (AᵀA + σ²/r² I) (push-through) and
    the dense solve agree; σ → 0 gives the noise-free A⁺ res (continuity of the
    adaptive-weight form)."""
    op = _blur_op().double()
    A = operator_matrix(op)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, *SMALL, generator=g, dtype=torch.float64)
    y = op.A(torch.randn(2, *SMALL, generator=g, dtype=torch.float64))
    st = {"s": op.singulars()}
    for r2, sy in ((0.7, 0.1), (0.01, 0.05)):
        v_svd = pigdm_vector(x0, y, op, r2, sy, st)
        v_cg = pigdm_vector(x0, y, op, r2, sy, {}, cg_iters=500, cg_tol=1e-12)
        res = (y - op.A(x0)).reshape(2, -1).T
        G = r2 * A @ A.T + sy ** 2 * torch.eye(A.shape[0], dtype=torch.float64)
        v_ref = (r2 * A.T @ torch.linalg.solve(G, res)).T.reshape(2, *SMALL)
        assert (v_svd - v_ref).abs().max() < 1e-5    # float32-stored SVD factors: ~3e-7
        assert (v_cg - v_ref).abs().max() < 1e-5
    v0 = pigdm_vector(x0, y, op, 0.5, 0.0, st)
    v_small = pigdm_vector(x0, y, op, 0.5, 1e-8, st)    # (s_min = 9e-4: σ ≪ r s_min)
    assert (v0 - op.pinv(y - op.A(x0))).abs().max() == 0
    assert (v_small - v0).abs().max() < 1e-5


@pytest.mark.parametrize("opname", ["inpainting", "sr_averagepooling"])
def test_pigdm_posterior(opname):
    """ΠGDM's r_t² = 1 - ᾱ_t assumes unit-variance data (the prior has 0.25), so it is not an
    exact sampler; it must still land close to the posterior. Measured (100 steps, η = 1,
    n = 500): noise-free mean error 0.012–0.017 (s.e. 0.015–0.019), variance ratio 0.89,
    ‖A x̂ - y‖ < 1e-5; σ_y = 0.05: mean error 0.022–0.052, variance ratio 0.86. Prior-sample
    baseline (distance of the prior mean to the posterior mean) 0.31–0.44. Bounds: noise-free
    mean < 2.5 s.e., noisy mean < 0.08, both < 0.25 × the prior error, variance [0.8, 0.97]."""
    prior, op = _prior(), small_ops()[opname]
    me, se, pe, vr, dc = posterior_errors(prior, op, 0.0, "pigdm", n=500)
    assert me < 2.5 * se and me < 0.25 * pe, (me, se, pe)
    assert 0.8 < vr < 0.97, vr
    assert dc < 1e-4, dc
    me, se, pe, vr, dc = posterior_errors(prior, op, 0.05, "pigdm", n=500)
    assert me < 0.08 and me < 0.25 * pe, (me, se, pe)
    assert 0.8 < vr < 0.97, vr


def test_pigdm_noisy_without_svd_uses_cg():
    """The FFT blur has no SVD: noisy ΠGDM solves with CG and stays near the posterior mean.
    Measured (20 steps, 200 samples, seeds 0–2): error 0.028–0.031 vs 0.44–0.48 for the prior
    mean; with 100 samples the MC error adds ≈ 0.02. Bound: 0.2 × the prior error."""
    prior, op, y, g = fft_blur_problem()
    out = solvers.build("pigdm", prior, op, steps=20, sigma_y=0.05).sample(
        y.expand(100, 1, 8, 8).contiguous(), generator=g)
    mean, _ = prior.posterior(op.double(), y.double(), 0.1)
    err = float((out.double().mean(0) - mean[0]).pow(2).mean().sqrt())
    prior_err = float(mean.pow(2).mean().sqrt())
    assert err < 0.2 * prior_err, (err, prior_err)


def test_pigdm_runs_under_no_grad_and_counts_one_nfe_per_step():
    prior, op = _prior(), small_ops()["inpainting"]
    y = op.A(prior.sample(1, generator=torch.Generator().manual_seed(0)).float())
    s = solvers.build("pigdm", prior, op, steps=10)
    with torch.no_grad():
        out = s.sample(y, generator=torch.Generator().manual_seed(1))
    assert s.nfe == 10 and torch.isfinite(out).all() and not out.requires_grad


# ----------------------------------------------------------------------------- EquS, determinism
@pytest.mark.parametrize("base", ["ddrm", "pigdm"])
def test_equs_variants_run_and_differ(base):
    prior = models.GaussianPrior(0.3 * torch.randn(*SMALL, generator=torch.Generator()
                                                   .manual_seed(2)), 0.25)
    op = small_ops()["sr_averagepooling"]
    y = op.A(prior.sample(2, generator=torch.Generator().manual_seed(0)).float())
    outs = {}
    for v in ("", "-equs", "-equs+"):
        s = solvers.build(base + v, prior, op, steps=10, sigma_y=0.02)
        outs[v] = s.sample(y, generator=torch.Generator().manual_seed(1))
        assert torch.isfinite(outs[v]).all() and s.nfe == 10
    assert (outs[""] - outs["-equs"]).abs().max() > 1e-3
    assert (outs["-equs"] - outs["-equs+"]).abs().max() > 1e-3


@pytest.mark.parametrize("method", ["ddrm", "pigdm-equs+"])
def test_same_seed_same_output(method):
    prior, op = _prior(), small_ops()["cs_walshhadamard"]
    y = op.A(torch.randn(2, *SMALL, generator=torch.Generator().manual_seed(0)))
    run = lambda seed: solvers.build(method, prior, op, steps=10, sigma_y=0.05).sample(  # noqa
        y, generator=torch.Generator().manual_seed(seed))
    a, b, c = run(3), run(3), run(4)
    assert torch.equal(a, b) and not torch.equal(a, c)


# ----------------------------------------------------------------------------- errors
def test_ddrm_needs_an_svd():
    prior = models.GaussianPrior(torch.zeros(1, 8, 8), 0.25)
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 0.0]])
    op = operators.build("deblur", (1, 8, 8), kernel=k / k.sum())
    assert not op.has_svd
    for m in ("ddrm", "ddrm-equs+"):
        with pytest.raises(ParameterError, match="SVD.*ddnm"):
            solvers.build(m, prior, op)


def test_parameter_and_shape_errors():
    prior, op = _prior(), small_ops()["inpainting"]
    with pytest.raises(ParameterError, match="eta_b"):
        solvers.build("ddrm", prior, op, eta_b=1.5)
    with pytest.raises(ParameterError, match="guidance"):
        solvers.build("pigdm", prior, op, guidance=-1)
    with pytest.raises(ParameterError):
        solvers.build("pigdm", prior, op, eta_b=1.0)
    y = op.A(torch.zeros(1, *SMALL))
    for m in ("ddrm", "pigdm"):
        with pytest.raises(ShapeError, match="x_T"):
            solvers.build(m, prior, op, steps=5).sample(y, x_T=torch.zeros(1, 1, 4, 4))
        with pytest.raises(ShapeError, match="y must have shape"):
            solvers.build(m, prior, op, steps=5).sample(torch.zeros(1, 1, 4, 4))


@pytest.mark.parametrize("opname,params", [
    ("sr_bicubic", {"scale": 4}), ("sr_averagepooling", {"scale": 2}), ("colorization", {}),
    ("cs_blockbased", {"ratio": 0.25, "block": 16}), ("cs_walshhadamard", {"ratio": 0.25}),
    ("inpainting", {"mask": torch.ones(16, 16).triu()}), ("deblur_gauss", {}),
    ("deblur_uni", {}), ("deblur_aniso", {}), ("denoising", {}),
])
def test_every_spectral_operator_runs(opname, params):
    shape = (3, 16, 16)
    g = torch.Generator().manual_seed(0)
    prior = models.GaussianPrior(0.2 * torch.randn(*shape, generator=g), 0.25)
    kw = {"generator": g} if opname.startswith("cs_") else {}
    op = operators.build(opname, shape, **params, **kw)
    x = prior.sample(1, generator=g).float()
    for sigma_y in (0.0, 0.05):
        y = op.A(x) + 2 * sigma_y * torch.randn((1, *op.y_shape), generator=g)
        for m in ("ddrm", "pigdm"):
            out = solvers.build(m, prior, op, steps=5, sigma_y=sigma_y).sample(y, generator=g)
            assert out.shape == (1, *shape) and torch.isfinite(out).all(), (m, sigma_y)
