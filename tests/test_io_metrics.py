"""dmir.io (image/mask files) and dmir.metrics (PSNR, SSIM)."""
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dmir import io as dio
from dmir import metrics
from dmir.errors import InputError, ShapeError

DATA = Path(__file__).parent / "data"


def _model(a01: np.ndarray) -> torch.Tensor:
    """(H, W, C) array in [0, 1] → (1, C, H, W) model-domain tensor."""
    return torch.from_numpy(a01.transpose(2, 0, 1).copy()).float().unsqueeze(0) * 2 - 1


def _unit(x: torch.Tensor) -> np.ndarray:
    return ((x[0].double() + 1) / 2).numpy().transpose(1, 2, 0)


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("C", [1, 3])
def test_roundtrip_8bit(tmp_path, C):
    a = np.random.default_rng(0).integers(0, 256, (13, 17, C)).astype(np.uint8)
    p = tmp_path / "a.png"
    dio.write_image(p, _model(a / 255.0), bits=8)
    im = Image.open(p)
    assert im.mode == ("L" if C == 1 else "RGB") and im.size == (17, 13)
    x = dio.read_image(p)
    assert x.shape == (1, C, 13, 17) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(np.rint(_unit(x) * 255).astype(np.uint8), a)


@pytest.mark.parametrize("C", [1, 3])
def test_roundtrip_16bit(tmp_path, C):
    a = np.random.default_rng(1).integers(0, 65536, (9, 11, C)).astype(np.uint16)
    p = tmp_path / "a16.png"
    dio.write_image(p, _model(a / 65535.0)[0], bits=16)       # (C, H, W) accepted too
    x = dio.read_image(p)
    assert x.shape == (1, C, 9, 11)
    np.testing.assert_array_equal(np.rint(_unit(x) * 65535).astype(np.uint16), a)
    # an independent decoder (Pillow) agrees: 16-bit gray exactly, 16-bit RGB in its high byte
    im = Image.open(p)
    if C == 1:
        np.testing.assert_array_equal(np.asarray(im).astype(np.uint16), a[:, :, 0])
    else:
        np.testing.assert_array_equal(np.asarray(im), (a >> 8).astype(np.uint8))


def test_read_16bit_gray_written_by_pillow(tmp_path):
    a = (np.arange(20 * 30).reshape(20, 30) * 97 % 65536).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    x = dio.read_image(tmp_path / "g16.png")
    assert x.shape == (1, 1, 20, 30)
    np.testing.assert_allclose(_unit(x)[:, :, 0], a / 65535.0, atol=1e-6)


def _png16(a: np.ndarray, ftypes) -> bytes:
    """A 16-bit PNG using the given row filter types (test encoder, straight from the spec)."""
    H, W, C = a.shape
    bpp = 2 * C
    raw = a.astype(">u2").view(np.uint8).reshape(H, W * bpp).astype(int)
    prev, rows = np.zeros(W * bpp, int), []
    for r in range(H):
        cur, f = raw[r], int(ftypes[r])
        left = np.concatenate([np.zeros(bpp, int), cur[:-bpp]])
        ul = np.concatenate([np.zeros(bpp, int), prev[:-bpp]])
        p = left + prev - ul
        pa, pb, pc = abs(p - left), abs(p - prev), abs(p - ul)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, ul))
        pred = [0 * cur, left, prev, (left + prev) >> 1, paeth][f]
        rows.append(bytes([f]) + bytes(((cur - pred) % 256).astype(np.uint8)))
        prev = cur
    ihdr = struct.pack(">IIBBBBB", W, H, 16, {1: 0, 2: 4, 3: 2, 4: 6}[C], 0, 0, 0)
    return (dio._PNG_SIG + dio._chunk(b"IHDR", ihdr)
            + dio._chunk(b"IDAT", zlib.compress(b"".join(rows))) + dio._chunk(b"IEND", b""))


