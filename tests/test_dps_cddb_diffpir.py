"""DPS, CDDB and DiffPIR: mechanics, equivalences and accuracy against exact Gaussian posteriors."""

import numpy as np
import pytest
import torch

from dmir import models, operators, solvers
from dmir.errors import ParameterError, UnknownNameError
from dmir.models.analytic import operator_matrix
from dmir.solvers.cg import conjugate_gradient
from dmir.solvers.diffpir import prox_cg, prox_svd
from dmir.solvers.dps import ddpm_step
from dmir.solvers.equivariance import predict
from dmir.solvers.schedules import make_plan
from solver_helpers import SMALL, posterior_errors, small_ops



def _prior(seed=1, var=0.25):
    g = torch.Generator().manual_seed(seed)
    return models.GaussianPrior(0.3 * torch.randn(*SMALL, generator=g), var)


def _fft_blur(shape=SMALL):
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 0.0]])
    op = operators.build("deblur", shape, kernel=k / k.sum(), boundary="circular")
    assert not op.has_svd
    return op


# ----------------------------------------------------------------------------- gradient hook
def test_loop_keeps_no_graph():
    """sample() runs under no_grad: no graph leaks out, not even from a leaf x_T or from a
    needs_grad solver."""
    prior = _prior()
    op = small_ops()["inpainting"]
    y = op.A(prior.sample(1).float())
    x_T = torch.randn(1, *SMALL, requires_grad=True)
    for method in ("ddnm", "dps", "diffpir", "cddb"):
        out = solvers.build(method, prior, op, steps=5).sample(y, x_T=x_T)
        assert out.grad_fn is None and not out.requires_grad, method
    assert x_T.grad is None


def test_dps_gradient_goes_through_the_network():
    """One DPS update equals DDIM/DDPM mean − scale·∇‖y − A x̂0‖ with the Jacobian of the
    Gaussian prior's Tweedie estimate (c = √ᾱ v/(ᾱv + 1 − ᾱ)), not 1/√ᾱ (network treated as
    constant)."""
    prior = models.GaussianPrior(torch.zeros(SMALL), 0.25)
    op = small_ops()["sr_averagepooling"]
    g = torch.Generator().manual_seed(0)
    y = torch.randn(3, 1, 4, 4, generator=g).double()
    opd = op.double()
    s = solvers.build("dps", prior, opd, steps=10, eta=0.0, scale=0.7, clip=False)
    t, t_next = 500, 400
    a, a_s = s.alpha_bar(t), s.alpha_bar(t_next)
    x_t = torch.randn(3, *SMALL, generator=g, dtype=torch.float64)
    with torch.enable_grad():
        xl = x_t.clone().requires_grad_(True)
        x0, eps = predict(prior, xl, t, a, None)
        out = s.update(xl, x0, eps, t, t_next, y, {}, None)
    c = a ** 0.5 * 0.25 / (a * 0.25 + 1 - a)
    with torch.no_grad():
        x0m = prior.x0(x_t, t)
        r = y - opd.A(x0m)
        rn = r.reshape(3, -1).norm(dim=1).reshape(3, 1, 1, 1)
        grad = -c * opd.At(r) / rn
        ref = ddpm_step(x_t, x0m, a, a_s, 0.0, None) - 0.7 * grad
    assert (out - ref).abs().max() < 1e-10
    assert abs(c - 1 / a ** 0.5) > 1          # the test distinguishes the two Jacobians


def test_dps_zero_scale_is_ddpm_and_one_nfe_per_step():
    """scale = 0: plain DDPM ancestral sampling (respaced 50-step chain, β̃ variance); one
    network evaluation per step."""
    prior = _prior()
    op = small_ops()["inpainting"]
    y = op.A(prior.sample(2).float())
    x_T = torch.randn(2, *SMALL, generator=torch.Generator().manual_seed(3))
    s = solvers.build("dps", prior, op, steps=50, scale=0.0, clip=False)
    out = s.sample(y, x_T=x_T, generator=torch.Generator().manual_seed(4))
    assert s.nfe == 50
    g = torch.Generator().manual_seed(4)
    x = x_T.clone()
    table = make_plan(50).table
    for k in range(49, -1, -1):
        t, tn = table[k], (table[k - 1] if k > 0 else -1)
        a, a_s = float(prior.alpha_bar(t)), float(prior.alpha_bar(tn))
        x0 = prior.x0(x, t)
        beta = 1 - a / a_s
        mean = a_s ** 0.5 * beta / (1 - a) * x0 + (1 - beta) ** 0.5 * (1 - a_s) / (1 - a) * x
        var = beta * (1 - a_s) / (1 - a)
        x = mean + (var ** 0.5 * torch.randn(x.shape, generator=g) if var > 0 else 0)
    assert (out - x).abs().max() < 1e-4
    s1000 = solvers.build("dps", prior, op)
    assert s1000.steps == 1000 and s1000.plan.table == tuple(range(1000))


