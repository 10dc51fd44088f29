"""DeqIR's --smart_init (DDIM inversion of a reference image as x_T) and the release's inner
solve (unconverged Anderson m 3, β 0.9, tol 1e-2) for initialisation optimisation, next to
dmir's converged solve (dmir.solvers.deqir_init)."""
import pytest
import torch

from dmir import models, operators, solvers
from dmir.errors import ParameterError
from dmir.solvers.deqir_init import RELEASE_INNER, ddim_invert, optimize_init

SHAPE = (1, 8, 8)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _problem(steps=10):
    g = torch.Generator().manual_seed(3)
    prior = models.GaussianPrior(0.3 * torch.randn(SHAPE, generator=g), 0.2)
    op = operators.build("sr_averagepooling", SHAPE, scale=2)
    x = prior.sample(1, generator=g).float()
    s = solvers.build("deqir", prior, op, steps=steps, nw=0.0, etw=0.0, strategy="anderson")
    return prior, op, x, op.A(x), s


def test_ddim_invert_is_the_release_forward_steps():
    """x_{t'} = x_t + √ᾱ_{t'}((1/√ᾱ_t - 1/√ᾱ_{t'}) x_t + (√(1/ᾱ_{t'} - 1) - √(1/ᾱ_t - 1)) ε),
    written as in the release, over the solver's ascending timesteps."""
    prior, op, x, y, s = _problem()
    ts = sorted(s.t)
    v = x.double()
    for t, tn in zip(ts[:-1], ts[1:]):
        at, an = float(prior.alpha_bar(t)), float(prior.alpha_bar(tn))
        et = prior.eps(v, t)
        v = v + an ** 0.5 * (((1 / at) ** 0.5 - (1 / an) ** 0.5) * v
                             + ((1 / an - 1) ** 0.5 - (1 / at - 1) ** 0.5) * et)
    got = ddim_invert(s, x.double())
    assert (got - v).abs().max() < 1e-10
    assert ts[0] == 0 and ts[-1] == s.t[0]


def test_smart_init_starts_next_to_the_target_and_release_inner_runs():
    """MSE to the target (the release's oracle loss): from the inverted target the chain
    restores the target far better than from noise before any Adam step (measured initial
    MSE 0.025 vs 0.118 with 10 steps, η 0: the inversion is DDIM's, the chain DDNM's);
    the release's inner solve stops after ≤ 15 evaluations and gives a different (unconverged)
    chain than dmir's converged one, and both decrease the loss."""
    prior, op, x, y, s = _problem()
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn((1, *SHAPE), generator=g)
    kw = dict(loss="mse", target=x, lr=0.05, iters=8, early_stop=None,
              noises=s.draw_noises((1, *SHAPE), g))
    _, _, h_noise = optimize_init(s, y, x_T, **kw)
    _, xT_smart, h_smart = optimize_init(s, y, smart_init="target", **kw)
    assert h_smart["loss"][0] < 0.4 * h_noise["loss"][0], (h_smart["loss"][0],
                                                             h_noise["loss"][0])
    _, _, h_rel = optimize_init(s, y, x_T, inner="release", **kw)
    info = h_rel["solver_info"]
    assert info["inner"] == "release" and info["iterations"] <= RELEASE_INNER["max_iter"]
    assert RELEASE_INNER == {"m": 3, "lam": 1e-3, "beta": 0.9, "tol": 1e-2, "max_iter": 15}
    assert abs(h_rel["loss"][0] - h_noise["loss"][0]) > 1e-6       # a different chain
    for h in (h_noise, h_rel):
        assert min(h["loss"]) < h["loss"][0]
    # inverting A⁺y is no oracle: measured initial MSE 0.131 (noise: 0.118)
    _, _, h_pinv = optimize_init(s, y, smart_init="pinv", **kw)
    assert h_pinv["smart_init"] == "pinv" and min(h_pinv["loss"]) < h_pinv["loss"][0]


def test_smart_init_and_inner_errors():
    prior, op, x, y, s = _problem(5)
    with pytest.raises(ParameterError, match="inner"):
        optimize_init(s, y, inner="bogus", iters=1)
    with pytest.raises(ParameterError, match="smart_init"):
        optimize_init(s, y, smart_init="gt", iters=1)
    with pytest.raises(ParameterError, match="target="):
        optimize_init(s, y, smart_init="target", iters=1)
    with pytest.raises(ParameterError, match="not both"):
        optimize_init(s, y, torch.zeros(1, *SHAPE), smart_init="pinv", iters=1)
