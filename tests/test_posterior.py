"""Exact-posterior accuracy suite (dmir.posterior_eval): every registered solver, scored against
the closed-form Gaussian-mixture posterior, plus tests of the estimators and of the priors.

Units: SW values are compared in *floors* — the sliced W2 between two independent exact
posterior sample sets of the same size N (the Monte-Carlo floor; an exact sampler scores ≈ 1
floor, the prior samples score 7 floors on the symmetric fast problem and 20 on the
non-symmetric one).

The fast problems (N = 300 samples, DPS run at 50 steps instead of its 1000):
  * ``sym4-sr2-0.05``: flip-symmetric 5-component prior, 4×4, ×2 average pooling, σ_y = 0.05;
    posterior: 5 components with effective number 2.7 (genuinely multimodal);
  * ``asym4-inpainting-0``: non-symmetric 4-component prior, 4×4, 50% inpainting, σ_y = 0.

The slow grid (``-m slow``) runs every 8×8 problem (both priors, four operators, both σ_y) with
N = 500 and DPS at 200 steps.
"""
import math

import pytest
import torch

from dmir import posterior_eval as pe
from dmir import solvers

N = 300
SYM, ASYM = "sym4-sr2-0.05", "asym4-inpainting-0"
FAST = (SYM, ASYM)
STEPS = {"dps": 50,          # 1000-step DPS takes ~5 s per run here; 50 steps ~0.1 s
         "repaint": 50}      # RePaint's 250 steps + jumps (2 500 NFE) ~3.5 s; 50 (410 NFE) 0.5 s

# ----------------------------------------------------------------------------- bounds
# SW ≤ BOUNDS[base][problem] × floor, for the base method and its -equs / -equs+ variants
# (EquS variants only on the symmetric problem: see test_equs_on_asymmetric_prior).
#
# How they were derived: each method was run with 5 solver seeds (0–4; the test uses seed 0,
# so on one platform its value is deterministic) and the bound is 1.25 × the largest SW over
# the 5 seeds and the 3 variants, in floors, rounded up to 0.1. The seed spread (standard
# deviation ≤ 0.2 floor, max − min ≤ 0.5 floor for every method) is what an equivalent
# implementation consuming its random numbers differently would move by; the 25 % on top
# covers that and float differences across platforms. Measured 5-seed maxima (floors), in the
# order plain / -equs / -equs+ on SYM, plain on ASYM:
#   ddnm    2.08 / 2.65 / 2.56, 2.69      ddrm    2.57 / 2.99 / 2.64, 5.08
#   pigdm   2.25 / 2.71 / 2.80, 1.66      dps     1.85 / 1.85 / 2.06, 2.79   (50 steps)
#   cddb    2.18 / 2.78 / 2.90, 2.69      diffpir 1.40 / 1.40 / 1.41, 4.38
#   ilvr    2.13 / 2.07 / 1.82, 4.02      repaint 2.33 / 2.32 / 2.09, 3.51   (50 steps)
# (RePaint at its 250 steps with jumps: 2.15 on SYM, 1.55 on ASYM — its resampling brings the
# inpainting posterior close to exact.)
# (DiffPIR on the inpainting problem re-measured with the reference's 20 inpainting steps,
# which are its default since issue 15: 4.31 / 4.32 / 4.20 / 4.38 / 4.27 for seeds 0–4.)
# (floors: 0.0337 on SYM, 0.0211 on ASYM). None of the methods is an exact posterior sampler:
# the 1.4–5 floors are real, reproducible biases (DDNM/DDRM/ΠGDM/CDDB lose 25–60 % of the
# posterior variance with their default η; see the benchmark).
BOUNDS = {
    "ddnm": {SYM: 3.4, ASYM: 3.4},
    "ddrm": {SYM: 3.8, ASYM: 6.4},
    "pigdm": {SYM: 3.5, ASYM: 2.1},
    "dps": {SYM: 2.6, ASYM: 3.5},
    "cddb": {SYM: 3.7, ASYM: 3.4},
    "diffpir": {SYM: 1.8, ASYM: 5.5},
    "ilvr": {SYM: 2.7, ASYM: 5.1},
    "repaint": {SYM: 3.0, ASYM: 4.4},
}
# A method registered after these measurements gets the default: SW ≤ DEFAULT_PRIOR_FRACTION ×
# SW(prior samples), i.e. it must close at least half the distance between ignoring y and the
# exact posterior (3.6 floors on SYM, 10 on ASYM). Measure it and add it to BOUNDS.
DEFAULT_PRIOR_FRACTION = 0.5


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # tiny tensors: extra threads only add synchronisation (10× slower on a loaded 2-core box)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


