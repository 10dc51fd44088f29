"""ILVR and RePaint against literal re-creations of their releases' sampling loops.

The reference loops below follow the releases line by line (jychoi118/ilvr_adm
``p_sample_loop_progressive`` with its ``Resizer`` round trip; andreas128/RePaint ``p_sample``,
``p_sample_loop_progressive``, ``undo`` and ``get_schedule_jump``), on guided-diffusion's
respaced chain (``SpacedDiffusion``: new β over the kept timesteps, float64 coefficients cast to
float32), with the ``fixed_small`` variance (dmir's DDPM step; the releases' learned-range
variance needs a network head the analytic prior does not have). Both draw their random numbers
from one torch generator in the releases' order, so dmir and the reference see the same noise.
The prior is the analytic ``natural`` prior (exact ε, correlated pixels).
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dmir import models, operators, solvers
from dmir.errors import ParameterError

SHAPE = (3, 16, 16)


@pytest.fixture(scope="module")
def prior():
    return models.load("natural")


def _spaced(prior, use):
    """guided-diffusion ``SpacedDiffusion`` coefficients for the kept timesteps ``use``."""
    abar = prior.alphas_cumprod.double().numpy()
    betas, last = [], 1.0
    for i, a in enumerate(abar):
        if i in set(use):
            betas.append(1 - a / last)
            last = a
    betas = np.array(betas)
    alphas = 1 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1 - ac_prev) / (1 - ac)
    c = dict(betas=betas, ac=ac, logvar=np.log(np.append(post_var[1], post_var[1:])),
             coef1=betas * np.sqrt(ac_prev) / (1 - ac),
             coef2=(1 - ac_prev) * np.sqrt(alphas) / (1 - ac))
    return {k: torch.from_numpy(v).float() for k, v in c.items()}


def _p_sample(prior, c, use, img, i, noise):
    """guided-diffusion ``p_sample`` (ε model, clip_denoised=True, fixed_small variance)."""
    eps = prior.eps(img, use[i])
    x0 = (torch.sqrt(1 / c["ac"][i]) * img - torch.sqrt(1 / c["ac"][i] - 1) * eps).clamp(-1, 1)
    mean = c["coef1"][i] * x0 + c["coef2"][i] * img
    return mean + float(i != 0) * torch.exp(0.5 * c["logvar"][i]) * noise, x0


def ilvr_release(prior, use, ref, x_T, g, N, range_t=0):
    """ILVR's loop; φ_N = up(down(·)) with the box resizer (block mean, nearest upsampling)."""
    c = _spaced(prior, use)

    def phi(v):
        return F.interpolate(F.avg_pool2d(v, N), scale_factor=N, mode="nearest")

    img, traj = x_T, []
    for i in reversed(range(len(use))):
        noise = torch.randn(img.shape, generator=g)
        sample, _ = _p_sample(prior, c, use, img, i, noise)
        if i > range_t:
            q = torch.sqrt(c["ac"][i]) * ref + torch.sqrt(1 - c["ac"][i]) * torch.randn(
                img.shape, generator=g)                                     # q_sample(ref, t)
            sample = sample - phi(sample) + phi(q)
        img = sample
        traj.append(img)
    return traj


def schedule_jump(t_T, jump_length, jump_n_sample):
    """RePaint ``get_schedule_jump`` (n_sample = 1)."""
    jumps = {j: jump_n_sample - 1 for j in range(0, t_T - jump_length, jump_length)}
    t, ts = t_T, []
    while t >= 1:
        t -= 1
        ts.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                ts.append(t)
    ts.append(-1)
    return ts


def repaint_release(prior, use, gt, mask, x_T, g, jump_length, jump_n_sample):
    c = _spaced(prior, use)
    times = schedule_jump(len(use), jump_length, jump_n_sample)
    img, pred, traj = x_T, None, []
    for t_last, t_cur in zip(times[:-1], times[1:]):
        if t_cur < t_last:
            noise = torch.randn(img.shape, generator=g)          # p_sample draws it first
            if pred is not None:
                a = c["ac"][t_last]
                weighed = torch.sqrt(a) * gt + torch.sqrt(1 - a) * torch.randn(img.shape,
                                                                               generator=g)
                img = mask * weighed + (1 - mask) * img
            img, pred = _p_sample(prior, c, use, img, t_last, noise)
            traj.append(img)
        else:                                                    # undo, t_shift 1
            beta = c["betas"][t_last + 1]
            img = torch.sqrt(1 - beta) * img + torch.sqrt(beta) * torch.randn(img.shape,
                                                                             generator=g)
    return traj


def _image(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(1, 3, 4, 4, generator=g) * 1.6 - 0.8, size=SHAPE[1:],
                      mode="bilinear", align_corners=False)
    return x + 0.1 * torch.randn(1, *SHAPE, generator=g)


def _run(solver, y, x_T, seed):
    traj = []
    out = solver.sample(y, x_T=x_T, generator=torch.Generator().manual_seed(seed),
                        callback=lambda i, t, d: traj.append(d["x_next"]))
    return out, traj


