"""Latent DCDP: a tiny random-weight LDM in the official layout (runs, NFE, the latent
consistency phase), and a real property with an exact autoencoder and an analytic latent prior
(beats A⁺y, approaches the exact posterior mean)."""
import math

import pytest
import torch
from torch import nn
import torch.nn.functional as F

from dmir import models, operators, solvers
from dmir.errors import ParameterError, ShapeError, UnknownNameError
from dmir.models import ldm
from dmir.solvers.dcdp import purification_schedule
from dmir.solvers.dcdp_latent import LATENT_PRESETS, DecodedOperator, LatentDCDP
from test_ldm import fill

TINY = {
    "linear_start": 0.0015, "linear_end": 0.0195, "timesteps": 1000, "scale_factor": 0.5,
    "unet": {"image_size": 8, "in_channels": 3, "out_channels": 3, "model_channels": 32,
             "attention_resolutions": [2], "num_res_blocks": 1, "channel_mult": [1, 2],
             "num_head_channels": 16},
    "first_stage": {"type": "vq", "embed_dim": 3, "n_embed": 512, "ddconfig": {
        "double_z": False, "z_channels": 3, "resolution": 16, "in_channels": 3, "out_ch": 3,
        "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8],
        "dropout": 0.0}},
}


class _Counting(nn.Module):
    """Wraps the latent network prior and counts ε evaluations."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0
        self.alphas_cumprod = inner.alphas_cumprod

    def eps(self, z, t):
        self.calls += 1
        return self.inner.eps(z, t)


@pytest.fixture(scope="module")
def tiny_prior():
    """A random-weight LatentPrior (VQ f = 2, 3×8×8 latents for 16×16 images)."""
    net = ldm.build(TINY)
    net.load_state_dict({k: fill(k, v.shape) for k, v in net.state_dict().items()})
    p = ldm.prior(net.eval().requires_grad_(False), TINY)
    p.latent_model = _Counting(p.latent_model)
    return p


def _sr(shape=(3, 16, 16)):
    return operators.build("sr_averagepooling", shape, scale=2)


# ----------------------------------------------------------------------------- runs, NFE
@pytest.mark.parametrize("consistency", ["latent", "pixel"])
@pytest.mark.parametrize("purifier", ["ddim", "tweedie"])
def test_runs_and_counts_nfe(tiny_prior, consistency, purifier):
    op = _sr()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    y = op.A(x)
    s = solvers.build("dcdp", tiny_prior, op, K=4, tau=3, T0=40, purifier=purifier,
                      consistency=consistency)
    assert isinstance(s, LatentDCDP) and s.latent_shape == (3, 8, 8)
    tiny_prior.latent_model.calls = 0
    seen = []
    out = s.sample(y, generator=torch.Generator().manual_seed(0),
                   progress=lambda i, n: seen.append((i, n)))
    levels = purification_schedule(4, 40)
    expected = sum(min(20, max(t, 2)) for t in levels) if purifier == "ddim" else 4
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert s.nfe == s.total_nfe == tiny_prior.latent_model.calls == expected
    assert seen[-1] == (expected, expected) and len(seen) == expected


def test_latent_consistency_phase_decreases_data_misfit(tiny_prior):
    """τ SGD steps on mean‖A(D(z)) − y‖² through the (quantising) decoder reduce the misfit."""
    op = _sr()
    g = torch.Generator().manual_seed(3)
    y = op.A(tiny_prior.decode(torch.randn(2, 3, 8, 8, generator=g)))   # reachable target
    z0 = torch.randn(2, 3, 8, 8, generator=g)
    s = LatentDCDP(tiny_prior, op, K=1, tau=60, lr=2.0, purifier="none", reencode=False)
    before = float(((op.A(tiny_prior.decode(z0)) - y) ** 2).mean())
    z = s.reconstruct(z0, y)
    after = float(s.last_loss.mean())
    recomputed = float(((op.A(tiny_prior.decode(z)) - y) ** 2).mean())
    print(f"latent consistency: mean misfit {before:.4g} -> {after:.4g}")
    assert after == pytest.approx(recomputed, rel=1e-5)
    assert after < 0.5 * before, (before, after)
    assert isinstance(s.op, DecodedOperator) and s.op.y_shape == op.y_shape


def test_pixel_consistency_phase_is_pixel_dcdp(tiny_prior):
    """Pixel consistency reconstructs in image space: from zeros on a consistent system it
    reaches A x = y (purifier none)."""
    op = _sr()
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    y = op.A(x)
    s = LatentDCDP(tiny_prior, op, K=1, tau=300, lr=20.0, purifier="none", consistency="pixel")
    out = s.reconstruct(torch.zeros_like(x), y)
    assert torch.allclose(op.A(out), y, atol=1e-4)


# ----------------------------------------------------------------------------- options
def test_presets_dispatch_and_errors(tiny_prior):
    op = _sr()
    s = solvers.build("dcdp", tiny_prior, op)                          # sr → latent ×4 preset
    assert (s.task, s.consistency, s.K, s.tau, s.T0, s.init) == ("sr4", "latent", 10, 100, 400,
                                                                  "randn")
    assert s.lr == pytest.approx(1e3 * math.prod(op.y_shape) / (3 * 64 * 64))
    s = solvers.build("dcdp", tiny_prior, op, task="deblur_gauss")
    assert (s.consistency, s.K, s.tau, s.init) == ("pixel", 4, 250, "zeros")
    s = solvers.build("dcdp", tiny_prior, op, task="inpainting", steps=5)
    assert (s.K, s.T0, s.tau) == (5, 500, 50) and len(s.levels) == 5
    assert LATENT_PRESETS["nonlinear_deblur"]["T_end"] == 50
    with pytest.raises(ParameterError, match="consistency must be"):
        LatentDCDP(tiny_prior, op, consistency="both")
    with pytest.raises(ParameterError, match="init must be"):
        LatentDCDP(tiny_prior, op, consistency="pixel", init="randn")
    with pytest.raises(UnknownNameError, match="no preset"):
        LatentDCDP(tiny_prior, op, task="colorize")
    with pytest.raises(ShapeError, match="multiples of 4"):
        LatentDCDP(tiny_prior, _sr((3, 18, 18)))
    with pytest.raises(ParameterError, match="consistency"):             # a pixel prior
        solvers.build("dcdp", models.GaussianPrior(torch.zeros(3, 16, 16)), op,
                      consistency="latent")
    with pytest.raises(ShapeError, match="x_T must have shape"):
        LatentDCDP(tiny_prior, op, K=1, tau=1).sample(op.A(torch.zeros(1, 3, 16, 16)),
                                                      x_T=torch.zeros(1, 3, 16, 16))


def test_x_T_is_the_initial_latent_and_generator_determinism(tiny_prior):
    op = _sr()
    y = op.A(torch.rand(1, 3, 16, 16) * 2 - 1)
    s = LatentDCDP(tiny_prior, op, K=2, tau=2, T0=10, purifier="tweedie")
    a = s.sample(y, generator=torch.Generator().manual_seed(5))
    b = s.sample(y, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    z0 = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    c = s.sample(y, x_T=z0, generator=torch.Generator().manual_seed(5))
    assert not torch.equal(a, c)


# ----------------------------------------------------------------------------- real property
class ShuffleAE(nn.Module):
    """An exact autoencoder: E = pixel-unshuffle (C, H, W) → (4C, H/2, W/2), D = its inverse
    (a permutation of the pixels, so D(E(x)) = x)."""

    factor = 2

    def __init__(self, channels=1):
        super().__init__()
        self.latent_channels = 4 * channels

    def latent_shape(self, x_shape):
        C, H, W = x_shape
        return (4 * C, H // 2, W // 2)

    def encode(self, x):
        return F.pixel_unshuffle(x, 2)

    def decode(self, z):
        return F.pixel_shuffle(z, 2)


def _gp_covariance(n=8, ell=2.0, var=0.25):
    ij = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"), -1)
    d2 = (ij.reshape(-1, 1, 2) - ij.reshape(1, -1, 2)).double().pow(2).sum(-1)
    return var * torch.exp(-d2 / (2 * ell ** 2)) + 1e-4 * torch.eye(n * n, dtype=torch.float64)


class IdentityAE(nn.Module):
    """E = D = identity (f = 1): latent DCDP must reduce to pixel DCDP."""

    factor, latent_channels = 1, 1

    def latent_shape(self, x_shape):
        return tuple(x_shape)

    def encode(self, x):
        return x.clone()

    def decode(self, z):
        return z.clone()


def _gp_problem(n_images=16, seed=0):
    """A smooth Gaussian (GP) prior over 8×8 images, half the pixels missing."""
    K = _gp_covariance()
    pixel_prior = models.GaussianPrior(torch.zeros(1, 8, 8), K)
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(8, 8, generator=g) > 0.5).float()
    op = operators.build("inpainting", (1, 8, 8), mask=mask)
    x = pixel_prior.sample(n_images, generator=g).float()
    return K, pixel_prior, op, x, op.A(x)


@pytest.mark.parametrize("consistency", ["latent", "pixel"])
def test_identity_autoencoder_reduces_to_pixel_dcdp(consistency):
    """With E = D = id the latent solver is pixel DCDP exactly (same draws, same output): the
    reconstruction through A∘D, the re-encoding, the latent purification and the final decode
    add nothing."""
    _, pixel_prior, op, x, y = _gp_problem(4)
    prior = ldm.LatentPrior(pixel_prior, IdentityAE())
    kw = dict(K=5, tau=20, lr=10.0, T0=200, init="zeros")
    for purifier in ("ddim", "tweedie"):
        a = LatentDCDP(prior, op, consistency=consistency, purifier=purifier, **kw).sample(
            y, generator=torch.Generator().manual_seed(2))
        b = solvers.DCDP(pixel_prior, op, clip=False, purifier=purifier, **kw).sample(
            y, generator=torch.Generator().manual_seed(2))
        assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())


@pytest.mark.parametrize("consistency", ["latent", "pixel"])
def test_exact_autoencoder_gaussian_prior_beats_pinv(consistency):
    """The GP prior carried to latent space by the exact pixel-unshuffle autoencoder
    (Σ_z = P Σ Pᵀ), inpainting half the pixels: latent DCDP's error is far below A⁺y's, and
    (a sanity bound) not below the exact posterior mean's, the minimum-MSE estimate."""
    K, pixel_prior, op, x, y = _gp_problem()
    P = F.pixel_unshuffle(torch.eye(64, dtype=torch.float64).reshape(64, 1, 8, 8), 2)
    P = P.reshape(64, 64).T                          # latent = P @ image (a permutation)
    prior = ldm.LatentPrior(models.GaussianPrior(torch.zeros(4, 4, 4), P @ K @ P.T),
                            ShuffleAE(), scale_factor=1.0)
    s = LatentDCDP(prior, op, consistency=consistency, K=10, tau=60, lr=10.0, T0=300)
    out = s.sample(y, generator=torch.Generator().manual_seed(1))
    mse = float((out - x).pow(2).mean())
    mse_pinv = float((op.pinv(y) - x).pow(2).mean())
    mean = torch.cat([pixel_prior.posterior(op, y[i:i + 1], 0.0)[0] for i in range(len(y))])
    mse_post = float((mean.float() - x).pow(2).mean())
    dc = float((op.A(out) - y).pow(2).mean().sqrt())
    print(f"{consistency}: MSE dcdp {mse:.4g}, A+y {mse_pinv:.4g}, posterior mean "
          f"{mse_post:.4g}; RMS(A x - y) {dc:.3g}; NFE {s.nfe}")
    assert mse < 0.25 * mse_pinv
    assert mse > mse_post
    assert dc < 0.05


