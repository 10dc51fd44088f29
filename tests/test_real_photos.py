"""Issue 23: photos degraded the way the world degrades them — PIL Lanczos/bicubic
downscaling, ``scipy.ndimage.gaussian_filter`` (reflect) blur, Pillow ``L`` gray, JPEG at
quality 75, masks in both conventions and as alpha — restored through the command line.

Two tiers. The default (fast) tier checks what does not need the learned prior: the
operators match how the photos were made (the reflect blur equals ``gaussian_filter``, its A⁺y
has no dark frame), the mask conventions give the same restoration, a gray photo comes back
gray, colorization keeps Pillow's luma. The ``slow`` tier runs ``dmir restore`` with its
defaults (the shipped prior, 100 steps; about half a minute per run on 2 cores) and checks
that each restoration beats the naive baseline."""
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
FAST = ["--model", "natural", "--method", "ddnm", "--steps", "3"]


def _cli(*args):
    r = subprocess.run([sys.executable, "-m", "dmir", "restore", *map(str, args)],
                       capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr
    return r


def _load(path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(np.float64) / 255


def _psnr(a, b, where=None) -> float:
    d = (a - b) ** 2
    if where is not None:
        d = d[where]
    return float(10 * np.log10(1.0 / d.mean()))


def _u8(a) -> np.ndarray:
    return np.clip(np.rint(a * 255), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photo():
    """A 64×64 crop of Kodak 05 (motorbikes: edges and texture), H×W×3 in [0, 1]."""
    return _load(DATA / "kodim05_crop64.png")


def _blurred(photo, sigma=1.5):
    from scipy import ndimage

    return np.stack([ndimage.gaussian_filter(photo[..., c], sigma, mode="reflect")
                     for c in range(3)], -1)


def _frame(n=64, width=16):
    inner = np.zeros((n, n), bool)
    inner[width:-width, width:-width] = True
    return ~inner, inner


def _holes(n=64):
    keep = np.ones((n, n), bool)
    keep[20:28, 8:56] = False
    keep[40:44, 4:60] = False
    return keep


# ----------------------------------------------------------------------------- fast tier
def test_reflect_deblur_operator_is_gaussian_filter():
    """deblur with the default (real photo) boundary is what gaussian_filter does, borders
    included; the zero boundary is wrong there by tens of levels."""
    from scipy import ndimage

    from dmir import operators, pipeline

    k = pipeline.parse_kernel("gauss:1.5")
    rng = np.random.default_rng(0)
    x = rng.random((3, 24, 20))
    ref = np.stack([ndimage.convolve(c, k, mode="reflect") for c in x])
    for bd, worst in (("reflect", 2e-6), ("zero", None)):
        op = operators.build("deblur", (3, 24, 20), kernel=k, boundary=bd, threshold=0.0)
        got = op.A(torch.from_numpy(x).float()[None])[0].double().numpy()
        err = np.abs(got - ref).max()
        assert (err < worst) if worst else (err > 0.1), (bd, err)
    disc = (np.add.outer(np.arange(-3, 4) ** 2, np.arange(-3, 4) ** 2) <= 9).astype(float)
    disc /= disc.sum()                                     # a defocus disc: not separable
    op = operators.build("deblur", (3, 24, 20), kernel=disc, boundary="reflect")
    assert op.pinv_kind == "dct"
    got = op.A(torch.from_numpy(x).float()[None])[0].double().numpy()
    ref = np.stack([ndimage.convolve(c, disc, mode="reflect") for c in x])
    assert np.abs(got - ref).max() < 2e-6


def test_deblur_pseudo_inverse_has_no_dark_frame(photo, tmp_path):
    """A⁺y of a gaussian_filter-blurred 8-bit photo with the real-photo defaults: as good
    in the outer 16-pixel frame as inside (measured: +3.9 dB and +3.7 dB; the zero boundary
    gains 3 dB less in the frame than inside)."""
    from dmir import io as dio, operators, pipeline

    Image.fromarray(_u8(_blurred(photo))).save(tmp_path / "blur.png")
    y = dio.read_image(tmp_path / "blur.png")
    b = (y[0].permute(1, 2, 0).numpy() + 1) / 2
    frame, inner = _frame()
    k = pipeline.parse_kernel("gauss:1.5")
    gains = {}
    for bd in ("reflect", "zero"):
        op = operators.build("deblur", (3, 64, 64), kernel=k, boundary=bd, threshold=0.1)
        o = ((op.pinv(y)[0].permute(1, 2, 0).clamp(-1, 1) + 1) / 2).numpy()
        gains[bd] = (_psnr(o, photo, frame) - _psnr(b, photo, frame),
                     _psnr(o, photo, inner) - _psnr(b, photo, inner))
    f, i = gains["reflect"]
    assert abs(f - i) < 1.0 and f > 0 and i > 0, gains
    assert gains["zero"][1] - gains["zero"][0] > 2.0, gains     # the zero boundary's frame


def test_mask_conventions_and_alpha_give_the_same_restoration(photo, tmp_path):
    """dmir's mask (white = kept), a fill-in-white mask with --mask-invert / invert_mask, a
    PNG mask with transparency and an INPUT whose transparency marks the holes: the same
    restoration, bit for bit; the fill-in-white mask without inversion gets a note."""
    from dmir import pipeline

    keep = _holes()
    damaged = photo * keep[..., None]
    Image.fromarray(_u8(damaged)).save(tmp_path / "damaged.png")
    Image.fromarray(_u8(keep.astype(float))).save(tmp_path / "keep.png")       # dmir's
    Image.fromarray(_u8((~keep).astype(float))).save(tmp_path / "fill.png")    # diffusers'
    rgba = np.concatenate([_u8(damaged), _u8(keep.astype(float))[..., None]], -1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    alpha_mask = np.concatenate([np.zeros((64, 64, 3), np.uint8),
                                 _u8(keep.astype(float))[..., None]], -1)
    Image.fromarray(alpha_mask, "RGBA").save(tmp_path / "alpha_mask.png")
    kw = dict(model="natural", method="ddnm", steps=3)
    img = Image.open(tmp_path / "damaged.png")
    outs, notes = {}, {}
    for name, mask, inv in (("keep", tmp_path / "keep.png", False),
                            ("fill+invert", tmp_path / "fill.png", True),
                            ("fill PIL+invert", Image.open(tmp_path / "fill.png"), True),
                            ("alpha mask file", tmp_path / "alpha_mask.png", False),
                            ("fill, not inverted", tmp_path / "fill.png", False)):
        r = pipeline.restore(img, "inpainting", mask=mask, invert_mask=inv, **kw)
        outs[name], notes[name] = np.asarray(r.image), " ".join(r.notes)
    outs["input alpha"] = np.asarray(pipeline.restore(Image.open(tmp_path / "rgba.png"),
                                                      "inpainting", **kw).image)
    _cli(tmp_path / "damaged.png", "-o", tmp_path / "cli_invert.png", "--task", "inpainting",
         "--mask", tmp_path / "fill.png", "--mask-invert", *FAST)
    _cli(tmp_path / "rgba.png", "-o", tmp_path / "cli_alpha.png", "--task", "inpainting", *FAST)
    outs["cli --mask-invert"] = np.asarray(Image.open(tmp_path / "cli_invert.png"))
    outs["cli input alpha"] = np.asarray(Image.open(tmp_path / "cli_alpha.png"))
    kept = np.asarray(img)[keep]
    for name, o in outs.items():
        if name == "fill, not inverted":
            assert not np.array_equal(o, outs["keep"])
            continue
        assert np.array_equal(o, outs["keep"]), name
        assert np.array_equal(o[keep], kept), name                   # kept pixels untouched
    # the hole is filled, not left black (measured: 12.3 dB against 4.7 dB in the holes)
    assert _psnr(outs["keep"] / 255, photo, ~keep) > _psnr(damaged, photo, ~keep) + 5
    assert "keeps only" in notes["fill, not inverted"]
    assert "--mask-invert" in notes["fill, not inverted"]
    assert "keeps only" not in notes["keep"]


def test_gray_photo_with_the_default_rgb_prior_comes_back_gray(photo, tmp_path):
    gray = Image.fromarray(_u8(photo)).convert("L").resize((16, 16), Image.Resampling.BICUBIC)
    gray.save(tmp_path / "gray.png")
    r = _cli(tmp_path / "gray.png", "-o", tmp_path / "out.png", "--task", "denoising",
             "--steps", "2")                                   # the default prior: dmir-ddpm
    assert "gray image" in r.stderr
    out = Image.open(tmp_path / "out.png")
    assert out.mode == "L" and out.size == (16, 16)


def test_colorization_keeps_pillows_luma(photo, tmp_path):
    """A Pillow-L gray photo colorized with the default weights: the result's own Pillow-L
    equals the input (up to rounding and the clamping of saturated colours); with the
    protocol's equal weights it does not."""
    from dmir import pipeline

    gray = Image.fromarray(_u8(photo)).convert("L")
    gray.save(tmp_path / "gray.png")
    g = np.asarray(gray).astype(int)
    _cli(tmp_path / "gray.png", "-o", tmp_path / "c.png", "--task", "colorization", *FAST)
    ours = np.abs(np.asarray(Image.open(tmp_path / "c.png").convert("L")).astype(int) - g)
    proto = pipeline.restore(gray, "colorization", weights="protocol", model="natural",
                             method="ddnm", steps=3, seed=0).image
    theirs = np.abs(np.asarray(proto.convert("L")).astype(int) - g)
    assert np.percentile(ours, 90) <= 1 and ours.mean() < 1.0, (ours.mean(), ours.max())
    assert theirs.mean() > 2 * max(ours.mean(), 0.5), (theirs.mean(), ours.mean())


# ----------------------------------------------------------------------------- slow tier
# dmir restore with its defaults (the shipped prior, 100 steps) against what a person gets
# without dmir; measured on the kodim05 crop (dB): SR×4 21.35 / 21.42 against PIL bicubic
# 20.10 / 19.95, deblurring 26.28 against 21.33, JPEG 31.67 against 31.41, inpainting 25.32
# against 12.98, colorization 8.77 against 15.86 (the shipped prior's colours: a known limit)
@pytest.mark.slow
@pytest.mark.parametrize("resample", ["LANCZOS", "BICUBIC"])
def test_defaults_sr_beats_bicubic_upscaling(photo, tmp_path, resample):
    lr = Image.fromarray(_u8(photo)).resize((16, 16), getattr(Image.Resampling, resample))
    lr.save(tmp_path / "lr.png")
    _cli(tmp_path / "lr.png", "-o", tmp_path / "sr.png", "--task", "sr_bicubic_aa", "--scale",
         "4")
    base = _load_img(lr.resize((64, 64), Image.Resampling.BICUBIC))
    assert _psnr(_load(tmp_path / "sr.png"), photo) > _psnr(base, photo)


@pytest.mark.slow
def test_defaults_deblur_beats_the_blurred_photo_frame_included(photo, tmp_path):
    Image.fromarray(_u8(_blurred(photo))).save(tmp_path / "blur.png")
    _cli(tmp_path / "blur.png", "-o", tmp_path / "db.png", "--task", "deblur", "--kernel",
         "gauss:1.5")
    db, b = _load(tmp_path / "db.png"), _load(tmp_path / "blur.png")
    assert _psnr(db, photo) > _psnr(b, photo)
    frame, inner = _frame()
    gain_frame = _psnr(db, photo, frame) - _psnr(b, photo, frame)
    gain_inner = _psnr(db, photo, inner) - _psnr(b, photo, inner)
    # no dark frame: the frame gains as much as the interior. Measured (seed 0): frame
    # +5.23 dB, interior +4.18 dB here (kodim23: +3.85 / +2.86) — the frame gains slightly
    # more, so the bound is 1 dB on the side a dark frame would break, 1.5 dB on the other
    assert -1.0 <= gain_frame - gain_inner <= 1.5, (gain_frame, gain_inner)


@pytest.mark.slow
def test_defaults_jpeg_beats_the_jpeg(photo, tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_u8(photo)).save(buf, "JPEG", quality=75)
    (tmp_path / "q75.jpg").write_bytes(buf.getvalue())
    _cli(tmp_path / "q75.jpg", "-o", tmp_path / "dj.png", "--task", "denoising", "--sigma-y",
         "0.02")
    assert _psnr(_load(tmp_path / "dj.png"), photo) > _psnr(_load(tmp_path / "q75.jpg"), photo)


@pytest.mark.slow
def test_defaults_inpainting_with_a_fill_in_white_mask(photo, tmp_path):
    keep = _holes()
    Image.fromarray(_u8(photo * keep[..., None])).save(tmp_path / "damaged.png")
    Image.fromarray(_u8((~keep).astype(float))).save(tmp_path / "fill.png")
    _cli(tmp_path / "damaged.png", "-o", tmp_path / "in.png", "--task", "inpainting",
         "--mask", tmp_path / "fill.png", "--mask-invert")
    assert (_psnr(_load(tmp_path / "in.png"), photo)
            > _psnr(_load(tmp_path / "damaged.png"), photo) + 5)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="the shipped prior gives one global tint per image "
                   "(README, Known limits): 14.9 dB against 15.9 dB for gray → RGB (8.8 dB "
                   "before the timestep experts)")
def test_defaults_colorization_beats_gray_to_rgb(photo, tmp_path):
    gray = Image.fromarray(_u8(photo)).convert("L")
    gray.save(tmp_path / "gray.png")
    _cli(tmp_path / "gray.png", "-o", tmp_path / "col.png", "--task", "colorization")
    assert (_psnr(_load(tmp_path / "col.png"), photo)
            > _psnr(_load_img(gray.convert("RGB")), photo))


def _load_img(im) -> np.ndarray:
    return np.asarray(im).astype(np.float64) / 255
