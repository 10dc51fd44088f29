"""Shared by the solver tests: small operators and errors against an exact Gaussian posterior."""
import math

import torch

from dmir import operators, solvers

SMALL = (1, 8, 8)


def small_ops():
    """Inpainting (random half mask), ×2 average pooling and Walsh–Hadamard CS on SMALL."""
    g = torch.Generator().manual_seed(5)
    return {
        "inpainting": operators.build("inpainting", SMALL,
                                      mask=(torch.rand(8, 8, generator=g) > 0.5).float()),
        "sr_averagepooling": operators.build("sr_averagepooling", SMALL, scale=2),
        "cs_walshhadamard": operators.build("cs_walshhadamard", SMALL, ratio=0.25, generator=g),
    }


def posterior_errors(prior, op, sigma_y, method, n=1000, seed=0, **kw):
    """n samples of ``method`` for y = A x (+ noise) with x drawn from a GaussianPrior.

    Returns per-pixel RMS numbers: (mean error vs the exact posterior mean, its Monte-Carlo
    standard error, the prior mean's error, total-variance ratio, RMS of A x̂ − y).
    """
    g = torch.Generator().manual_seed(seed)
    x = prior.sample(1, generator=g).float()
    y = op.A(x)
    if sigma_y > 0:
        y = y + 2 * sigma_y * torch.randn(y.shape, generator=g)
    mean, cov = prior.posterior(op, y, 2 * sigma_y)
    s = solvers.build(method, prior, op, sigma_y=sigma_y, **kw)
    out = s.sample(y.expand(n, *y.shape[1:]).contiguous(), generator=g).double().reshape(n, -1)
    D = out.shape[1]
    mean_err = float((out.mean(0) - mean.reshape(-1)).norm() / math.sqrt(D))
    mc_se = math.sqrt(float(cov.diagonal().clamp_min(0).sum()) / n / D)
    prior_err = float((prior.mean.reshape(-1) - mean.reshape(-1)).norm() / math.sqrt(D))
    var_ratio = float(torch.cov(out.T).trace() / cov.trace())
    dc = float((op.A(out.reshape(n, *op.x_shape).float()) - y).pow(2).mean().sqrt())
    return mean_err, mc_se, prior_err, var_ratio, dc


def trajectory_operator(name, o):
    """The operator of a trajectories_ref64.npz entry; ``o`` is operators_ref64.npz (mask, perm)."""
    shape = (3, 64, 64)
    if name == "sr_averagepooling_x4":
        return operators.build("sr_averagepooling", shape, scale=4)
    if name == "inpainting":
        return operators.build("inpainting", shape, mask=torch.from_numpy(o["inpainting_mask"]))
    if name == "cs_walshhadamard_r4":
        return operators.build("cs_walshhadamard", shape, ratio=0.25,
                               perm=torch.from_numpy(o["cs_walshhadamard_r4_perm"]))
    return operators.build("colorization", shape)


def fft_blur_problem(seed=0):
    """A noisy 8×8 problem on the circular FFT blur (no SVD): (prior, op, y, generator)."""
    from dmir import models
    prior = models.GaussianPrior(torch.zeros(1, 8, 8), 0.25)
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 0.0]])
    op = operators.build("deblur", (1, 8, 8), kernel=k / k.sum(), boundary="circular")
    assert not op.has_svd
    g = torch.Generator().manual_seed(seed)
    x = prior.sample(1, generator=g).float()
    y = op.A(x) + 0.1 * torch.randn(1, 1, 8, 8, generator=g)
    return prior, op, y, g