# ----------------------------------------------------------------------------- command line
def test_cli_restore_with_an_ldm_checkpoint(tmp_path, capsys):
    """``dmir restore --method dcdp --model model.ckpt`` detects the LDM checkpoint (layout of
    the official code, tiny random weights) and runs latent DCDP end to end."""
    import json
    import os
    from PIL import Image
    from dmir import cli, io as dio
    from test_ldm import DATA, official_checkpoint, tiny_config
    with open(os.path.join(DATA, "ldm_tiny_ref.json")) as f:
        case = json.load(f)["vq_uncond"]
    ckpt = tmp_path / "model.ckpt"
    torch.save(official_checkpoint(case, tiny_config(case)), ckpt)
    img = tmp_path / "clean.png"
    Image.open(os.path.join(DATA, "kodim05_crop64.png")).convert("RGB").resize((16, 16)).save(img)
    out = tmp_path / "out.png"
    rc = cli.main(["restore", str(img), "-o", str(out), "--task", "sr_averagepooling",
                   "--scale", "2", "--degrade", "--method", "dcdp", "--model", str(ckpt),
                   "--steps", "2"])
    text = capsys.readouterr()
    assert rc == 0, text.err
    assert "(ldm)" in text.err and "EMA" in text.err
    n = sum(min(20, max(t, 2)) for t in purification_schedule(2, 400))
    assert f"{n} network evaluations" in text.out
    assert dio.read_image(out).shape == (1, 3, 16, 16)