_PROBLEMS: dict = {}
_RUNS: dict = {}


def problem(name, n=N):
    """(Problem, references) built once per test session."""
    if (name, n) not in _PROBLEMS:
        p = pe.make_problem(name)
        _PROBLEMS[(name, n)] = (p, pe.references(p, n))
    return _PROBLEMS[(name, n)]


def run(name, method, n=N, steps=STEPS, seed=0):
    key = (name, pe.method_spec(method)[0], n, seed, tuple(sorted(steps.items())))
    if key not in _RUNS:
        _RUNS[key] = pe.run_method(problem(name, n)[0], method, n, seed, steps)
    return _RUNS[key]


def _is_equs(method):
    return "-equs" in method


# ----------------------------------------------------------------------------- estimators
def test_sliced_w2_estimator():
    """SW2 = sqrt(mean_l W2²(⟨X, θ_l⟩, ⟨Y, θ_l⟩)) with the sorted-sample 1-D W2."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(400, 16, generator=g, dtype=torch.float64)
    th = pe.random_directions(16, 500, g)
    assert torch.allclose(th.norm(dim=0), torch.ones(500, dtype=torch.float64))
    assert pe.sliced_w2(X, X, th) == 0.0
    Y = torch.randn(400, 16, generator=g, dtype=torch.float64)
    assert pe.sliced_w2(X, Y, th) == pytest.approx(pe.sliced_w2(Y, X, th), rel=1e-12)
    # a translation by c moves every sorted projection by θ·c: SW = sqrt(mean_l (θ_l·c)²)
    c = torch.linspace(-1, 1, 16, dtype=torch.float64)
    assert pe.sliced_w2(X, X + c, th) == pytest.approx(float((c @ th).pow(2).mean().sqrt()),
                                                       rel=1e-9)
    # N(0, I) vs N(0, 4 I): every 1-D projection is N(0, 1) vs N(0, 4), W2 = |1 - 2| = 1
    # (measured over 5 seeds at N = 5000, 200 directions: 0.997–1.006)
    big = torch.randn(5000, 16, generator=g, dtype=torch.float64)
    big2 = 2 * torch.randn(5000, 16, generator=g, dtype=torch.float64)
    assert pe.sliced_w2(big, big2, th[:, :200]) == pytest.approx(1.0, abs=0.03)
    with pytest.raises(ValueError, match="equal-size"):
        pe.sliced_w2(X, Y[:10], th)


def test_references_and_monte_carlo_floor():
    """The floor (two exact sample sets) is a Monte-Carlo effect: it shrinks like N^-1/2
    (measured ratio floor(1200)/floor(300) = 0.5–0.6), it is far below the prior reference, and
    the exact samples' mean error and variance ratio sit at their MC levels."""
    p, ref = problem(SYM)
    assert ref["floor"]["sw"] < 0.2 * ref["prior"]["sw"]
    assert ref["floor"]["sw"] < ref["pinv_null"]["sw"] < ref["prior"]["sw"]
    assert ref["floor"]["mean_err"] < 3 * ref["mean_se"]
    assert 0.85 < ref["floor"]["var_ratio"] < 1.15
    big = pe.references(p, 4 * N)["floor"]["sw"]
    assert 0.35 < big / ref["floor"]["sw"] < 0.75
    # the prior is far from the posterior: SW and mean error many times the MC level
    assert ref["prior"]["sw"] > 5 * ref["floor"]["sw"]
    assert ref["prior"]["mean_err"] > 5 * ref["mean_se"]


def test_problem_posterior_is_consistent():
    """Noise-free: exact posterior samples satisfy A x = y; x_true lies where the posterior
    puts mass (its component weights are a proper distribution)."""
    p, _ = problem(ASYM)
    xs = p.exact_samples(N, 0).float().reshape(N, *p.op.x_shape)
    assert (p.op.A(xs) - p.y).abs().max() < 1e-4
    w = p.posterior.weights
    assert abs(float(w.sum()) - 1) < 1e-12 and (w >= 0).all()
    assert p.summary()["posterior_effective_components"] >= 1.0
    assert pe.parse_problem("sym8-inpainting-0.05") == ("sym", 8, "inpainting", 0.05)
    with pytest.raises(ValueError, match="problem name"):
        pe.parse_problem("sym5-inpainting-0")