def test_dps_posterior_mean_and_its_bias():
    """Inpainting, isotropic prior, 400 samples, 200 respaced steps, scale 0.3.
    σ_y = 0.025 (DPS's 0.05 in [-1, 1]): measured mean error 0.016–0.019 (0.9–1.2 × the MC
    standard error 0.017), 0.04 × the prior-only error. σ_y = 0.1: DPS ignores σ_y and fits the
    noisy y too closely: measured mean error 0.062–0.066 = 3.4–3.6 s.e. (a real bias), still
    0.17 × the prior error. Bounds: < 2 s.e. and < 0.1× prior; > 2.5 s.e. and < 0.3× prior."""
    prior, op = _prior(), small_ops()["inpainting"]
    me, se, pe, vr, _ = posterior_errors(prior, op, 0.025, "dps", 400, steps=200, scale=0.3,
                                       clip=False)
    assert me < 2 * se and me < 0.1 * pe, (me, se, pe)
    assert 0.8 < vr < 1.1, vr
    me, se, pe, vr, _ = posterior_errors(prior, op, 0.1, "dps", 400, steps=200, scale=0.3,
                                       clip=False)
    assert 2.5 * se < me < 0.3 * pe, (me, se, pe)


def test_dps_equs_flip_inside_the_graph():
    """DPS uses only x̂0 (ε is recomputed from x_t and x̂0), so for a flip-invariant prior
    dps-equs is the same sampler as dps — only if the gradient flows correctly through the flip.
    For a prior that is not flip-invariant the two differ."""
    op = small_ops()["inpainting"]
    y = op.A(torch.randn(2, *SMALL, generator=torch.Generator().manual_seed(0)))
    x_T = torch.randn(2, *SMALL, generator=torch.Generator().manual_seed(1))

    def run(prior, method):
        return solvers.build(method, prior, op, steps=20, scale=0.5).sample(
            y, x_T=x_T, generator=torch.Generator().manual_seed(2))

    inv = models.GaussianPrior(torch.full(SMALL, 0.1), 0.25)
    assert (run(inv, "dps") - run(inv, "dps-equs")).abs().max() < 1e-5
    pri = _prior()
    assert (run(pri, "dps") - run(pri, "dps-equs")).abs().max() > 1e-2
    assert solvers.build("dps-equs+", pri, op, steps=20).plan.table == make_plan(
        20, schedule="quadratic").table


def test_dps_scale_presets_and_errors():
    prior = _prior()
    ops = small_ops()
    assert solvers.build("dps", prior, ops["inpainting"]).scale == 0.5
    assert solvers.build("dps", prior, ops["sr_averagepooling"]).scale == 0.3
    assert solvers.build("dps", prior, ops["cs_walshhadamard"]).scale == 0.3   # not in DPS
    assert solvers.build("dps", prior, ops["sr_averagepooling"], task="inpainting").scale == 0.5
    assert solvers.build("dps", prior, ops["inpainting"], scale=2).scale == 2.0
    with pytest.raises(UnknownNameError, match="inpainting"):
        solvers.build("dps", prior, ops["inpainting"], task="nonlinear_deblur")   # not in dmir
    for bad in (-0.1, float("nan"), float("inf"), "big"):
        with pytest.raises(ParameterError, match="scale"):
            solvers.build("dps", prior, ops["inpainting"], scale=bad)
    with pytest.raises(ParameterError, match="eta"):
        solvers.build("dps", prior, ops["inpainting"], eta=2)