@pytest.mark.parametrize("C", [2, 3, 4])
def test_16bit_decoder_all_row_filters(tmp_path, C):
    rng = np.random.default_rng(C)
    a = rng.integers(0, 65536, (25, 19, C)).astype(np.uint16)
    (tmp_path / "f.png").write_bytes(_png16(a, rng.integers(0, 5, 25)))
    with pytest.warns(UserWarning, match="alpha") if C in (2, 4) else _nullctx():
        x = dio.read_image(tmp_path / "f.png")
    keep = a[:, :, :1] if C == 2 else a[:, :, :3]
    assert x.shape == (1, keep.shape[2], 25, 19)
    np.testing.assert_array_equal(np.rint(_unit(x) * 65535).astype(np.uint16), keep)


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_rgba_alpha_dropped_with_warning(tmp_path):
    a = np.random.default_rng(2).integers(0, 256, (8, 8, 4)).astype(np.uint8)
    Image.fromarray(a, "RGBA").save(tmp_path / "rgba.png")
    with pytest.warns(UserWarning, match="alpha channel"):
        x = dio.read_image(tmp_path / "rgba.png")
    assert x.shape == (1, 3, 8, 8)
    np.testing.assert_array_equal(np.rint(_unit(x) * 255).astype(np.uint8), a[:, :, :3])
    Image.fromarray(a[:, :, :2], "LA").save(tmp_path / "la.png")
    with pytest.warns(UserWarning, match="alpha channel"):
        assert dio.read_image(tmp_path / "la.png").shape == (1, 1, 8, 8)


def test_palette_and_jpeg(tmp_path):
    rgb = np.asarray(Image.open(DATA / "kodim05_crop64.png").convert("RGB"))
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16).save(tmp_path / "p.png")
    assert dio.read_image(tmp_path / "p.png").shape == (1, 3, 64, 64)
    gray = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (4, 1))
    Image.fromarray(gray).convert("P").save(tmp_path / "pg.png")   # gray palette → C = 1
    xg = dio.read_image(tmp_path / "pg.png")
    assert xg.shape == (1, 1, 4, 16)
    np.testing.assert_array_equal(np.rint(_unit(xg)[:, :, 0] * 255), gray)
    Image.fromarray(rgb).save(tmp_path / "k.jpg", quality=95)
    xj = dio.read_image(tmp_path / "k.jpg")
    assert xj.shape == (1, 3, 64, 64)
    assert metrics.psnr(_unit(xj), rgb / 255.0) > 30
    Image.fromarray(rgb).convert("1").save(tmp_path / "bw.png")
    assert dio.read_image(tmp_path / "bw.png").shape == (1, 1, 64, 64)


def test_npy_images(tmp_path):
    a = np.random.default_rng(3).random((6, 7, 3))
    np.save(tmp_path / "f.npy", a)
    np.testing.assert_allclose(_unit(dio.read_image(tmp_path / "f.npy")), a, atol=1e-6)
    np.save(tmp_path / "g.npy", (a[:, :, 0] * 65535).astype(np.uint16))
    assert dio.read_image(tmp_path / "g.npy").shape == (1, 1, 6, 7)
    b = a.copy()
    b[2, 3, 1] = np.nan
    np.save(tmp_path / "nan.npy", b)
    with pytest.raises(InputError, match="NaN or Inf"):
        dio.read_image(tmp_path / "nan.npy")
    b[2, 3, 1] = np.inf
    np.save(tmp_path / "inf.npy", b)
    with pytest.raises(InputError, match="NaN or Inf"):
        dio.read_image(tmp_path / "inf.npy")
    np.save(tmp_path / "big.npy", a * 3)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        dio.read_image(tmp_path / "big.npy")
    np.save(tmp_path / "empty.npy", np.zeros((0, 5)))
    with pytest.raises(InputError, match="empty"):
        dio.read_image(tmp_path / "empty.npy")


