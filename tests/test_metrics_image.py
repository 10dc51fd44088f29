"""dmir.metrics.image: PSNR and both SSIM variants against scikit-image on real photos."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dmir import metrics
from dmir.errors import ParameterError, ShapeError

skm = pytest.importorskip("skimage.metrics")

DATA = Path(__file__).parent / "data"
PHOTOS = ["kodim05_crop64.png", "kodim23_crop64.png", "lpips-example/ex_ref.png",
          "lpips-example/ex_p0.png", "lpips-example/ex_p1.png"]


def _rgb(name) -> np.ndarray:
    """(H, W, 3) float64 in [0, 1]."""
    return np.asarray(Image.open(DATA / name).convert("RGB"), dtype=np.float64) / 255


def _pairs():
    """Real image pairs: photo vs other photo, vs a noisy / blurred / JPEG'd / shifted copy,
    and a non-square crop."""
    rng = np.random.default_rng(0)
    ims = [_rgb(n) for n in PHOTOS]
    out = [(ims[2], ims[3]), (ims[2], ims[4]), (ims[0], ims[1])]
    a = ims[0]
    out.append((np.clip(a + rng.normal(0, 0.08, a.shape), 0, 1), a))
    blur = (a + np.roll(a, 1, 0) + np.roll(a, 1, 1) + np.roll(a, (1, 1), (0, 1))) / 4
    out.append((blur, a))
    out.append((np.roll(ims[1], 2, axis=1), ims[1]))
    out.append((ims[1][5:50, 3:61], ims[0][5:50, 3:61]))            # 45×58
    return out


def _chw(a):
    return torch.from_numpy(a.transpose(2, 0, 1).copy())


@pytest.mark.parametrize("i", range(7))
def test_ssim_gaussian_equals_skimage(i):
    x, r = _pairs()[i]
    want = skm.structural_similarity(x, r, data_range=1.0, channel_axis=2, gaussian_weights=True,
                                     sigma=1.5, use_sample_covariance=False)
    got = metrics.ssim(_chw(x), _chw(r), variant="gaussian")
    assert got == pytest.approx(want, abs=1e-10)
    # the default (backward compatible) is this variant
    assert metrics.ssim(_chw(x), _chw(r)) == got


@pytest.mark.parametrize("i", range(7))
def test_ssim_uniform_equals_skimage_default(i):
    x, r = _pairs()[i]
    want = skm.structural_similarity(x, r, data_range=1.0, channel_axis=2)   # win 7, sample cov
    assert metrics.ssim(_chw(x), _chw(r), variant="uniform") == pytest.approx(want, abs=1e-10)


def test_ssim_variants_on_uint8_files_and_overrides():
    x, r = _pairs()[3]
    x8, r8 = (np.round(v * 255).astype(np.uint8) for v in (x, r))
    # scikit-image on the 8-bit arrays (data_range 255 from the dtype) = ours with uint8=True
    want_u = skm.structural_similarity(x8, r8, channel_axis=2)
    assert metrics.ssim(_chw(x), _chw(r), variant="uniform", uint8=True) == \
        pytest.approx(want_u, abs=1e-10)
    want_g = skm.structural_similarity(x8, r8, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False)
    assert metrics.ssim(_chw(x), _chw(r), uint8=True) == pytest.approx(want_g, abs=1e-10)
    # scikit-image's Gaussian window with its default sample covariance
    want_gs = skm.structural_similarity(x, r, data_range=1.0, channel_axis=2,
                                        gaussian_weights=True, sigma=1.5)
    assert metrics.ssim(_chw(x), _chw(r), sample_covariance=True) == \
        pytest.approx(want_gs, abs=1e-10)
    # the two published variants really differ (by more than the 1e-4 tolerance)
    g = metrics.ssim(_chw(x), _chw(r))
    u = metrics.ssim(_chw(x), _chw(r), variant="uniform")
    assert abs(g - u) > 1e-3


def test_ssim_batch_gray_and_model_domain():
    pairs = _pairs()[:4]
    X = torch.stack([_chw(x) for x, _ in pairs])
    R = torch.stack([_chw(r) for _, r in pairs])
    per = metrics.ssim(X, R, variant="uniform", reduction="none")
    assert per.shape == (4,)
    for k, (x, r) in enumerate(pairs):
        assert float(per[k]) == pytest.approx(
            skm.structural_similarity(x, r, data_range=1.0, channel_axis=2), abs=1e-10)
    assert metrics.ssim(X, R, variant="uniform") == pytest.approx(float(per.mean()), abs=1e-14)
    g = pairs[0][0].mean(2)
    gr = pairs[0][1].mean(2)
    assert metrics.ssim(g, gr, variant="uniform") == pytest.approx(
        skm.structural_similarity(g, gr, data_range=1.0), abs=1e-10)
    assert metrics.ssim_model(X * 2 - 1, R * 2 - 1, variant="uniform") == \
        pytest.approx(metrics.ssim(X, R, variant="uniform"), abs=1e-12)


def test_psnr_per_image_then_mean_and_uint8():
    pairs = _pairs()[:4]
    X = torch.stack([_chw(x) for x, _ in pairs])
    R = torch.stack([_chw(r) for _, r in pairs])
    per = metrics.psnr(X, R, reduction="none")
    for k, (x, r) in enumerate(pairs):
        assert float(per[k]) == pytest.approx(
            skm.peak_signal_noise_ratio(r, x, data_range=1.0), abs=1e-10)
    assert metrics.psnr(X, R) == pytest.approx(float(per.mean()))
    pooled = 10 * math.log10(1 / float(((X - R) ** 2).mean()))
    assert metrics.psnr(X, R) != pytest.approx(pooled, abs=1e-3)      # not the pooled MSE
    x8, r8 = (np.round(v * 255).astype(np.uint8) for v in pairs[3])
    assert metrics.psnr(_chw(pairs[3][0]), _chw(pairs[3][1]), uint8=True) == \
        pytest.approx(skm.peak_signal_noise_ratio(r8, x8), abs=1e-10)
    assert metrics.psnr_model(X * 2 - 1, R * 2 - 1, uint8=True) == \
        pytest.approx(metrics.psnr(X, R, uint8=True), abs=1e-12)


def test_errors():
    a = np.zeros((3, 8, 8))
    with pytest.raises(ShapeError, match="at least 11x11"):
        metrics.ssim(a, a)
    assert metrics.ssim(a, a, variant="uniform") == pytest.approx(1.0)     # 7×7 fits in 8×8
    with pytest.raises(ShapeError, match="at least 7x7"):
        metrics.ssim(np.zeros((3, 6, 6)), np.zeros((3, 6, 6)), variant="uniform")
    with pytest.raises(ParameterError, match="gaussian, uniform"):
        metrics.ssim(a, a, variant="box")
    with pytest.raises(ParameterError, match="reduction"):
        metrics.psnr(a, a, reduction="sum")
    with pytest.raises(ParameterError, match="data_range=1"):
        metrics.psnr(a, a, data_range=255, uint8=True)