def test_gmm_log_prob_matches_torch():
    prior = pe.make_prior("asym", 4)
    x = prior.sample(50, generator=torch.Generator().manual_seed(0))
    for t in (-1, 300):
        a = float(prior.alpha_bar(t))
        comps = [torch.distributions.MultivariateNormal(
            math.sqrt(a) * prior.means[k].reshape(-1),
            a * prior.covs[k] + (1 - a) * torch.eye(16, dtype=torch.float64))
            for k in range(len(prior.weights))]
        ref = torch.logsumexp(torch.stack([c.log_prob(x.reshape(50, -1)) + torch.log(w)
                                           for c, w in zip(comps, prior.weights)]), 0)
        assert torch.allclose(pe.gmm_log_prob(prior, x, t), ref, atol=1e-8)


# ----------------------------------------------------------------------------- priors
@pytest.mark.parametrize("size", [4, 8])
def test_priors_are_well_formed_and_flip_symmetry_is_as_designed(size):
    """sym: p(x) = p(Fx) and ε(F x_t) = F ε(x_t) to round-off; asym: neither (measured
    max |Δ log p| = 93 / 432 at 4×4 / 8×8, relative ε change 1.07 / 0.37 at t = 200)."""
    for kind in pe.PRIOR_KINDS:
        prior = pe.make_prior(kind, size)
        assert len(prior.weights) >= 3
        assert prior.means.abs().max() <= 0.9
        assert prior.lam.min() >= 0.005 and float((prior.lam.max(1).values
                                                   / prior.lam.min(1).values).max()) < 1e3
        a = pe.flip_asymmetry(prior, n=500, ts=(200,))
        if kind == "sym":
            assert a["logp_max_abs"] < 1e-9
            assert a["eps_rel"][200] < 1e-10
            flipped = pe.gmm_flip(prior)
            x = prior.sample(100, generator=torch.Generator().manual_seed(1))
            assert torch.allclose(pe.gmm_log_prob(prior, x), pe.gmm_log_prob(flipped, x),
                                  atol=1e-9)
        else:
            assert a["logp_max_abs"] > 10
            assert a["eps_rel"][200] > 0.2


# ----------------------------------------------------------------------------- solvers
def _cases():
    return [(m, pn) for pn in FAST for m in solvers.names() if not (_is_equs(m) and pn == ASYM)]


@pytest.mark.parametrize("method,name", _cases())
def test_solver_against_exact_posterior(method, name):
    """Beats prior-only samples, and stays under the measured bound (see BOUNDS)."""
    p, ref = problem(name)
    r = run(name, method)
    assert r["status"] == "ok", r["status"]
    sw, floor, prior_sw = r["sw"], ref["floor"]["sw"], ref["prior"]["sw"]
    assert sw < prior_sw, f"{method}: SW {sw:.4f} ≥ prior-only {prior_sw:.4f}"
    base = pe.base_method(method)
    if base in BOUNDS:
        bound = BOUNDS[base][name] * floor
        why = f"measured bound {BOUNDS[base][name]} floors"
    else:
        bound = DEFAULT_PRIOR_FRACTION * prior_sw
        why = f"default bound {DEFAULT_PRIOR_FRACTION} × SW(prior) (no measured bound yet)"
    assert sw <= bound, f"{method} on {name}: SW {sw:.4f} = {sw / floor:.2f} floors > {why}"


