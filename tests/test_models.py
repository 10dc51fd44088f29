"""Analytic priors: exact noise predictions, schedules and closed-form posteriors."""
import math

import pytest
import torch

from dmir import models, operators
from dmir.errors import ParameterError, ShapeError


def test_schedules():
    ab = models.make_schedule("linear")
    assert ab.shape == (1000,) and ab.dtype == torch.float64
    assert abs(float(ab[0]) - (1 - 1e-4)) < 1e-12
    assert float(ab[-1]) == pytest.approx(4.0358e-05, rel=1e-3)   # DDPM linear schedule
    ac = models.make_schedule("cosine")
    assert (ac[1:] < ac[:-1]).all() and float(ac[-1]) < 1e-4
    m = models.GaussianPrior(torch.zeros(1, 2, 2), 1.0)
    assert float(m.alpha_bar(-1)) == 1.0
    assert torch.equal(m.alpha_bar(torch.tensor([-1, 0])), torch.cat([torch.ones(1), ab[:1]]))
    with pytest.raises(ParameterError):
        models.make_schedule("sigmoid")


def _log_marginal_gmm(prior, x_t, t):
    """log p_t(x_t) by brute force over components (dense covariances)."""
    a = prior.alpha_bar(t).double()
    D = x_t[0].numel()
    out = []
    for k in range(len(prior.weights)):
        C = a * prior.covs[k] + (1 - a) * torch.eye(D, dtype=torch.float64)
        dist = torch.distributions.MultivariateNormal(a.sqrt() * prior.means[k].reshape(-1), C)
        out.append(torch.log(prior.weights[k]) + dist.log_prob(x_t.reshape(x_t.shape[0], -1)))
    return torch.logsumexp(torch.stack(out), 0)


def _random_gmm(K=3, shape=(1, 3, 2), seed=0):
    g = torch.Generator().manual_seed(seed)
    D = math.prod(shape)
    L = torch.randn(K, D, D, generator=g, dtype=torch.float64) * 0.3
    covs = L @ L.transpose(1, 2) + 0.05 * torch.eye(D, dtype=torch.float64)
    return models.GMMPrior(torch.rand(K, generator=g) + 0.2,
                           torch.randn(K, *shape, generator=g), covs)


@pytest.mark.parametrize("t", [0, 100, 500, 999])
def test_gmm_eps_is_the_score(t):
    """ε(x_t, t) = -√(1-ᾱ_t) ∇ log p_t(x_t) (Tweedie), checked against autograd."""
    prior = _random_gmm()
    x = torch.randn(4, 1, 3, 2, dtype=torch.float64, requires_grad=True)
    lp = _log_marginal_gmm(prior, x, t).sum()
    (grad,) = torch.autograd.grad(lp, x)
    a = float(prior.alpha_bar(t))
    assert torch.allclose(prior.eps(x.detach(), t), -math.sqrt(1 - a) * grad, atol=1e-8)
    # per-sample timesteps
    ts = torch.tensor([t, 0, 999, t])
    e = prior.eps(x.detach(), ts)
    assert torch.allclose(e[3], prior.eps(x.detach()[3:], t)[0])
    assert torch.allclose(e[1], prior.eps(x.detach()[1:2], 0)[0])


def test_gaussian_forms_agree():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(2, 3, 3, generator=g)
    v = 0.1 + torch.rand(2, 3, 3, generator=g)
    diag = models.GaussianPrior(mu, v)
    full = models.GaussianPrior(mu, torch.diag(v.reshape(-1).double()))
    gmm = models.GMMPrior([1.0], mu[None], v[None])
    x = torch.randn(5, 2, 3, 3, generator=g, dtype=torch.float64)
    for t in [0, 10, 400, 999]:
        e = diag.eps(x, t)
        assert torch.allclose(e, full.eps(x, t), atol=1e-10)
        assert torch.allclose(e, gmm.eps(x, t), atol=1e-10)
    # float32 in → float32 out; x0 consistent with the fixture's formula
    x32 = x.float()
    assert diag.eps(x32, 5).dtype == torch.float32
    a = diag.alpha_bar(300)
    x0 = mu + a.sqrt() * v * (x - a.sqrt() * mu) / (a * v + 1 - a)
    assert torch.allclose(diag.x0(x, 300), x0, atol=1e-10)


def test_gaussian_posterior_matches_bayes_rule():
    """Closed-form posterior vs the dense information-form formula."""
    g = torch.Generator().manual_seed(1)
    shape = (1, 4, 4)
    D = 16
    L = torch.randn(D, D, generator=g, dtype=torch.float64)
    S = L @ L.T / D + 0.1 * torch.eye(D, dtype=torch.float64)
    prior = models.GaussianPrior(torch.randn(*shape, generator=g), S)
    op = operators.build("sr_averagepooling", shape, scale=2)
    A = models.operator_matrix(op)
    y = torch.randn(1, 1, 2, 2, generator=g, dtype=torch.float64)
    sig = 0.3
    m, C = prior.posterior(op, y, sig)
    P = torch.linalg.inv(S) + A.T @ A / sig ** 2
    C_ref = torch.linalg.inv(P)
    m_ref = C_ref @ (torch.linalg.solve(S, prior.mean.reshape(-1)) + A.T @ y.reshape(-1) / sig ** 2)
    assert torch.allclose(C, C_ref, atol=1e-9)
    assert torch.allclose(m.reshape(-1), m_ref, atol=1e-9)
    # noise-free: the posterior is supported on {A x = y}
    m0, C0 = prior.posterior(op, y, 0.0)
    assert torch.allclose(A @ m0.reshape(-1), y.reshape(-1), atol=1e-9)
    assert (A @ C0 @ A.T).abs().max() < 1e-9


def test_gmm_posterior_weights_by_importance_sampling():
    """GMM posterior component weights vs a brute-force Monte-Carlo estimate."""
    prior = _random_gmm(K=2, shape=(1, 2, 2), seed=3)
    op = operators.build("inpainting", (1, 2, 2), mask=torch.tensor([[1.0, 0.0], [0.0, 1.0]])).double()
    y = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    sig = 0.2
    post = prior.posterior(op, y, sig)
    xs = prior.sample(200000, generator=torch.Generator().manual_seed(0))
    # component of each prior sample: recover by sampling again with the component index
    g = torch.Generator().manual_seed(0)
    k = torch.multinomial(prior.weights, 200000, replacement=True, generator=g)
    lik = torch.exp(-((op.A(xs) - y) ** 2).sum(1) / (2 * sig ** 2))
    w_mc = torch.stack([(lik * (k == j)).sum() for j in range(2)])
    w_mc = w_mc / w_mc.sum()
    assert torch.allclose(post.weights, w_mc, atol=0.01), (post.weights, w_mc)
    mean_mc = (lik[:, None] * xs.reshape(len(xs), -1)).sum(0) / lik.sum()
    mean_post = (post.weights[:, None] * post.means.reshape(2, -1)).sum(0)
    assert torch.allclose(mean_post, mean_mc, atol=0.02)


def test_prior_errors():
    with pytest.raises(ShapeError):
        models.GaussianPrior(torch.zeros(4, 4), 1.0)
    with pytest.raises(ParameterError):
        models.GaussianPrior(torch.zeros(1, 2, 2), -1.0)
    with pytest.raises(ShapeError):
        models.GaussianPrior(torch.zeros(1, 2, 2), torch.ones(3, 3))
    with pytest.raises(ShapeError):
        models.GMMPrior([0.5, 0.5], torch.zeros(3, 1, 2, 2), torch.ones(3))
