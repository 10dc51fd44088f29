"""DCDP (pixel space): schedule, NFE accounting, the reconstruction phase alone (linear and
nonlinear A), restoration with the real MNIST DDPM, option errors."""
import numpy as np
import pytest
import torch

from dmir import metrics, models, operators, solvers
from dmir.errors import ParameterError, UnknownNameError
from dmir.solvers.dcdp import (DCDP, DCDP_PRESETS, ddim_timesteps, purification_nfe,
                               purification_schedule)
import test_mnist_ddpm as mnist_ddpm


class _CountingPrior(models.GaussianPrior):
    """Analytic prior that counts network evaluations."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.calls = 0

    def eps(self, x_t, t):
        self.calls += 1
        return super().eps(x_t, t)


class _TanhOp:
    """A nonlinear operator y = tanh(M x) (only A and the shapes are needed by DCDP)."""

    name = "tanh_linear"

    def __init__(self, n=16, m=8, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.M = torch.randn(m, n, generator=g) / n ** 0.5
        self.x_shape, self.y_shape = (1, 4, 4), (m,)

    def A(self, x):
        return torch.tanh(x.reshape(x.shape[0], -1) @ self.M.T)


def _gauss_prior(shape=(1, 8, 8)):
    return _CountingPrior(torch.zeros(shape), 0.25)


# ----------------------------------------------------------------------------- schedule
def test_linear_schedule_from_T0_to_zero_with_one_bumped():
    """Linear: t*_k = round((1 - k/(K-1)) T0); the final 0 becomes 1 (release)."""
    assert purification_schedule(10, 400) == [400, 356, 311, 267, 222, 178, 133, 89, 44, 1]
    assert purification_schedule(5, 100) == [100, 75, 50, 25, 1]
    assert purification_schedule(3, 10, T_end=4) == [10, 7, 4]
    assert purification_schedule(4, 7, kind="constant") == [7] * 4
    cos = purification_schedule(5, 100, kind="cosine")
    assert cos[0] == 100 and cos[-1] == 1 and all(a >= b for a, b in zip(cos, cos[1:]))
    for kind in ("bias_t1", "bias_t0", "reverse_cosine"):
        t = purification_schedule(6, 300, kind=kind)
        assert len(t) == 6 and t[0] == 300 and t[-1] == 1, (kind, t)


def test_ddim_timesteps_spacing():
    """guided-diffusion space_timesteps over 0..t*-1: starts at t*-1, ends at 0."""
    assert ddim_timesteps(2, 2) == [1, 0]
    assert ddim_timesteps(5, 5) == [4, 3, 2, 1, 0]
    ts = ddim_timesteps(400, 20)
    assert len(ts) == 20 and ts[0] == 399 and ts[-1] == 0
    assert purification_nfe(1, "ddim") == 2           # t* = 1 bumped to 2
    assert purification_nfe(7, "ddim") == 7 and purification_nfe(700, "ddim") == 20
    assert purification_nfe(700, "tweedie") == 1


# ----------------------------------------------------------------------------- NFE
@pytest.mark.parametrize("purifier", ["ddim", "tweedie"])
def test_nfe_accounting(purifier):
    prior = _gauss_prior()
    op = operators.build("sr_averagepooling", (1, 8, 8), scale=2)
    s = solvers.build("dcdp", prior, op, K=6, tau=3, lr=10.0, T0=50, purifier=purifier)
    y = op.A(torch.randn(2, 1, 8, 8))
    seen = []
    s.sample(y, generator=torch.Generator().manual_seed(0),
             progress=lambda i, n: seen.append((i, n)))
    levels = purification_schedule(6, 50)
    expected = (sum(min(20, max(t, 2)) for t in levels) if purifier == "ddim" else 6)
    assert s.nfe == prior.calls == s.total_nfe == expected
    assert seen[-1] == (expected, expected) and len(seen) == expected


def test_steps_maps_to_K_and_presets():
    prior = _gauss_prior()
    op = operators.build("sr_averagepooling", (1, 8, 8), scale=2)
    s = solvers.build("dcdp", prior, op, steps=7, T0=100)
    assert s.K == s.steps == 7 and len(s.levels) == 7
    s = solvers.build("dcdp", prior, op)                     # sr → ×4 SR preset
    # the released lr per measurement entry: 1e3 at 3×64×64 entries, here 16 entries
    assert (s.K, s.tau, s.T0) == (10, 100, 400) and s.optimizer == "sgd"
    assert s.lr == pytest.approx(1e3 * 16 / (3 * 64 * 64))
    big = operators.build("sr_averagepooling", (3, 256, 256), scale=4)
    assert solvers.build("dcdp", prior, big, task="sr4").lr == pytest.approx(1e3)
    assert solvers.build("dcdp", prior, op, lr=5.0).lr == 5.0          # explicit lr: as given
    s = solvers.build("dcdp", prior, op, task="inpainting")
    assert (s.K, s.tau, s.T0) == (20, 50, 700)
    assert s.lr == pytest.approx(1e3 * 16 / (3 * 256 * 256))
    for t in ("deblur_gauss", "deblur_motion"):
        assert {k: v for k, v in DCDP_PRESETS[t].items() if k != "M_ref"} == \
            {"K": 10, "tau": 100, "lr": 1e5, "T0": 400}
    assert "dcdp" in solvers.names() and "dcdp-equs" not in solvers.names()


# ----------------------------------------------------------------------------- reconstruction
def test_reconstruction_alone_reaches_least_squares_linear():
    """purifier='none': SGD (momentum 0.9) on mean‖Ax - y‖² from 0 reaches A x = y, and from
    zero init on a consistent system the minimum-norm solution A⁺y."""
    prior = _gauss_prior()
    op = operators.build("sr_averagepooling", (1, 8, 8), scale=2)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = op.A(x)
    s = DCDP(prior, op, K=1, tau=400, lr=20.0, purifier="none")
    out = s.sample(y)
    assert s.nfe == 0
    assert torch.allclose(op.A(out), y, atol=1e-5)
    assert torch.allclose(out, op.pinv(y), atol=1e-5)
    a = DCDP(prior, op, K=2, tau=300, lr=0.05, optimizer="adam", purifier="none").sample(y)
    assert (op.A(a) - y).abs().max() < 1e-2


def test_reconstruction_with_nonlinear_operator_reduces_loss():
    prior = _gauss_prior((1, 4, 4))
    op = _TanhOp()
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(2)) * 0.5
    y = op.A(x)
    loss0 = float(((op.A(torch.zeros_like(x)) - y) ** 2).mean())
    out = DCDP(prior, op, K=1, tau=500, lr=5.0, purifier="none").sample(y)
    loss = float(((op.A(out) - y) ** 2).mean())
    print(f"tanh(Mx): loss {loss0:.3g} -> {loss:.3g}")
    assert loss < 0.05 * loss0, (loss0, loss)
    # with purification it runs end to end (any differentiable A)
    s = DCDP(prior, op, K=3, tau=20, lr=5.0, T0=30)
    out = s.sample(y, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out).all() and s.nfe == s.total_nfe


def test_proximal_term_keeps_x_near_start():
    prior = _gauss_prior()
    op = operators.build("sr_averagepooling", (1, 8, 8), scale=2)
    y = op.A(torch.ones(1, 1, 8, 8))
    free = DCDP(prior, op, K=1, tau=200, lr=20.0, purifier="none").sample(y)
    prox = DCDP(prior, op, K=1, tau=200, lr=20.0, purifier="none", mu=1.0).sample(y)
    assert prox.abs().mean() < free.abs().mean()


def test_deterministic_given_generator():
    prior = _gauss_prior()
    op = operators.build("sr_averagepooling", (1, 8, 8), scale=2)
    y = op.A(torch.randn(1, 1, 8, 8))
    s = DCDP(prior, op, K=3, tau=5, lr=10.0, T0=40)
    a = s.sample(y, generator=torch.Generator().manual_seed(3))
    b = s.sample(y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------- real prior
@pytest.fixture(scope="module")
def mnist_prior():
    """The real tiny MNIST DDPM, loaded as in tests/test_mnist_ddpm.py."""
    return mnist_ddpm.prior.__wrapped__()


@pytest.fixture(scope="module")
def digits():
    d = np.load(f"{mnist_ddpm.DATA}/mnist_test32.npz")
    return torch.from_numpy(d["images"][:4].astype(np.float32) / 255.0)[:, None]


# Measured gains over A⁺y (dB, seed 0, first 4 test digits, settings below).
# sr_x2: A⁺y 19.05 → DCDP 26.49 dB; bottom_half: 9.33 → 12.66 dB (seed 1: +2.58 dB).
_MEASURED = {"sr_x2": 7.4, "bottom_half": 3.3}


@pytest.mark.parametrize("task", sorted(_MEASURED))
def test_dcdp_with_mnist_ddpm_beats_pinv(mnist_prior, digits, task):
    """DCDP with the real MNIST DDPM vs A⁺y. The presets assume 256×256 RGB; on 28×28 the
    mean-loss step is rescaled (lr 300 for ×2 SR, 100 for inpainting); K = 10, τ = 50,
    T0 = 200 (SR) / 700 (inpainting, the released T0)."""
    if task == "bottom_half":
        mask = torch.ones(28, 28)
        mask[14:] = 0
        op = operators.build("inpainting", (1, 28, 28), mask=mask)
        kw = dict(K=10, tau=50, lr=100.0, T0=700)
    else:
        op = operators.build("sr_averagepooling", (1, 28, 28), scale=2)
        kw = dict(K=10, tau=50, lr=300.0, T0=200)
    y = op.A(digits - 0.5)
    s = solvers.build("dcdp", mnist_prior, op, **kw)
    out = s.sample(y, generator=torch.Generator().manual_seed(0))
    p_base = metrics.psnr((op.pinv(y) + 0.5).clamp(0, 1), digits)
    p_out = metrics.psnr((out + 0.5).clamp(0, 1), digits)
    print(f"{task}: A+y {p_base:.2f} dB, DCDP {p_out:.2f} dB, NFE {s.nfe}")
    assert p_out - p_base > 0.5 * _MEASURED[task], (p_base, p_out)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kw, word", [
    (dict(optimizer="lbfgs"), "sgd, adam"), (dict(purifier="heun"), "ddim, tweedie, consistency"),
    (dict(purifier="cm"), "needs a consistency model"),
    (dict(schedule="exp"), "linear, constant"), (dict(init="noise"), "zeros, pinv"),
    (dict(K=0), "K"), (dict(lr=-1), "lr"), (dict(T0=5000), "T0"), (dict(K=50, T0=10), "K"),
    (dict(mu=float("nan")), "mu"), (dict(steps=3, K=4), "alias"), (dict(eta=2), "eta"),
    (dict(tau=1.5), "tau"),
])
def test_bad_options(kw, word):
    op = operators.build("sr_averagepooling", (1, 8, 8), scale=2)
    with pytest.raises(ParameterError, match=word):
        solvers.build("dcdp", _gauss_prior(), op, **kw)


def test_unknown_task_and_keyword():
    op = operators.build("sr_averagepooling", (1, 8, 8), scale=2)
    with pytest.raises(UnknownNameError, match="sr4"):
        solvers.build("dcdp", _gauss_prior(), op, task="sr8")
    with pytest.raises(ParameterError, match="dcdp"):
        solvers.build("dcdp", _gauss_prior(), op, equs="hflip")


# ----------------------------------------------------------------------------- consistency
class _GaussCM(_CountingPrior):
    """x_0 ~ N(μ, v I) with its exact consistency function: the probability-flow ODE of the VE
    process moves x - μ ∝ √(v + σ²), so f(x, σ) = μ + √(v / (v + σ²)) (x - μ) (σ_min → 0)."""

    def __init__(self, mu=0.2, v=0.25, shape=(1, 8, 8)):
        super().__init__(torch.full(shape, mu), v)
        self.mu, self.v, self.denoise_calls = mu, v, []

    def denoise(self, x, sigma):
        self.denoise_calls.append(float(sigma))
        return self.mu + (self.v / (self.v + sigma ** 2)) ** 0.5 * (x - self.mu)


def test_consistency_purifier_uses_the_vp_level_as_sigma():
    """One purification from v = 0 (τ = 0): clip(f(σ z, σ)) with σ = √((1-ᾱ)/ᾱ) at index t*-1
    of the prior's schedule and z the generator's first draw; one call, no ε evaluations."""
    prior = _GaussCM()
    op = operators.build("sr_averagepooling", (1, 8, 8), scale=2)
    y = op.A(torch.zeros(1, 1, 8, 8))
    s = solvers.build("dcdp", prior, op, K=1, tau=0, T0=300, schedule="constant",
                      purifier="cm")
    assert s.purifier == "consistency" and s.levels == [300]
    out = s.sample(y, generator=torch.Generator().manual_seed(7))
    a = float(prior.alphas_cumprod[299])
    sig = ((1 - a) / a) ** 0.5
    z = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    ref = (0.2 + (0.25 / (0.25 + sig ** 2)) ** 0.5 * (sig * z - 0.2)).clamp(-1, 1)
    assert prior.denoise_calls == [pytest.approx(sig, rel=1e-12)] and prior.calls == 0
    assert torch.allclose(out, ref, atol=1e-6)
    assert s.nfe == s.total_nfe == 1


def test_consistency_purifier_is_default_for_consistency_models_and_costs_K():
    prior = _GaussCM()
    op = operators.build("sr_averagepooling", (1, 8, 8), scale=2)
    y = op.A(torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    s = solvers.build("dcdp", prior, op, K=7, tau=5, lr=10.0, T0=200)
    assert s.purifier == "consistency" and purification_nfe(150, "consistency") == 1
    s.sample(y, generator=torch.Generator().manual_seed(0))
    assert s.nfe == s.total_nfe == len(prior.denoise_calls) == 7 and prior.calls == 0
    # the levels decay linearly, so does σ; t* = 1 is not bumped (σ at index 0, ≈ 0.01)
    assert prior.denoise_calls == sorted(prior.denoise_calls, reverse=True)
    assert prior.denoise_calls[-1] == pytest.approx((1e-4 / (1 - 1e-4)) ** 0.5, rel=1e-9)
    assert solvers.build("dcdp", _gauss_prior(), op).purifier == "ddim"   # no denoise()


def test_dps_protocol_operators_pick_their_presets():
    prior = _gauss_prior((3, 32, 32))
    for name, task in (("deblur_dps_gauss", "deblur_gauss"), ("deblur_dps_motion",
                                                               "deblur_motion"),
                       ("inpainting_random", "inpainting")):
        op = operators.build(name, (3, 32, 32))
        assert solvers.build("dcdp", prior, op).task == task
    op = operators.build("sr_matlab_bicubic", (3, 32, 32), scale=4)
    assert solvers.build("dcdp", prior, op).task == "sr4"


# ----------------------------------------------------------------------------- command line
def test_cli_restore_dcdp_purifier_flag(tmp_path, capsys):
    """`dmir restore --method dcdp --purifier ...`: tweedie runs (K NFE), consistency needs a
    consistency model, the flag is refused for other methods; no output on errors."""
    from PIL import Image

    from dmir import cli
    src, out = tmp_path / "clean.png", tmp_path / "out.png"
    Image.open(f"{mnist_ddpm.DATA}/kodim05_crop64.png").convert("RGB").crop(
        (8, 8, 40, 40)).save(src)
    base = ["restore", str(src), "--task", "sr_averagepooling", "--scale", "2", "--degrade",
            "--model", "natural", "--steps", "3"]
    assert cli.main(base + ["-o", str(out), "--method", "dcdp", "--purifier", "tweedie"]) == 0
    assert out.is_file() and "PSNR" in capsys.readouterr().out
    for extra, needle in ((["--method", "dcdp", "--purifier", "consistency"],
                           "needs a consistency model"),
                          (["--method", "ddnm", "--purifier", "ddim"], "only with --method dcdp")):
        bad = tmp_path / "bad.png"
        assert cli.main(base + ["-o", str(bad)] + extra) == 2
        assert needle in capsys.readouterr().err and not bad.exists()