def test_dps_with_a_nonlinear_forward_map():
    """DPS needs only a differentiable op.A: a pointwise nonlinearity around a linear operator."""
    base = small_ops()["sr_averagepooling"]

    class Tanh:
        name = "tanh_sr"
        x_shape, y_shape = base.x_shape, base.y_shape
        has_svd = False

        def A(self, x):
            return torch.tanh(2 * base.A(x))

    prior = _prior()
    x = prior.sample(1, generator=torch.Generator().manual_seed(0)).float()
    op = Tanh()
    y = op.A(x)
    out = solvers.build("dps", prior, op, steps=100, scale=0.3).sample(
        y.expand(16, 1, 4, 4).contiguous(), generator=torch.Generator().manual_seed(1))
    prior_only = solvers.build("dps", prior, op, steps=100, scale=0.0).sample(
        y.expand(16, 1, 4, 4).contiguous(), generator=torch.Generator().manual_seed(1))
    assert float((op.A(out) - y).abs().mean()) < 0.3 * float((op.A(prior_only) - y).abs().mean())


# ----------------------------------------------------------------------------- CDDB
def _same_run(method_a, method_b, op, kw_a=None, kw_b=None, steps=20, eta=0.85):
    g = torch.Generator().manual_seed(7)
    prior = models.GaussianPrior(0.3 * torch.randn(*op.x_shape, generator=g), 0.25)
    opd = op.double()
    y = opd.A(prior.sample(2, generator=torch.Generator().manual_seed(0)))
    x_T = torch.randn(2, *op.x_shape, generator=torch.Generator().manual_seed(1),
                      dtype=torch.float64)
    outs = [solvers.build(m, prior, opd, steps=steps, eta=eta, **(kw or {})).sample(
        y, x_T=x_T, generator=torch.Generator().manual_seed(2))
        for m, kw in ((method_a, kw_a), (method_b, kw_b))]
    return float((outs[0] - outs[1]).abs().max())


@pytest.mark.parametrize("opname", ["inpainting", "cs_walshhadamard", "denoising"])
def test_cddb_equals_ddnm_for_orthonormal_rows(opname):
    """A Aᵀ = I ⇒ A⁺ = Aᵀ ⇒ x̂0 − Aᵀ(Ax̂0 − y) = A⁺y + (I − A⁺A)x̂0: the same sampler, the
    same noise draws; equal to float64 rounding (the two formulas round differently)."""
    op = (operators.build("denoising", SMALL) if opname == "denoising" else small_ops()[opname])
    M = operator_matrix(op)
    assert torch.allclose(M @ M.T, torch.eye(M.shape[0], dtype=M.dtype), atol=1e-6)
    assert _same_run("cddb", "ddnm", op) < 1e-12
    assert _same_run("cddb-equs+", "ddnm-equs+", op) < 1e-12


def test_cddb_differs_from_ddnm_without_orthonormal_rows():
    """sr_averagepooling ×2: A Aᵀ = I/4, so step 1 under-corrects (differs from DDNM) and step 4
    = 1/c — the default "auto" step 1/‖A‖² — is DDNM again. Colorization: A Aᵀ = ‖w‖² I ≈ I/3
    (protocol weights), same story."""
    ap = small_ops()["sr_averagepooling"]
    M = operator_matrix(ap)
    assert torch.allclose(M @ M.T, torch.eye(16, dtype=M.dtype) / 4)
    assert _same_run("cddb", "ddnm", ap, kw_a={"step_size": 1.0}) > 1e-2
    assert _same_run("cddb", "ddnm", ap, kw_a={"step_size": 4.0}) < 1e-12
    assert _same_run("cddb", "ddnm", ap) < 1e-12
    col = operators.build("colorization", (3, 4, 4))
    M = operator_matrix(col)
    c = float((M @ M.T)[0, 0])
    assert abs(c - 1 / 3) < 1e-4
    assert torch.allclose(M @ M.T, c * torch.eye(16, dtype=M.dtype))
    assert _same_run("cddb", "ddnm", col, kw_a={"step_size": 1.0}) > 1e-2
    assert _same_run("cddb", "ddnm", col, kw_a={"step_size": 1 / c}) < 1e-10
    assert _same_run("cddb", "ddnm", col) < 1e-6


def test_cddb_errors_and_defaults():
    prior, op = _prior(), small_ops()["inpainting"]
    s = solvers.build("cddb", prior, op)
    assert (s.steps, s.eta) == (100, 0.85) and abs(s.step_size - 1.0) < 1e-6
    bic = operators.build("sr_bicubic", (1, 32, 32), scale=4)        # σ_max = 1/4
    assert abs(solvers.build("cddb", prior, bic).step_size - 16.0) < 1e-3
    fft = _fft_blur((1, 12, 12)).double()                             # no SVD: power iteration
    M = operator_matrix(fft)
    lam = float(torch.linalg.eigvalsh(M.T @ M).max())
    # the power iteration approaches λ_max from below; within 1% here (clustered top of a blur)
    assert 0 <= solvers.build("cddb", _prior(), fft).step_size * lam - 1 < 1e-2
    for bad in (0, -1, float("nan"), "x"):
        with pytest.raises(ParameterError, match="step_size"):
            solvers.build("cddb", prior, op, step_size=bad)