@pytest.mark.parametrize("base", sorted({pe.base_method(m) for m in solvers.names()}))
def test_equs_is_an_identity_on_a_flip_symmetric_prior(base):
    """On the flip-invariant prior the exact ε is flip-equivariant, so EquS with ε mapped back
    (``equs_map_eps_back=True``) is the base sampler exactly — bitwise, measured, for every
    method. The reference semantics (ε left in the flipped frame, the registry's -equs) is a
    different sampler for methods that re-noise with ε — DDNM, DDRM, ΠGDM, CDDB: pathwise
    differences 0.3–0.8; over the 16 symmetric problems of the benchmark, SW(-equs)/SW(plain)
    has median 1.07 (DDRM) to 1.47 (ΠGDM), range 0.79–2.6, and the variance ratio drops by a
    median 0.11–0.22 — and the same sampler for those that use only x̂0 (DPS, DiffPIR:
    bitwise identical)."""
    name = base + "-equs"
    if name not in solvers.names():
        pytest.skip(f"{base} has no EquS variant")
    p, _ = problem(SYM)
    y = p.y.expand(32, *p.y.shape[1:]).contiguous()
    steps = STEPS.get(base)

    def draw(method, **kw):
        s = solvers.build(method, p.prior, p.op, steps=steps, sigma_y=p.sigma_y, **kw)
        return s.sample(y, generator=torch.Generator().manual_seed(0))

    assert (draw(base) - draw(name, equs_map_eps_back=True)).abs().max() < 1e-5


EQUS_ASYM_FACTOR = {"ilvr": 1.6, "repaint": 1.6, "diffpir": 1.6}   # see test_equs_on_asymmetric_prior


def test_equs_on_asymmetric_prior():
    """EquS assumes the network is flip-equivariant. On the non-symmetric prior flipping the
    input changes the exact ε by 107 % (t = 200) to 44 % (t = 400) of its norm, and every
    EquS variant is biased towards the mirrored prior. Measured on ASYM (SW in floors, plain
    → -equs / -equs+): ddnm 2.7 → 17.7 / 18.1, ddrm 5.1 → 15.7 / 17.4, ΠGDM 1.5 → 22.2 / 28.5,
    DPS 2.5 → 10.6 / 10.4, CDDB 2.7 → 17.7 / 18.1, DiffPIR 3.4 → 11.3 / 11.4 (prior samples:
    20.1); mean errors 0.22–0.60 = 20–60 MC standard errors. On the noisy asym4-inpainting-0.05
    most EquS variants are worse than the prior samples (benchmark). Mapping ε back does not
    help: the bias is in x̂0 (ddnm-equs with ε mapped back: 10.5 floors).
    Asserted: SW at least doubles and the mean error exceeds 10 MC standard errors (smallest
    measured: ×3.1 for DDRM, 32 s.e.). A method added later whose EquS degrades less than ×2
    here is worth a look before this threshold is adapted to it: ILVR and RePaint replace the
    measured part of the state by the noised y at every step, which limits what the flipped x̂0
    can do there — measured ×1.90 / ×1.91 (ILVR, 15 s.e.) and ×2.01 / ×1.87 (RePaint at 50
    steps, 13–14 s.e.); they are held to ×1.6 (EQUS_ASYM_FACTOR). So is DiffPIR since its
    inpainting default became the reference's 20 steps (issue 15): 4.1 → 7.4 / 7.4 floors,
    ×1.80, 14 s.e. (the ×2 threshold had been set at 100 steps; this test failed since)."""
    p, ref = problem(ASYM)
    checked = 0
    for base in sorted({pe.base_method(m) for m in solvers.names()}):
        plain = run(ASYM, base)
        for v in ("-equs", "-equs+"):
            if base + v not in solvers.names():
                continue
            r = run(ASYM, base + v)
            assert r["status"] == "ok", r["status"]
            factor = EQUS_ASYM_FACTOR.get(base, 2.0)
            assert r["sw"] > factor * plain["sw"], (base + v, r["sw"], plain["sw"])
            assert r["mean_err"] > 10 * ref["mean_se"], (base + v, r["mean_err"])
            checked += 1
    back = run(ASYM, ("ddnm-equs(eps-back)", "ddnm-equs", {"equs_map_eps_back": True}))
    assert back["sw"] > 2 * run(ASYM, "ddnm")["sw"]
    assert checked >= 2


def test_ddnm_eta_shrinks_the_posterior_variance():
    """DDNM's default η = 0.85 keeps only part of the posterior variance; η = 0 keeps ~all of
    it. Measured variance ratios (η = 0.85 / η = 0): 0.73 / 1.16 on ASYM (noise-free), and on
    the other noise-free 4×4 problems 0.62–0.77 / 0.85–1.19 (benchmark). Bounds: η = 0.85
    below 0.85, η = 0 at least 0.2 higher."""
    r85 = run(ASYM, "ddnm")
    r0 = run(ASYM, ("ddnm(eta=0)", "ddnm", {"eta": 0.0}))
    assert r85["var_ratio"] < 0.85, r85["var_ratio"]
    assert r0["var_ratio"] > r85["var_ratio"] + 0.2, (r0["var_ratio"], r85["var_ratio"])