def test_bad_input_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        dio.read_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="directory"):
        dio.read_image(tmp_path)
    (tmp_path / "t.png").write_text("not an image")
    with pytest.raises(InputError, match="not a recognised image"):
        dio.read_image(tmp_path / "t.png")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8) + 100).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError):
        dio.read_image(tmp_path / "trunc.png")
    a = np.zeros((5, 5, 3), np.uint16)
    bad = bytearray(_png16(a, [0] * 5))
    bad[-20] ^= 0xFF                                                   # CRC mismatch
    (tmp_path / "crc.png").write_bytes(bytes(bad))
    with pytest.raises(InputError, match="corrupt"):
        dio.read_image(tmp_path / "crc.png")


# ----------------------------------------------------------------------------- writing
def test_write_errors_and_atomicity(tmp_path, monkeypatch):
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(dio.OutputError, match=r"\.png"):
        dio.write_image(tmp_path / "a.jpg", x)
    with pytest.raises(dio.OutputError, match="does not exist"):
        dio.write_image(tmp_path / "nodir" / "a.png", x)
    with pytest.raises(dio.OutputError, match="directory"):
        dio.write_image(tmp_path, x)
    with pytest.raises(InputError, match="NaN"):
        dio.write_image(tmp_path / "n.png", torch.full((1, 3, 4, 4), float("nan")))
    with pytest.raises(ShapeError):
        dio.write_image(tmp_path / "c.png", torch.zeros(1, 2, 4, 4))
    with pytest.raises(InputError, match="bits"):
        dio.write_image(tmp_path / "b.png", x, bits=12)

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(dio.OutputError, match="No space left"):
        dio.write_image(tmp_path / "a.png", x)
    assert os.listdir(tmp_path) == []                # neither the file nor a temporary


def test_write_clamps_and_replaces(tmp_path):
    p = tmp_path / "c.png"
    dio.write_image(p, torch.tensor([[[-3.0, 0.0, 5.0]]]))
    np.testing.assert_array_equal(np.asarray(Image.open(p)), [[0, 128, 255]])
    dio.write_image(p, torch.ones(1, 1, 2, 2))     # overwrite an existing file
    assert np.asarray(Image.open(p)).tolist() == [[255, 255], [255, 255]]
    assert sorted(os.listdir(tmp_path)) == ["c.png"]


# ----------------------------------------------------------------------------- masks
def test_load_mask(tmp_path):
    m = np.zeros((6, 8), np.uint8)
    m[:, 4:] = 1
    for dt in (np.uint8, bool, np.float32, np.int64):
        np.save(tmp_path / "m.npy", m.astype(dt))
        t = dio.load_mask(tmp_path / "m.npy")
        assert t.dtype == torch.float32 and t.shape == (6, 8)
        np.testing.assert_array_equal(t.numpy(), m)
    np.save(tmp_path / "m3.npy", m[None])
    assert dio.load_mask(tmp_path / "m3.npy").shape == (6, 8)
    img = np.where(m == 1, 200, 40).astype(np.uint8)               # white(ish) = kept
    Image.fromarray(img).save(tmp_path / "m.png")
    np.testing.assert_array_equal(dio.load_mask(tmp_path / "m.png").numpy(), m)
    Image.fromarray(np.stack([img] * 3, -1)).save(tmp_path / "mrgb.png")
    np.testing.assert_array_equal(dio.load_mask(str(tmp_path / "mrgb.png")).numpy(), m)
    np.save(tmp_path / "half.npy", m * 0.5)
    with pytest.raises(InputError, match="only 0"):
        dio.load_mask(tmp_path / "half.npy")
    np.save(tmp_path / "v.npy", np.zeros(5))
    with pytest.raises(InputError, match="2-D"):
        dio.load_mask(tmp_path / "v.npy")
    (tmp_path / "junk.npy").write_text("junk")
    with pytest.raises(InputError, match="not a readable"):
        dio.load_mask(tmp_path / "junk.npy")
    with pytest.raises(InputError, match="does not exist"):
        dio.load_mask(tmp_path / "none.png")