# ----------------------------------------------------------------------------- CG
@pytest.mark.parametrize("rho", [1e-3, 0.1, "batch"])
def test_cg_solves_regularised_normal_equations_on_fft_blur(rho):
    op = _fft_blur((1, 12, 12)).double()
    g = torch.Generator().manual_seed(0)
    b = torch.randn(3, 1, 12, 12, generator=g, dtype=torch.float64)
    rho_v = torch.tensor([1e-3, 0.1, 1.0], dtype=torch.float64) if rho == "batch" else rho
    x, info = conjugate_gradient(op, b, rho_v, max_iter=300, tol=1e-10)
    r = op.At(op.A(x)) + torch.as_tensor(rho_v).reshape(-1, 1, 1, 1) * x - b
    rel = (r.reshape(3, -1).norm(dim=1) / b.reshape(3, -1).norm(dim=1)).max()
    assert rel < 1e-6, (rel, info)
    M = operator_matrix(op)
    rr = torch.as_tensor(rho_v, dtype=torch.float64).expand(3)
    for i in range(3):
        xd = torch.linalg.solve(M.T @ M + rr[i] * torch.eye(144, dtype=M.dtype),
                                b[i].reshape(-1))
        assert (x[i].reshape(-1) - xd).abs().max() < 1e-6 * (1 + xd.abs().max())