@pytest.mark.parametrize("steps,range_t", [(50, 0), (20, 300)])
def test_ilvr_matches_the_release_loop(prior, steps, range_t):
    """sr_averagepooling ×4: A⁺(√ᾱ y + √(1-ᾱ) A ε) + (I - A⁺A) x equals the release's
    x - φ(x) + φ(q_sample(ref)) with the box resizer. Measured max |Δ| over the whole
    trajectory: ~1e-6 (float32 rounding)."""
    x = _image()
    op = operators.build("sr_averagepooling", SHAPE, scale=4)
    x_T = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(7))
    s = solvers.build("ilvr", prior, op, steps=steps, range_t=range_t)
    out, traj = _run(s, op.A(x), x_T, 3)
    use = list(s.plan.table)
    # the release compares range_t with the respaced index; map dmir's timestep to it
    ref_range = max([i for i, t in enumerate(use) if t <= range_t], default=-1)
    ref = ilvr_release(prior, use, x, x_T, torch.Generator().manual_seed(3), 4, ref_range)
    assert len(traj) == len(ref) == steps
    err = max(float((a - b).abs().max()) for a, b in zip(traj, ref))
    assert err <= 1e-4, err
    assert float((out - ref[-1]).abs().max()) <= 1e-4
    if range_t:
        return
    # the refinement is real: the low frequencies of the output follow y, those of an
    # unconditional run do not
    assert float((op.A(out) - op.A(x)).abs().max()) < 0.15
    free = solvers.build("ilvr", prior, op, steps=steps, range_t=999).sample(
        op.A(x), x_T=x_T, generator=torch.Generator().manual_seed(3))
    assert float((op.A(free) - op.A(x)).abs().max()) > 0.3


@pytest.mark.parametrize("steps,jl,jn", [(30, 5, 3), (20, 1, 1)])
def test_repaint_matches_the_release_loop(prior, steps, jl, jn):
    """Inpainting, resampling on and off: max |Δ| ≤ 1e-4 over every state the release
    yields (measured ~1e-6)."""
    x = _image(1)
    m = (torch.rand(SHAPE[1:], generator=torch.Generator().manual_seed(2)) > 0.5).float()
    op = operators.build("inpainting", SHAPE, mask=m)
    x_T = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(8))
    s = solvers.build("repaint", prior, op, steps=steps, jump_length=jl, jump_n_sample=jn)
    out, traj = _run(s, op.A(x), x_T, 4)
    ref = repaint_release(prior, list(s.plan.table), x, m, x_T,
                          torch.Generator().manual_seed(4), jl, jn)
    assert len(traj) == len(ref) == s.plan.nfe
    assert s.plan.nfe == steps + (jn - 1) * jl * len(range(0, steps - jl, jl))
    err = max(float((a - b).abs().max()) for a, b in zip(traj, ref))
    assert err <= 1e-4, err
    # the known pixels are kept (up to the last step's ᾱ_0 noise, the prior's x̂0 and the
    # [-1, 1] clip; measured RMS 0.023 / 0.025), the unknown ones are not (0.25 / 0.31)
    known = float(((out - x) * m).pow(2).sum().div(3 * m.sum()).sqrt())
    unknown = float(((out - x) * (1 - m)).pow(2).sum().div(3 * (1 - m).sum()).sqrt())
    assert known < 0.04 and unknown > 5 * known


def test_repaint_defaults_and_equs_variants(prior):
    op = operators.build("inpainting", SHAPE, mask=torch.ones(16, 16))
    s = solvers.build("repaint", prior, op)
    assert (s.steps, s.jump_length, s.jump_n_sample) == (250, 10, 10)
    assert s.plan.nfe == 250 + 24 * 9 * 10        # jumps at 0, 10, …, 230
    assert solvers.build("repaint", prior, op, steps=5).plan.nfe == 5     # too few to jump
    e = solvers.build("repaint-equs+", prior, op, steps=20, jump_length=2, jump_n_sample=2)
    assert e.equs is not None and e.schedule == "quadratic"
    assert solvers.build("ilvr-equs", prior, op, steps=10).equs.group == "hflip"
    with pytest.raises(ParameterError, match="ref_level"):
        solvers.build("ilvr", prior, op, ref_level="bogus")
    with pytest.raises(ParameterError, match="range_t"):
        solvers.build("ilvr", prior, op, range_t=5000)


def test_ilvr_paper_level_differs_from_release(prior):
    """ref_level='paper' noises y to ᾱ_{t-1} (Alg. 1 l. 5): a different chain, same data fit."""
    x = _image(2)
    op = operators.build("sr_averagepooling", SHAPE, scale=2)
    x_T = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(1))
    outs = [solvers.build("ilvr", prior, op, steps=30, ref_level=lv).sample(
        op.A(x), x_T=x_T, generator=torch.Generator().manual_seed(0)) for lv in ("release",
                                                                                "paper")]
    assert float((outs[0] - outs[1]).abs().max()) > 1e-3
    for o in outs:
        assert math.isfinite(float(o.sum()))
        assert float((op.A(o) - op.A(x)).pow(2).mean().sqrt()) < 0.1