def test_failures_are_recorded_not_raised():
    p, _ = problem(SYM)
    r = pe.run_method(p, "no-such-method", n=8)
    assert r["status"].startswith("n/a: UnknownNameError")
    r = pe.run_method(p, ("bad", "ddnm", {"bogus": 1}), n=8)
    assert r["status"].startswith("n/a:")


# ----------------------------------------------------------------------------- slow grid
SLOW_N = 500
SLOW_STEPS = {"dps": 200, "repaint": 50}
SLOW_PROBLEMS = [n for n in pe.all_problem_names() if pe.parse_problem(n)[1] == 8]
# SW ≤ SLOW_BOUNDS[base] × floor on every 8×8 problem (EquS variants: symmetric ones only).
# Measured (seed 0, these settings) worst case over the grid, in floors, and where:
#   ddnm 7.1 (asym8-cs-0), ddrm 13.5 (asym8-cs-0), pigdm 5.9 (asym8-cs-0),
#   dps 7.3 (sym8-blur-0, 200 steps), cddb 8.1 (sym8-blur-0), diffpir 12.3 (asym8-cs-0);
# prior samples score 12.7–54 floors on these problems (floors 0.008–0.025). Bound = 1.25 ×
# the worst case, rounded up to 0.1 (the seed-to-seed spread is ≤ 0.5 floor, see BOUNDS).
# One number per method over 16 problems is coarse on the easy ones; the per-problem values
# are in the benchmark's JSON.
#   ilvr 13.0, repaint 9.9 (50 steps), dcdp 13.6 (all asym8-cs-0; measured 2026-12-08, when
#   the grid was first run with them — it had failed for them since they were added).
SLOW_BOUNDS = {"ddnm": 9.0, "ddrm": 16.9, "pigdm": 7.4, "dps": 9.2, "cddb": 10.1,
               "diffpir": 15.4, "ilvr": 16.3, "repaint": 12.5, "dcdp": 17.1}
# Methods whose update puts y into the sample without modelling its noise: ILVR and RePaint
# (noise-free methods; the range of A⁺ is replaced by A⁺y) and DCDP (the release's data
# consistency ignores σ_y). On noisy blur (blur-0.05: singular values down to ~1e-2, so A⁺
# amplifies σ_y = 0.05 many times) they land at prior-sample level — measured 20.2–22.5 floors
# on sym8 (prior samples 23.3), 37.0–37.7 on asym8 (prior samples 19.7, so worse than
# ignoring y). Known limits, kept visible as strict xfails: a fix makes them pass and fail.
NOISE_BLIND = {"ilvr", "repaint", "dcdp"}


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_PROBLEMS)
@pytest.mark.parametrize("method", solvers.names())
def test_solver_grid_8x8(method, name, request):
    """Every method on every 8×8 problem: beats prior-only samples (EquS variants: on the
    flip-symmetric prior only) and stays under SLOW_BOUNDS (see there); NOISE_BLIND methods on
    noisy blur are known not to (strict xfail)."""
    if _is_equs(method) and name.startswith("asym"):
        pytest.skip("EquS assumes a flip-symmetric prior (see test_equs_on_asymmetric_prior)")
    if pe.base_method(method) in NOISE_BLIND and name.endswith("blur-0.05"):
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            "does not model the measurement noise; noisy ill-conditioned blur gives prior-level "
            "samples (see NOISE_BLIND)")))
    p, ref = problem(name, SLOW_N)
    r = run(name, method, SLOW_N, SLOW_STEPS)
    assert r["status"] == "ok", r["status"]
    assert r["sw"] < ref["prior"]["sw"]
    base = pe.base_method(method)
    floors = r["sw"] / ref["floor"]["sw"]
    if base in SLOW_BOUNDS:
        assert floors <= SLOW_BOUNDS[base], (method, name, floors)
    else:
        assert r["sw"] <= DEFAULT_PRIOR_FRACTION * ref["prior"]["sw"]
