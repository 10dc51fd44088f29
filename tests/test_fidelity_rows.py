"""Issue 25: the tests that back the rows of docs/fidelity.md changed by the issue, each asserting
what its row says (CDDB's step in equs-table1, ΠGDM's settings, DeqIR's NFE cell and default
chain), and the paper columns of the presets, which these fixes must not touch."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dmir import models, operators, solvers
from dmir.bench import presets, summary
from solver_helpers import trajectory_operator

DATA = Path(__file__).parent / "data"

#: sha256 (first 16 hex digits) of every preset's paper numbers, as they were before issue 25
PAPER_DIGESTS = {"equs-table1": (100, "dceb34baa6f4f78f"), "deqir-table1": (60, "13ef4ea710cf7acb"),
                 "deqir-table2": (12, "d5db66e00a7f246f"), "deqir-table3": (10, "110fec64cf0ff35c"),
                 "dcdp": (0, "4f53cda18c2baa0c")}


def _digest(paper: dict) -> str:
    blob = json.dumps(sorted([list(k), sorted(v.items())] for k, v in paper.items()),
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", list(PAPER_DIGESTS))
def test_paper_columns_unchanged(name):
    p = presets.get(name).paper
    assert (len(p), _digest(p)) == PAPER_DIGESTS[name]
    # and the digest notices a changed cell
    if p:
        k = next(iter(p))
        q = {**p, k: {m: v + 0.01 for m, v in p[k].items()}}
        assert _digest(q) != PAPER_DIGESTS[name][1]


# ----------------------------------------------------------------------------- CDDB step
def _psnr(a, b):
    return float(10 * torch.log10(4 / ((a.clamp(-1, 1) - b) ** 2).mean()))


def test_equs_table1_cddb_runs_the_step_that_reproduces_the_table():
    """Row CDDB: step_size 1 (one step on Aᵀ(Ax̂0 − y)) equals DDNM on inpainting and block CS —
    as EquS Table 1's CDDB rows do — and is far below it on SR ×4; the release's step 2 is kept
    as the variant row and differs from DDNM on inpainting (the table does not)."""
    ms = {m.name: m for m in presets.get("equs-table1").methods}
    assert ms["CDDB"].kwargs == ms["CDDB+EquS+"].kwargs == {"step_size": 1.0}
    assert ms["CDDB (release step 2)"].kwargs == {"step_size": 2.0}
    assert ms["CDDB (release step 2)"].method == "cddb" and ms["CDDB"].steps == 100
    prior = models.load("natural")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g) * 1.6 - 0.8
    mask = (torch.rand(32, 32, generator=g) > 0.26).float()
    ops = {"inpainting": operators.build("inpainting", (3, 32, 32), mask=mask),
           "cs25": operators.build("cs_blockbased", (3, 32, 32), ratio=0.25, block=32,
                                   generator=g),
           "sr4": operators.build("sr_bicubic", (3, 32, 32), scale=4)}
    out = {}
    for t, op in ops.items():
        y = op.A(x)
        for label, method, kw in (("ddnm", "ddnm", {}), ("s1", "cddb", {"step_size": 1.0}),
                                  ("s2", "cddb", {"step_size": 2.0})):
            s = solvers.build(method, prior, op, steps=20, eta=0.85, **kw)
            out[t, label] = _psnr(s.sample(y, generator=torch.Generator().manual_seed(1)), x)
    for t in ("inpainting", "cs25"):
        assert abs(out[t, "s1"] - out[t, "ddnm"]) < 1e-3, t           # = DDNM, as the table
        assert abs(out[t, "s2"] - out[t, "ddnm"]) > 0.2, t            # the release step: not
    assert out["inpainting", "s2"] < out["inpainting", "ddnm"] - 1.0
    assert out["sr4", "s1"] < out["sr4", "ddnm"] - 2.0                # the table: −4.0, −4.4 dB


# ----------------------------------------------------------------------------- ΠGDM
def test_pigdm_settings_say_where_they_come_from():
    p = presets.get("equs-table1")
    ms = {m.name: m for m in p.methods}
    assert (ms["ΠGDM"].steps, ms["ΠGDM"].eta) == (100, 1.0) == tuple(presets.PIGDM_PAPER.values())
    red = ms["ΠGDM (RED-diff 50, η 0)"]
    assert (red.method, red.steps, red.eta) == ("pigdm", 50, 0.0)
    assert "dmir's choice" in p.protocol and "RED-diff" in p.protocol
    # variant rows carry no published numbers
    assert not any(k[2] in ("ΠGDM (RED-diff 50, η 0)", "CDDB (release step 2)") for k in p.paper)
    presets.check(p)


# ----------------------------------------------------------------------------- DeqIR NFE
def test_deqir_nfe_cell_is_flagged_as_a_unit_mismatch():
    t1 = presets.get("deqir-table1")
    assert t1.paper[("imagenet", "sr4", "DeqIR")]["nfe"] == 15.0      # as published
    assert summary.compare("nfe", 375, 15) == (360, True)               # per-image vs batched
    assert summary.compare("nfe", 100, 100) == (0, False)
    assert summary.compare("nfe", 20, 20)[1] is False
    assert "flags that NFE cell" in t1.protocol


# ----------------------------------------------------------------------------- DeqIR default
@pytest.fixture(scope="module")
def traj():
    return np.load(DATA / "trajectories_ref64.npz")


@pytest.fixture(scope="module")
def opref():
    return np.load(DATA / "operators_ref64.npz")


def _deqir_chain(prior, op, y, x_T, T, etw):
    """The DeqIR chain written out sequentially (nw = 0: no fresh noise; ε weight
    √(1 − etw²)·√(1 − ᾱ')), DDNM's projection, uniform skip ⌊1000/T⌋, last step to ᾱ = 1."""
    skip = prior.num_timesteps // T
    ts = [(T - 1 - i) * skip for i in range(T)] + [-1]
    ab = prior.alphas_cumprod.double()
    x = x_T.double()
    for t, tn in zip(ts[:-1], ts[1:]):
        a, an = float(ab[t]), (1.0 if tn < 0 else float(ab[tn]))
        eps = prior.eps(x, t)
        x0 = op.project((x - (1 - a) ** 0.5 * eps) / a ** 0.5, y)
        x = an ** 0.5 * x0 + (1 - etw ** 2) ** 0.5 * (1 - an) ** 0.5 * eps
    return x


@pytest.mark.parametrize("opname", ["inpainting", "sr_averagepooling_x4"])
def test_default_deqir_is_its_converged_chain_with_the_real_defaults(traj, opref, opname):
    """Row DeqIR, default strategy: with the real defaults (nw 0, etw 0.1, T 25) the result is the
    converged DeqIR chain (not the DDNM η-chain: etw 0.1 scales ε by √0.99), to 1e-5."""
    prior = models.GaussianPrior(torch.from_numpy(traj["prior_mu"]).double(),
                                 float(traj["prior_var"]))
    op = trajectory_operator(opname, opref).double()
    y = op.A(torch.from_numpy(traj["x_true"]).double())
    x_T = torch.from_numpy(traj["x_T"]).double()
    s = solvers.build("deqir", prior, op)
    assert (s.steps, s.nw, s.etw) == (25, 0.0, 0.1)
    out = s.sample(y, x_T=x_T.clone())
    ref = _deqir_chain(prior, op, y, x_T, 25, 0.1)
    assert (out - ref).abs().max() < 1e-5
    ddnm0 = solvers.build("ddnm", prior, op, steps=25, eta=0.0).sample(y, x_T=x_T.clone())
    assert (out - ddnm0).abs().max() > 1e-4            # not "the exact DDNM chain"


def test_published_deqir_is_the_release_anderson_iterate(traj, opref):
    """Row DeqIR, published: 15 evaluations, and the returned z is the 15th Anderson iterate —
    re-running Anderson by hand from x_T with the published m/λ/β gives the same z; the chain
    is not converged (distance to the sequential chain ≥ 1e-3)."""
    from dmir.solvers.anderson import anderson

    prior = models.GaussianPrior(torch.from_numpy(traj["prior_mu"]), float(traj["prior_var"]))
    op = trajectory_operator("sr_averagepooling_x4", opref)
    y = op.A(torch.from_numpy(traj["x_true"]))
    x_T = torch.from_numpy(traj["x_T"]).clone()
    pub = solvers.build("deqir", prior, op, steps=20, strategy="published")
    assert (pub.m, pub.lam, pub.beta, pub.tol, pub.max_iter) == (5, 1e-3, 1.0, 1e-3, 15)
    ctx = pub.prepare(y, x_T)
    z, info = pub.solve(x_T, ctx)
    assert info["iterations"] == 15 and not info["converged"]
    z0 = pub.initial_states(x_T)
    shape = z0.shape

    def f(zf):
        return pub.F(zf.reshape(shape), x_T, ctx).reshape(-1, *shape[2:])

    with torch.no_grad():
        fz, hand = anderson(f, z0.reshape(-1, *shape[2:]), m=5, lam=1e-3, beta=1.0, tol=1e-3,
                            max_iter=15, groups="slot")
    assert hand["iterations"] == 15
    assert torch.equal(hand["iterate"].reshape(shape), z)         # the mixed iterate x_15 …
    assert not torch.equal(fz.reshape(shape), z)                  # … not F(x_15)
    seq = solvers.build("deqir", prior, op, steps=20, strategy="sequential")
    full = seq.sample(y, x_T=x_T.clone())
    assert (z[-1] - full).abs().max() > 1e-3                      # not converged at T = 20


# ----------------------------------------------------------------------------- DCDP kernel
def _package_kernel(size, intensity):
    """The ``motionblur`` package's ``Kernel((size, size), intensity).kernelMatrix``, transcribed
    from its source as it runs: numpy's *global* random state (``from numpy.random import
    uniform, triangular, beta``), one path per kernel (the package is not installable here).
    Independent of dmir's port, which draws from a private RandomState."""
    from numpy.random import beta, triangular, uniform
    from PIL import Image, ImageDraw, ImageFilter

    eps, x, y = 0.1, 2 * size, 2 * size
    diagonal = (x ** 2 + y ** 2) ** 0.5
    max_path_len = 0.75 * diagonal * (uniform() + uniform(0, intensity ** 2))
    steps = []
    while sum(steps) < max_path_len:
        step = beta(1, 30) * (1 - intensity + eps) * diagonal
        if step < max_path_len:
            steps.append(step)
    num_steps = len(steps)
    max_angle = uniform(0, intensity * np.pi)
    jitter = beta(2, 20)
    angles = [uniform(low=-max_angle, high=max_angle)]
    while len(angles) < num_steps:
        angle = triangular(0, intensity * max_angle, max_angle + eps)
        angle *= -np.sign(angles[-1]) if uniform() < jitter else np.sign(angles[-1])
        angles.append(angle)
    path = np.cumsum(np.asarray(steps) * np.exp(1j * np.asarray(angles)))
    path = (path - sum(path) / num_steps) * np.exp(1j * uniform(0, np.pi)) + (x + 1j * y) / 2
    img = Image.new("RGB", (x, y))
    ImageDraw.Draw(img).line(xy=[(p.real, p.imag) for p in path], width=int(diagonal / 150))
    img = img.filter(ImageFilter.GaussianBlur(radius=int(diagonal * 0.01)))
    img = img.resize((size, size), resample=Image.Resampling.LANCZOS).convert("L")
    k = np.asarray(img, dtype=np.float32).copy()
    return k / np.sum(k)


def test_motion_kernel_matches_the_package_algorithm_on_the_global_rng():
    """Row DCDP: the DPS/DCDP MotionBlurOperator, after np.random.seed(s), draws a Kernel in
    Blurkernel.weights_init and a second one itself, and convolves with the second."""
    state = np.random.get_state()
    try:
        np.random.seed(3)
        first = _package_kernel(61, 0.5)
        second = _package_kernel(61, 0.5)
    finally:
        np.random.set_state(state)
    op = operators.build("deblur_dps_motion", (1, 64, 64), seed=3)
    assert np.abs(op.kernel.double().numpy() - second).max() < 1e-7
    assert np.abs(op.kernel.double().numpy() - first).max() > 1e-3


# ----------------------------------------------------------------------------- DDNM η
def test_ddnm_eta_renoising_is_the_reference_formula():
    """Row DDNM (η): the reference's re-noising, xt_next = √ᾱ' x̂0 + c1 z + c2 ε with
    c1 = √(1 − ᾱ')·η, c2 = √(1 − ᾱ')·√(1 − η²) (DDNM svd_ddnm.py), for η ∈ {0.5, 0.85, 1}."""
    from dmir.solvers.ddnm import ddim_renoise

    g = torch.Generator().manual_seed(0)
    x0, eps, z = (torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    for eta in (0.5, 0.85, 1.0):
        a = 0.37
        ref = a ** 0.5 * x0 + (1 - a) ** 0.5 * eta * z + (1 - a) ** 0.5 * (1 - eta ** 2) ** 0.5 * eps
        assert (ddim_renoise(x0, eps, a, eta, z) - ref).abs().max() < 1e-12