def test_cg_reading_its_stop_every_8th_iteration_changes_no_value(monkeypatch):
    """On an accelerator CG reads its stopping test every 8th iteration (each read waits for
    the device); converged elements are frozen, so the result is the same to the bit."""
    import dmir.operators.base as opbase
    import dmir.solvers.cg as cg

    op = _fft_blur((1, 12, 12)).double()
    b = torch.randn(3, 1, 12, 12, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    rho = torch.tensor([1e-3, 0.1, 1.0], dtype=torch.float64)
    x1, i1 = conjugate_gradient(op, b, rho, max_iter=300, tol=1e-8)
    p1 = opbase.cg_pinv(op.A, op.At, op.A(b), iters=300, tol=1e-8)
    for mod in (cg, opbase):
        monkeypatch.setattr(mod, "cg_check_every", lambda like: 8)
    x8, i8 = conjugate_gradient(op, b, rho, max_iter=300, tol=1e-8)
    p8 = opbase.cg_pinv(op.A, op.At, op.A(b), iters=300, tol=1e-8)
    assert torch.equal(x1, x8) and torch.equal(p1, p8)
    assert i8["iterations"] == -(-i1["iterations"] // 8) * 8     # read at multiples of 8 only
    assert i1["iterations"] % 8 != 0        # the stop fell between two reads: a real test


def test_cg_errors():
    op = _fft_blur()
    with pytest.raises(ParameterError, match="rho"):
        conjugate_gradient(op, torch.zeros(1, *SMALL), -1.0)
    with pytest.raises(ParameterError, match="max_iter"):
        conjugate_gradient(op, torch.zeros(1, *SMALL), 1.0, max_iter=-1)


# ----------------------------------------------------------------------------- DiffPIR
def test_diffpir_data_step_closed_form_equals_cg():
    """The SVD closed form V(ΣUᵀy + ρVᵀx̂0)/(Σ² + ρ) is the minimiser CG finds, including the
    null space (kept at x̂0) and for the reference inpainting formula (m·y + ρx̂0)/(m + ρ)."""
    g = torch.Generator().manual_seed(0)
    for name, op in small_ops().items():
        op = op.double()
        x0 = torch.randn(2, *SMALL, generator=g, dtype=torch.float64)
        y = op.A(torch.randn(2, *SMALL, generator=g, dtype=torch.float64))
        st = {"s": op.singulars().double(), "ut_y": op.Ut(y), "aty": op.At(y)}
        for rho in (1e-6, 0.05, 3.0):
            a = prox_svd(x0, op, st, rho)
            b = prox_cg(x0, op, st, rho, 200, 1e-12)
            assert (a - b).abs().max() < 1e-6, (name, rho)   # float32-built bases
            if name == "inpainting":
                m = op.mask.double()
                ref = (m * op.At(y) + rho * x0) / (m + rho)
                assert (a - ref).abs().max() < 1e-12


def test_diffpir_schedule_and_presets():
    prior = _prior()
    ops = small_ops()
    s = solvers.build("diffpir", prior, ops["sr_averagepooling"])
    seq = [int(v) for v in np.sqrt(np.linspace(0, 1000 ** 2, 100))]
    seq[-1] -= 1
    assert s.plan.table == tuple(999 - v for v in seq[::-1])      # reference skip_type='quad'
    assert s.plan.table != make_plan(100, schedule="quadratic").table
    assert (s.steps, s.eta, s.lam, s.zeta, s.sigma_n) == (100, 0.0, 7.0, 0.25, 0.001)
    ip = solvers.build("diffpir", prior, ops["inpainting"], sigma_y=0.05)
    assert (ip.lam, ip.zeta, ip.sigma_n) == (1.0, 1.0, 0.05)
    cs = solvers.build("diffpir", prior, ops["cs_walshhadamard"], lam=4)
    assert (cs.lam, cs.zeta) == (4.0, 0.3)
    assert solvers.build("diffpir-equs+", prior, ops["inpainting"], steps=20).plan.table == \
        make_plan(20, schedule="quadratic").table
    for kw in ({"lam": 0}, {"lam": float("inf")}, {"zeta": 1.5}, {"zeta": -0.1},
               {"sigma_floor": 0}, {"cg_iters": 0}):
        with pytest.raises(ParameterError):
            solvers.build("diffpir", prior, ops["inpainting"], **kw)
    with pytest.raises(UnknownNameError):
        solvers.build("diffpir", prior, ops["inpainting"], task="colorization")


@pytest.mark.parametrize("opname", ["inpainting", "sr_averagepooling", "cs_walshhadamard"])
def test_diffpir_noisy_posterior_within_measured_bounds(opname):
    """σ_y = 0.05, λ = 7, ζ = 0.3 (the deblurring defaults), 100 diffpir_quad steps, 1000
    samples. Measured mean error 1.0–1.4 × the MC standard error, 0.03–0.07 × the prior-only
    error; variance ratio 0.89–0.90 (ζ < 1 keeps most of the posterior spread; ζ = 1 gives 0.47).
    Bounds: < 2.5 s.e., < 0.1 × prior, variance ratio in [0.8, 0.97]."""
    me, se, pe, vr, _ = posterior_errors(_prior(), small_ops()[opname], 0.05, "diffpir", 1000,
                                         lam=7, zeta=0.3, clip=False, steps=100)
    assert me < 2.5 * se and me < 0.1 * pe, (me, se, pe)
    assert 0.8 < vr < 0.97, vr


def test_diffpir_cg_path_on_fft_blur():
    """No SVD: the CG data step. Noisy deblurring (σ_y = 0.05) of the Gaussian prior, 50 steps,
    100 samples: measured mean error 0.028 = 1.0 × the MC standard error, 0.06 × the prior-only
    error (0.05 and 1.2 s.e. with 200 samples). Bounds: < 0.15 × prior, < 3 s.e. And the
    SVD-free path of an SVD operator reproduces its closed-form run."""
    prior = models.GaussianPrior(torch.zeros(SMALL), 0.25)
    op = _fft_blur()
    me, se, pe, vr, _ = posterior_errors(prior, op, 0.05, "diffpir", 100, steps=50, clip=False)
    assert me < 0.15 * pe and me < 3 * se, (me, se, pe)
    assert _same_run("diffpir", "diffpir", small_ops()["sr_averagepooling"], kw_a={"svd": False},
                     eta=0.0) < 1e-6


def test_registry_has_the_new_methods_and_all_variants_run():
    names = solvers.names()
    prior, op = _prior(), small_ops()["cs_walshhadamard"]
    y = op.A(prior.sample(2, generator=torch.Generator().manual_seed(0)).float())
    for b in ("dps", "cddb", "diffpir"):
        for v in ("", "-equs", "-equs+"):
            assert b + v in names
            s = solvers.build(b + v, prior, op, steps=6, sigma_y=0.01)
            out = s.sample(y, generator=torch.Generator().manual_seed(1))
            assert torch.isfinite(out).all() and s.nfe == 6, b + v
