"""Tests of the DPS/DCDP protocol operators (dmir/operators/dps_protocol.py).

* Kernels: DPS's Gaussian (scipy impulse response) and the seeded ``motionblur`` kernel.
* Blur with reflected borders: A against scipy's mirror-mode correlation and DPS's
  ReflectionPad2d + Conv2d, exact adjoint (inner products, autograd, dense transpose), CG pinv, DCT-I pinv (against
  the dense pseudo-inverse, CG and a DDNM/ΠGDM run).
* MATLAB bicubic resize: against an independent per-pixel implementation (symmetric padding),
  interior rows equal to PIL/torch antialiased bicubic, exact SVD / Penrose.
* Masks (DPS mask_generator draw order), the noise conversion, registry and errors.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F
from torch import nn

from dmir import operators
from dmir.errors import ParameterError, ShapeError
from dmir.operators import dps_protocol as dp
from dmir.operators import kernels
from dmir.operators.noise import GaussianNoise


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _dense(fn, in_shape):
    n = math.prod(in_shape)
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    return fn(eye).reshape(n, -1).T.contiguous()


# ============================================================================ kernels
def test_gaussian_kernel_is_dps_impulse_response():
    k = dp.gaussian_kernel(61, 3.0)
    assert k.shape == (61, 61)
    # scipy truncates at 4σ: radius 12, a separable normalised Gaussian in the centre
    r = np.arange(-12, 13)
    g = np.exp(-0.5 * (r / 3.0) ** 2)
    g /= g.sum()
    ref = np.zeros((61, 61))
    ref[30 - 12:30 + 13, 30 - 12:30 + 13] = np.outer(g, g)
    assert np.abs(k - ref).max() < 1e-15
    assert abs(k.sum() - 1) < 1e-12


@pytest.mark.parametrize("size,std", [(61, 3.0), (5, 3.0), (9, 1.3), (1, 0.7), (15, 10.0)])
def test_gaussian_kernel_matches_scipy_without_needing_it(size, std):
    # scipy is a test-only reference: the library computes the kernel with numpy, including
    # small sizes where the 4σ support wraps around scipy's 'reflect' borders several times
    ref = scipy.ndimage.gaussian_filter(np.eye(size)[size // 2][:, None]
                                        * np.eye(size)[size // 2][None, :], sigma=std)
    assert np.abs(dp.gaussian_kernel(size, std) - ref).max() < 1e-15


def test_library_does_not_import_scipy():
    import subprocess
    import sys
    code = ("import sys, dmir, dmir.operators, dmir.models, dmir.solvers, dmir.metrics, "
            "dmir.operators.dps_protocol as d; d.gaussian_kernel(); "
            "print('scipy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_motion_kernel_properties(seed):
    k = dp.motion_kernel(61, 0.5, seed)
    assert k.shape == (61, 61)
    assert (k >= 0).all()
    assert abs(k.sum() - 1) < 1e-5
    assert (k > 0).sum() > 20  # a path, not a dot
    assert np.array_equal(k, dp.motion_kernel(61, 0.5, seed))


def test_motion_kernel_differs_across_seeds_and_intensity():
    a, b = dp.motion_kernel(61, 0.5, 0), dp.motion_kernel(61, 0.5, 1)
    assert np.abs(a - b).max() > 1e-3
    assert np.abs(a - dp.motion_kernel(61, 0.9, 0)).max() > 1e-3
    assert dp.motion_kernel(55, 0.5, 3).shape == (55, 55)
    # below size 54 the package draws a 0-px line (a NaN kernel): a clear error here
    with pytest.raises(ParameterError, match="empty"):
        dp.motion_kernel(31, 0.5, 3)


def test_motion_kernel_does_not_touch_global_numpy_state():
    np.random.seed(123)
    before = np.random.uniform()
    np.random.seed(123)
    dp.motion_kernel(61, 0.5, 5)
    assert np.random.uniform() == before


@pytest.mark.parametrize("bad", [dict(intensity=1.5), dict(intensity=-0.1), dict(size=0)])
def test_motion_kernel_errors(bad):
    with pytest.raises(ParameterError):
        dp.motion_kernel(**bad)


# ============================================================================ blur
def _blur_ops():
    return {
        "gauss61": operators.build("deblur_dps_gauss", (3, 40, 44)).double(),
        "motion61": operators.build("deblur_dps_motion", (3, 36, 33), seed=2).double(),
        "small-asym": dp.ReflectBlur((2, 7, 9), np.random.RandomState(0).rand(5, 3)).double(),
    }


BLUR = _blur_ops()


@pytest.mark.parametrize("case", list(BLUR))
def test_blur_A_matches_scipy_mirror_correlation(case):
    op = BLUR[case]
    x = torch.randn(2, *op.x_shape, generator=_gen(0), dtype=torch.float64)
    y = op.A(x)
    k = op.kernel.double().numpy()
    for b in range(2):
        for c in range(op.x_shape[0]):
            # scipy 'mirror' = reflection without repeating the edge = torch 'reflect'
            ref = scipy.ndimage.correlate(x[b, c].numpy(), k, mode="mirror")
            assert np.abs(y[b, c].numpy() - ref).max() < 1e-12


def test_blur_A_matches_dps_modules():
    """DPS Blurkernel: nn.ReflectionPad2d(k//2) + depthwise nn.Conv2d(3, 3, k) without bias."""
    op = operators.build("deblur_dps_motion", (3, 64, 64), seed=4)
    k = torch.from_numpy(dp.motion_kernel(61, 0.5, 4)).float()
    seq = nn.Sequential(nn.ReflectionPad2d(30), nn.Conv2d(3, 3, 61, padding=0, bias=False,
                                                          groups=3))
    with torch.no_grad():
        seq[1].weight.copy_(k)
        x = torch.rand(1, 3, 64, 64, generator=_gen(1)) * 2 - 1
        assert (op.A(x) - seq(x)).abs().max() < 1e-5


@pytest.mark.parametrize("case", list(BLUR))
def test_blur_adjoint_inner_products(case):
    op = BLUR[case]
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        o = op.to(dtype)
        x = torch.randn(3, *o.x_shape, generator=_gen(2), dtype=dtype)
        y = torch.randn(3, *o.y_shape, generator=_gen(3), dtype=dtype)
        lhs = (o.A(x) * y).flatten(1).sum(1)
        rhs = (x * o.At(y)).flatten(1).sum(1)
        assert ((lhs - rhs).abs() / lhs.abs().clamp_min(1e-3)).max() < tol
    op.double()


@pytest.mark.parametrize("case", list(BLUR))
def test_blur_adjoint_matches_autograd(case):
    op = BLUR[case]
    x = torch.randn(1, *op.x_shape, generator=_gen(4), dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, *op.y_shape, generator=_gen(5), dtype=torch.float64)
    (g,) = torch.autograd.grad((op.A(x) * y).sum(), x)
    assert (g - op.At(y)).abs().max() < 1e-12


def test_blur_adjoint_is_dense_transpose():
    op = BLUR["small-asym"]
    A = _dense(op.A, op.x_shape)
    At = _dense(op.At, op.y_shape)
    assert (A.T - At).abs().max() < 1e-14


def test_blur_pinv_cg_converges_for_well_conditioned_kernel():
    k = np.zeros((5, 5))
    k[2, 2] = 1.0
    k[1, 2] = k[2, 3] = 0.2  # diagonally dominant: well conditioned
    op = dp.ReflectBlur((2, 8, 9), k, cg_iters=500, cg_tol=1e-14).double()
    A = _dense(op.A, op.x_shape)
    y = torch.randn(2, *op.y_shape, generator=_gen(6), dtype=torch.float64)
    ref = (torch.linalg.pinv(A) @ y.reshape(2, -1).T).T.reshape(2, *op.x_shape)
    assert (op.pinv(y) - ref).abs().max() < 1e-9
    # projection x − A⁺(Ax − y) makes A x = y (A is invertible here)
    x = torch.randn(2, *op.x_shape, generator=_gen(7), dtype=torch.float64)
    assert (op.A(op.project(x, y)) - y).abs().max() < 1e-9


def test_blur_pinv_cg_on_dps_gaussian_is_approximate_but_consistent():
    k = dp.gaussian_kernel(61, 3.0)
    x = torch.rand(1, 3, 40, 44, generator=_gen(8), dtype=torch.float64) * 2 - 1
    for method in ("cg", "dct"):
        op = dp.ReflectBlur((3, 40, 44), k, pinv_method=method).double()
        y = op.A(x)
        xh = op.pinv(y)
        rel = float((op.A(xh) - y).norm() / y.norm())
        # data fit of the two regularised inverses (measured 7.5e-3 for ≤ 100 CG iterations,
        # 4.9e-3 for the DCT cut at 1e-2)
        assert rel < 2e-2, method


# ------------------------------------------------------------------ DCT-I pseudo-inverse
def test_dct1_is_the_cosine_sum_and_inverts():
    from dmir.operators.dct import dct1, dct1_2d, idct1, idct1_2d
    for n in (2, 3, 7):
        x = torch.randn(4, n, generator=_gen(20), dtype=torch.float64)
        j = torch.arange(n, dtype=torch.float64)[:, None]
        m = torch.arange(n, dtype=torch.float64)[None, :]
        w = torch.full((n,), 2.0, dtype=torch.float64)
        w[0] = w[-1] = 1.0
        T = w * torch.cos(math.pi * j * m / (n - 1))       # X[j] = Σ_m w_m x_m cos(πjm/(n−1))
        assert (dct1(x) - x @ T.T).abs().max() < 1e-12
        assert (idct1(dct1(x)) - x).abs().max() < 1e-12
    x = torch.randn(2, 3, 5, 6, generator=_gen(21), dtype=torch.float64)
    assert (idct1_2d(dct1_2d(x)) - x).abs().max() < 1e-12
    with pytest.raises(ShapeError):
        dct1(torch.zeros(3, 1))


def test_dct_diagonalises_the_reflect_blur_of_the_dps_gaussian():
    """torch 'reflect' = whole-sample symmetric ⇒ DCT-I (DCT-II would be half-sample)."""
    from dmir.operators.dct import dct1_2d, idct1_2d
    op = BLUR["gauss61"]
    assert op.pinv_kind == "dct"
    x = torch.randn(2, *op.x_shape, generator=_gen(22), dtype=torch.float64)
    via_dct = idct1_2d(op.dct_eig.double() * dct1_2d(x))
    assert (via_dct - op.A(x)).abs().max() < 1e-6    # λ stored in float32
    # with the half-sample (DCT-II) boundary the blur would differ at the borders
    xs = F.pad(x, (30, 30, 30, 30), mode="replicate")  # any other extension is wrong too
    assert (F.conv2d(xs, op.weight.double(), groups=3) - op.A(x)).abs().max() > 1e-3


SYM = np.array([[0.0, 0.1, 0.0], [0.15, 1.0, 0.15], [0.0, 0.1, 0.0]])  # well conditioned


@pytest.mark.parametrize("shape", [(2, 8, 9), (1, 4, 5), (1, 2, 2)])
def test_dct_pinv_equals_dense_pinv_and_cg(shape):
    k = np.pad(SYM, 1) if shape[1] > 2 else SYM   # (1, 4, 5): 5x5 kernel, radius = H − 2
    op = dp.ReflectBlur(shape, k, pinv_method="dct", rcond=0.0).double()
    cg = dp.ReflectBlur(shape, k, pinv_method="cg", cg_iters=500, cg_tol=1e-14).double()
    A = _dense(op.A, op.x_shape)
    y = torch.randn(3, *op.y_shape, generator=_gen(23), dtype=torch.float64)
    ref = (torch.linalg.pinv(A) @ y.reshape(3, -1).T).T.reshape(3, *op.x_shape)
    assert (op.pinv(y) - ref).abs().max() < 1e-6     # the spectrum is stored in float32
    assert (cg.pinv(y) - ref).abs().max() < 1e-9
    o32 = dp.ReflectBlur(shape, k, pinv_method="dct", rcond=0.0)
    assert (o32.pinv(y.float()).double() - ref).abs().max() < 1e-4


def test_dct_pinv_truncated_is_a_projection_and_batch_consistent():
    op = BLUR["gauss61"]
    cut = op.dct_inv == 0
    assert 0.5 < float(cut.float().mean()) < 1.0       # most of the 61×61 blur's spectrum
    x = torch.randn(3, *op.x_shape, generator=_gen(24), dtype=torch.float64)
    P = op.pinv(op.A(x))
    assert (op.pinv(op.A(P)) - P).abs().max() < 1e-6    # A⁺A is idempotent (to float32 λ)
    assert (op.A(op.pinv(op.A(P))) - op.A(P)).abs().max() < 1e-6
    each = torch.cat([op.pinv(op.A(x[i:i + 1])) for i in range(3)])
    assert (each - P).abs().max() < 1e-12


def test_dct_solver_result_equals_cg_solver_result():
    """DDNM with the DCT A⁺ gives the CG result where CG converges (to 1e-4)."""
    from dmir import models, solvers
    prior = models.GaussianPrior(torch.zeros(1, 12, 12), 0.25)
    shape = (1, 12, 12)
    dct = dp.ReflectBlur(shape, SYM, pinv_method="dct", rcond=0.0)
    cg = dp.ReflectBlur(shape, SYM, pinv_method="cg", cg_iters=300, cg_tol=1e-7)
    x = prior.sample(1, generator=_gen(25)).float()
    y = dct.A(x)
    outs = []
    for op in (dct, cg):
        for method, kw in (("ddnm", {}), ("ddnm", dict(sigma_y=0.05)), ("pigdm", {})):
            s = solvers.build(method, prior, op, steps=10, **kw)
            outs.append(s.sample(y.expand(2, *shape).contiguous(), generator=_gen(26)))
    for a, b in zip(outs[:3], outs[3:]):
        assert torch.isfinite(a).all() and (a - b).abs().max() < 1e-4


def test_pinv_method_selection_and_errors():
    assert BLUR["motion61"].pinv_kind == "cg"
    assert BLUR["small-asym"].pinv_kind == "cg"
    assert operators.build("deblur_dps_gauss", (3, 64, 64)).pinv_kind == "dct"
    with pytest.raises(ParameterError, match="symmetric"):
        dp.ReflectBlur((1, 8, 8), np.random.RandomState(0).rand(3, 3), pinv_method="dct")
    for bad in (dict(pinv_method="svd"), dict(rcond=1.0), dict(rcond=-1e-3)):
        with pytest.raises(ParameterError):
            dp.ReflectBlur((1, 8, 8), SYM, **bad)


def test_blur_shape_and_kernel_errors():
    with pytest.raises(ShapeError, match="too small"):
        operators.build("deblur_dps_gauss", (3, 30, 64))
    with pytest.raises(ParameterError, match="odd"):
        operators.build("deblur_dps_gauss", (3, 64, 64), kernel_size=60)
    with pytest.raises(ParameterError, match="odd"):
        dp.ReflectBlur((1, 8, 8), np.ones((4, 3)))
    with pytest.raises(ShapeError):
        BLUR["small-asym"].A(torch.zeros(1, 2, 7, 8, dtype=torch.float64))


# ============================================================================ MATLAB resize
def _cubic(x):
    ax = abs(x)
    if ax <= 1:
        return 1.5 * ax ** 3 - 2.5 * ax ** 2 + 1
    if ax <= 2:
        return -0.5 * ax ** 3 + 2.5 * ax ** 2 - 4 * ax + 2
    return 0.0


def _imresize_direct(x, s):
    """Independent 1-D MATLAB imresize (bicubic, antialiased, 1/s): per output pixel."""
    n = len(x)
    out = math.ceil(n / s)
    delta = (out - n / s) / 2
    P = 4 * s + 4
    xp = np.pad(x, P, mode="symmetric")
    y = np.zeros(out)
    for i in range(out):
        c = (i + 0.5 - delta) * s - 0.5  # centre in 0-based input coordinates
        js = range(math.floor(c - 2 * s) - 1, math.ceil(c + 2 * s) + 2)
        w = np.array([_cubic((j - c) / s) / s for j in js])
        w /= w.sum()
        y[i] = sum(wi * xp[j + P] for wi, j in zip(w, js))
    return y


@pytest.mark.parametrize("n,s", [(32, 4), (19, 3), (24, 2), (10, 4)])
def test_matlab_resize_matrix_matches_direct(n, s):
    M = dp.matlab_resize_matrix(n, 1.0 / s)
    assert M.shape == (math.ceil(n / s), n)
    assert np.allclose(M.sum(1), 1, atol=1e-12)
    X = np.random.RandomState(n).randn(n, 3)
    for c in range(3):
        assert np.abs(M @ X[:, c] - _imresize_direct(X[:, c], s)).max() < 1e-12


def test_matlab_resize_interior_equals_torch_pil_antialiased_bicubic():
    n, s = 64, 4
    M = dp.matlab_resize_matrix(n, 1 / s)
    T = kernels.resize_matrix(n, n // s)  # torch antialiased bicubic (= PIL)
    inner = slice(3, n // s - 3)
    assert np.abs(M[inner] - T[inner]).max() < 1e-12
    assert np.abs(M - T).max() > 1e-3  # borders: mirrored (MATLAB) vs clipped (PIL)


def test_sr_matlab_bicubic_operator_vs_pil():
    from PIL import Image

    op = operators.build("sr_matlab_bicubic", (3, 256, 256), scale=4)
    assert op.y_shape == (3, 64, 64)
    rng = np.random.RandomState(0)
    img = scipy.ndimage.gaussian_filter(rng.rand(256, 256), 2.0).astype(np.float32)
    x = torch.from_numpy(img).expand(1, 3, 256, 256).contiguous()
    y = op.A(x)[0, 0].numpy()
    pil = np.asarray(Image.fromarray(img, mode="F").resize((64, 64), Image.BICUBIC))
    d = np.abs(y - pil)
    assert d[4:-4, 4:-4].max() < 1e-5  # identical kernels away from the borders
    assert d.max() < 0.1  # border handling differs (reported in the review)


def test_sr_matlab_bicubic_exact_and_spectral():
    op = operators.build("sr_matlab_bicubic", (2, 9, 13), scale=3).double()
    assert op.y_shape == (2, 3, 5)
    x = torch.randn(2, *op.x_shape, generator=_gen(9), dtype=torch.float64)
    Mh = torch.from_numpy(dp.matlab_resize_matrix(9, 1 / 3))
    Mw = torch.from_numpy(dp.matlab_resize_matrix(13, 1 / 3))
    # with threshold 1e-3 nothing is truncated: A is the resize exactly (float32 buffers)
    assert (op.A(x) - Mh @ x @ Mw.T).abs().max() < 1e-6
    A = _dense(op.A, op.x_shape)
    P = _dense(op.pinv, op.y_shape)
    # SeparableSVD keeps float32 factors: Penrose / spectral identities hold to ~1e-8
    assert (A @ P @ A - A).abs().max() < 1e-7
    assert (_dense(op.At, op.y_shape) - A.T).abs().max() < 1e-12
    z = op.Vt(x)
    assert (op.U(op.singulars() * z) - op.A(x)).abs().max() < 1e-6


@pytest.mark.parametrize("scale", [None, 1, 2.5, "x"])
def test_sr_matlab_bicubic_bad_scale(scale):
    with pytest.raises(ParameterError):
        operators.build("sr_matlab_bicubic", (3, 16, 16), scale=scale)


# ============================================================================ masks
@pytest.mark.parametrize("seed", [0, 3, 11])
def test_mask_box_follows_dps(seed):
    m = dp.mask_box(256, 128, seed=seed)
    assert m.shape == (256, 256) and m.dtype == torch.float32
    holes = (m == 0).nonzero()
    t, left = int(holes[:, 0].min()), int(holes[:, 1].min())
    assert int((m == 0).sum()) == 128 * 128
    assert int(holes[:, 0].max()) == t + 127 and int(holes[:, 1].max()) == left + 127
    # DPS's draw order under np.random.seed: h, w = randint(128, 129); t, l = randint(16, 112)
    rng = np.random.RandomState(seed)
    rng.randint(128, 129), rng.randint(128, 129)
    assert (t, left) == (rng.randint(16, 112), rng.randint(16, 112))
    assert torch.equal(m, dp.mask_box(256, 128, seed=seed))


def test_mask_box_seeds_differ_and_errors():
    assert not torch.equal(dp.mask_box(256, seed=0), dp.mask_box(256, seed=1))
    with pytest.raises(ShapeError):
        dp.mask_box(64, box=128)


def test_mask_random_fraction_and_determinism():
    m = dp.mask_random(256, 0.7, seed=0)
    assert m.shape == (256, 256)
    assert int((m == 0).sum()) == int(256 * 256 * 0.7)
    assert torch.equal(m, dp.mask_random(256, 0.7, seed=0))
    assert not torch.equal(m, dp.mask_random(256, 0.7, seed=1))
    # DPS: fraction drawn from U(0.3, 0.7) per image
    miss = [float((dp.mask_random(64, (0.3, 0.7), seed=s) == 0).float().mean())
            for s in range(5)]
    assert all(0.29 < f < 0.71 for f in miss) and len(set(miss)) > 1
    with pytest.raises(ParameterError):
        dp.mask_random(16, 1.2)


def test_inpainting_registry_entries():
    op = operators.build("inpainting_box", (3, 256, 256), seed=5)
    assert op.y_dim == 3 * (256 * 256 - 128 * 128)
    assert torch.equal(op.mask[0], dp.mask_box(256, seed=5))
    op = operators.build("inpainting_random", (3, 32, 48), missing=0.7, seed=1)
    assert op.y_dim == 3 * (32 * 48 - int(32 * 48 * 0.7))
    x = torch.randn(1, 3, 32, 48, generator=_gen(0))
    assert torch.equal(op.At(op.A(x)), x * op.mask)


# ============================================================================ noise, registry
def test_dps_noise_level_conversion():
    assert dp.DPS_SIGMA_MODEL == 0.05
    assert dp.DPS_SIGMA_Y == pytest.approx(0.025)
    assert GaussianNoise(dp.DPS_SIGMA_Y).sigma_model == pytest.approx(0.05)


def test_registry_names_and_params():
    names = set(operators.names())
    for n in ("deblur_dps_gauss", "deblur_dps_motion", "sr_matlab_bicubic", "inpainting_box",
              "inpainting_random"):
        assert n in names
        assert n in operators.describe()
    assert operators.params("deblur_dps_motion") == (["seed", "intensity", "kernel_size"], False)
    assert operators.params("deblur_dps_gauss") == (["kernel_size", "std"], False)
    assert operators.params("sr_matlab_bicubic") == (["scale", "threshold"], False)
    with pytest.raises(ParameterError, match="unexpected"):
        operators.build("deblur_dps_gauss", (3, 64, 64), sigma=3)


def test_operators_batch_and_float32_default():
    for name, kw in (("deblur_dps_gauss", {}), ("sr_matlab_bicubic", dict(scale=4))):
        op = operators.build(name, (3, 64, 64), **kw)
        x = torch.randn(4, 3, 64, 64, generator=_gen(1))
        y = op.A(x)
        assert y.dtype == torch.float32
        assert torch.allclose(y[2:3], op.A(x[2:3]), atol=1e-6)
        assert op.At(y).shape == x.shape


def test_blur_pinv_batch_elements_stop_independently():
    k = np.zeros((5, 5))
    k[2, 2] = 1.0
    k[1, 2] = k[2, 3] = 0.2
    op = dp.ReflectBlur((2, 8, 9), k, cg_iters=200, cg_tol=1e-10).double()
    y = torch.randn(3, *op.y_shape, generator=_gen(10), dtype=torch.float64)
    y[1] *= 1e-3  # different scales: each element converges at its own iteration
    full = op.pinv(y)
    each = torch.cat([op.pinv(y[i:i + 1]) for i in range(3)])
    assert ((full - each).abs().amax((1, 2, 3)) / each.abs().amax((1, 2, 3))).max() < 1e-12