def test_shipped_protocol_mask_loads():
    from dmir import operators

    p = Path(operators.__file__).parent.parent / "data" / "ddnm_inpainting_mask.npy"
    m = dio.load_mask(p)
    assert m.shape == (256, 256) and set(m.unique().tolist()) <= {0.0, 1.0}
    op = operators.build("inpainting", (3, 256, 256), mask=str(p))   # path → dmir.io.load_mask
    assert op.y_shape == (3 * int(m.sum()),)


# ----------------------------------------------------------------------------- metrics
def _kodim():
    return np.asarray(Image.open(DATA / "kodim05_crop64.png").convert("RGB")) / 255.0


def test_psnr_known_values():
    ref = _kodim().transpose(2, 0, 1)
    assert metrics.psnr(ref, ref) == math.inf
    x = np.full((3, 16, 16), 0.5)
    assert metrics.psnr(x + 0.1, x) == pytest.approx(20.0, abs=1e-9)            # 10 log10(1/0.01)
    assert metrics.psnr(x + 0.01, x) == pytest.approx(40.0, abs=1e-9)
    assert metrics.psnr((x + 0.1) * 255, x * 255, data_range=255) == pytest.approx(20.0)
    b = torch.stack([torch.tensor(x), torch.tensor(x + 0.1), torch.tensor(x + 0.01)])
    v = metrics.psnr(b, torch.tensor(x).expand(3, -1, -1, -1), reduction="none")
    assert v.shape == (3,) and v[0] == math.inf
    assert v[1:].tolist() == pytest.approx([20.0, 40.0])
    # model-domain helper: an offset of 0.2 in [-1, 1] is 0.1 in [0, 1]
    t = torch.zeros(1, 3, 16, 16)
    assert metrics.psnr_model(t + 0.2, t) == pytest.approx(20.0, abs=1e-4)
    assert metrics.psnr_model(t + 5, t) == pytest.approx(metrics.psnr_model(t + 1, t))  # clamped


def test_ssim_known_values():
    ref = _kodim()
    i, j = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    dist = np.clip(ref * 0.7 + 0.2 + 0.05 * np.sin(0.7 * i + 1.3 * j)[:, :, None], 0, 1)
    R, D = ref.transpose(2, 0, 1), dist.transpose(2, 0, 1)
    assert metrics.ssim(R, R) == pytest.approx(1.0, abs=1e-12)
    # reference values: skimage 0.26 structural_similarity(gaussian_weights=True, sigma=1.5,
    # use_sample_covariance=False, data_range=1, channel_axis=2) and peak_signal_noise_ratio
    assert metrics.ssim(D, R) == pytest.approx(0.7105435180647657, abs=1e-10)
    assert metrics.psnr(D, R) == pytest.approx(18.435380517500978, abs=1e-9)
    assert metrics.ssim(D.mean(0), R.mean(0)) == pytest.approx(0.7386348938764243, abs=1e-10)
    other = np.asarray(Image.open(DATA / "kodim23_crop64.png").convert("RGB")) / 255.0
    assert metrics.ssim(other.transpose(2, 0, 1), R) == pytest.approx(0.060477822882666454,
                                                                      abs=1e-10)
    # symmetric, per channel averaged, model-domain helper consistent
    assert metrics.ssim(R, D) == pytest.approx(metrics.ssim(D, R), abs=1e-12)
    per_c = [metrics.ssim(D[c], R[c]) for c in range(3)]
    assert metrics.ssim(D, R) == pytest.approx(np.mean(per_c), abs=1e-12)
    assert metrics.ssim_model(torch.tensor(D) * 2 - 1, torch.tensor(R) * 2 - 1) == \
        pytest.approx(0.7105435180647657, abs=1e-6)


def test_metric_shape_errors():
    with pytest.raises(ShapeError, match="same shape"):
        metrics.psnr(np.zeros((3, 8, 8)), np.zeros((3, 8, 9)))
    with pytest.raises(ShapeError, match="at least 11x11"):
        metrics.ssim(np.zeros((3, 8, 8)), np.zeros((3, 8, 8)))
