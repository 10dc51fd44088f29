"""dmir.data: image folders, DDNM list files, crop/resize rules, masks, shards."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dmir import io as dio
from dmir.data import (ImageDataset, find_images, preprocess, read_list, resource, shard)
from dmir.errors import InputError, ParameterError, ShapeError

BENCH = Path(__file__).parent / "data" / "bench"


def _png(path, a):
    """Write an (H, W[, C]) uint8 array as PNG."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(a).save(path)


def _ramp(h, w, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, c) if c > 1 else (h, w), dtype=np.uint8)


def test_find_images_recursive_sorted_skips_hidden_and_non_images(tmp_path):
    for rel in ["b.png", "a/c.jpg", "a/B.PNG", "z/y/x.bmp", ".hidden.png", ".git/x.png",
                "a/.cache/d.png"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_ramp(4, 4)).save(p, format="PNG" if rel.lower().endswith("png")
                                          else ("JPEG" if rel.endswith("jpg") else "BMP"))
    (tmp_path / "notes.txt").write_text("not an image")
    assert find_images(tmp_path) == ["a/B.PNG", "a/c.jpg", "b.png", "z/y/x.bmp"]
    ds = ImageDataset(tmp_path, size=4)
    assert [it.id for it in ds.items] == ["a/B.PNG", "a/c.jpg", "b.png", "z/y/x.bmp"]
    assert [it.index for it in ds.items] == [0, 1, 2, 3]
    assert ImageDataset(tmp_path, size=4, limit=2).items == ds.items[:2]


def test_ddnm_list_format(tmp_path):
    for n in ("x.png", "sub/y.png", "z.png"):
        _png(str(tmp_path / "img" / n), _ramp(8, 8))
    lst = tmp_path / "val_1k.txt"
    lst.write_text("z.png 7\n\n# a comment\nsub/y.png 3\nx.png\n")
    assert read_list(lst) == [("z.png", 7), ("sub/y.png", 3), ("x.png", None)]
    ds = ImageDataset(tmp_path / "img", size=8, list_file=lst)
    # the list's order, not sorted; labels kept; ids as written in the list
    assert [(it.id, it.label, it.index) for it in ds.items] == [
        ("z.png", 7, 0), ("sub/y.png", 3, 1), ("x.png", None, 2)]
    bad = tmp_path / "bad.txt"
    bad.write_text("x.png 1 extra\n")
    with pytest.raises(InputError, match="line 1"):
        read_list(bad)
    bad.write_text("x.png dog\n")
    with pytest.raises(InputError, match="integer"):
        read_list(bad)
    missing = tmp_path / "missing.txt"
    missing.write_text("x.png 0\nnope.png 1\n")
    with pytest.raises(InputError, match="nope.png"):
        ImageDataset(tmp_path / "img", size=8, list_file=missing)
    dup = tmp_path / "dup.txt"
    dup.write_text("x.png 0\nx.png 1\n")
    with pytest.raises(InputError, match="twice"):
        ImageDataset(tmp_path / "img", size=8, list_file=dup)


@pytest.mark.parametrize("W,left", [(80, 8), (81, 8), (85, 10), (87, 12)])
def test_center_crop_offsets_follow_torchvision_rounding(W, left):
    """CenterCropLongEdge: left = round((W − s) / 2) with Python's (banker's) rounding, as
    torchvision's center_crop; without a resize the crop is an exact slice."""
    a = _ramp(64, W).astype(np.float64) / 255
    out = preprocess(a, 64, "center")
    assert out.shape == (64, 64, 3)
    np.testing.assert_array_equal(out, a[:, left:left + 64])
    t = preprocess(a.transpose(1, 0, 2), 64, "center")          # tall image: top offset
    np.testing.assert_array_equal(t, a.transpose(1, 0, 2)[left:left + 64])


def test_center_crop_then_bilinear_resize_equals_the_reference_steps():
    """The DDNM/EquS ImageNet-1k loader: centre square (PIL crop) then Resize(size), which on
    PIL images is Image.resize(BILINEAR) — 8-bit images are resampled as 8-bit, bit-exact."""
    u = _ramp(75, 100)
    ref = Image.fromarray(u).crop((12, 0, 87, 75)).resize((32, 32), Image.BILINEAR)
    out = preprocess(u / 255.0, 32, "center")
    np.testing.assert_array_equal(np.rint(out * 255).astype(np.uint8), np.asarray(ref))
    assert np.allclose(out * 255, np.rint(out * 255))            # still 8-bit levels


def test_adm_center_crop_arr_steps():
    """guided-diffusion center_crop_arr: BOX halvings while the short side ≥ 2·size, bicubic
    to a short side of size, centre crop with floor offsets."""
    u = _ramp(450, 600)
    im = Image.fromarray(u)
    while min(im.size) >= 2 * 64:
        im = im.resize(tuple(x // 2 for x in im.size), resample=Image.BOX)
    assert im.size == (150, 112)
    s = 64 / min(im.size)
    im = im.resize(tuple(round(x * s) for x in im.size), resample=Image.BICUBIC)
    r = np.asarray(im)
    cy, cx = (r.shape[0] - 64) // 2, (r.shape[1] - 64) // 2
    ref = r[cy:cy + 64, cx:cx + 64]
    out = preprocess(u / 255.0, 64, "adm")
    np.testing.assert_array_equal(np.rint(out * 255).astype(np.uint8), ref)


def test_resize_and_none_modes():
    a = _ramp(40, 90).astype(np.float64) / 255
    r = preprocess(a, 32, "resize")
    assert r.shape == (32, 32, 3)
    ref = np.asarray(Image.fromarray(_ramp(40, 90)).resize((32, 32), Image.BILINEAR))
    np.testing.assert_array_equal(np.rint(r * 255).astype(np.uint8), ref)
    same = _ramp(32, 32).astype(np.float64) / 255
    np.testing.assert_array_equal(preprocess(same, 32, "none"), same)
    with pytest.raises(ShapeError, match="32x32"):
        preprocess(a, 32, "none")
    with pytest.raises(ParameterError, match="crop"):
        preprocess(a, 32, "middle")


def test_16bit_images_are_resampled_without_8bit_rounding(tmp_path):
    x = torch.linspace(-1, 1, 3 * 40 * 60).reshape(1, 3, 40, 60)
    dio.write_image(str(tmp_path / "d16.png"), x, bits=16)
    ds = ImageDataset(tmp_path, size=20)
    v = ((ds[0] + 1) / 2 * 255).numpy()
    assert ds[0].shape == (1, 3, 20, 20)
    assert np.abs(v - np.rint(v)).max() > 0.05                  # not 8-bit levels
    # a smooth ramp stays a ramp: rows increase left to right
    assert (np.diff(v[0, 0], axis=1) > 0).all()


def test_gray_alpha_channels_and_value_range(tmp_path):
    _png(str(tmp_path / "g.png"), _ramp(16, 16, c=1))
    rgba = _ramp(16, 16, c=4)
    _png(str(tmp_path / "rgba.png"), rgba)
    ds = ImageDataset(tmp_path, size=16)
    g, c = ds.load(ds.items[0]), ds.load(ds.items[1])
    assert g.shape == c.shape == (1, 3, 16, 16) and g.dtype == torch.float32
    assert torch.equal(g[0, 0], g[0, 1]) and torch.equal(g[0, 0], g[0, 2])
    np.testing.assert_allclose(((c[0] + 1) / 2 * 255).permute(1, 2, 0).numpy(),
                               rgba[:, :, :3], atol=1e-4)       # alpha dropped, [-1, 1]
    gray = ImageDataset(tmp_path, size=16, channels=1)
    assert gray[1].shape == (1, 1, 16, 16)


def test_masks_from_file_and_per_image_folder(tmp_path):
    for n in ("a.png", "sub/b.png"):
        _png(str(tmp_path / "img" / n), _ramp(64, 64))
    ds = ImageDataset(tmp_path / "img", size=32)
    # one mask for all images, at twice the size: cropped/resized like the images
    m = np.ones((64, 64), np.uint8) * 255
    m[:, :32] = 0
    _png(str(tmp_path / "mask.png"), m)
    mk = ds.mask(str(tmp_path / "mask.png"))
    assert mk.shape == (32, 32)
    assert set(mk.unique().tolist()) == {0.0, 1.0}
    assert mk[:, :16].sum() == 0 and mk[:, 16:].sum() == 32 * 16
    # per-image masks in a folder, under the image's relative path (.npy or image)
    os.makedirs(tmp_path / "masks" / "sub")
    np.save(tmp_path / "masks" / "a.npy", np.eye(32, dtype=np.uint8))
    _png(str(tmp_path / "masks" / "sub" / "b.png"), 255 - m)
    ma = ds.mask(str(tmp_path / "masks"), ds.items[0])
    mb = ds.mask(str(tmp_path / "masks"), ds.items[1])
    assert torch.equal(ma, torch.eye(32))
    assert torch.equal(mb, 1 - mk)
    os.remove(tmp_path / "masks" / "a.npy")
    with pytest.raises(InputError, match="no mask for image 'a.png'"):
        ds.mask(str(tmp_path / "masks"), ds.items[0])
    # the packaged DDNM protocol mask (256×256) scales to the test size
    full = ds.mask(resource("ddnm_inpainting_mask.npy"))
    assert full.shape == (32, 32) and 0 < full.mean() < 1


def test_shards_partition_the_dataset_by_position():
    ds = ImageDataset(BENCH, size=64)
    assert [it.id for it in ds.items] == ["cbsd_108005.png", "junco.png",
                                         "sub/kodim05_80x64.png"]
    parts = [shard(ds.items, i, 2) for i in range(2)]
    assert [it.index for it in parts[0]] == [0, 2] and [it.index for it in parts[1]] == [1]
    assert sorted(it.id for p in parts for it in p) == sorted(it.id for it in ds.items)
    with pytest.raises(ParameterError):
        shard(ds.items, 2, 2)
    x = ds[2]                                      # the 80×64 crop, centre-cropped to 64×64
    ref = dio.read_image(str(BENCH / "sub" / "kodim05_80x64.png"))[..., :, 8:72]
    assert torch.equal(x, ref)


def test_dataset_errors_and_packaged_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        ImageDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        ImageDataset(tmp_path / "empty")
    with pytest.raises(ParameterError):
        ImageDataset(BENCH, size=0)
    with pytest.raises(InputError, match="ships no data file"):
        resource("nope.npy")
    # the package-data files next to the dataset code still load
    assert np.load(resource("ddnm_inpainting_mask.npy")).shape == (256, 256)
    with np.load(resource("patch_gmm.npz")) as z:
        assert len(z.files) > 0


def test_image_dataset_is_a_torch_dataset_for_dataloader_workers(tmp_path):
    rng = np.random.RandomState(0)
    for i in range(5):
        Image.fromarray(rng.randint(0, 256, (24 + i, 20, 3), np.uint8)).save(tmp_path / f"{i}.png")
    ds = ImageDataset(tmp_path, size=16)
    assert isinstance(ds, torch.utils.data.Dataset)
    ref = torch.cat([ds[i] for i in range(len(ds))])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2,
                                         collate_fn=ImageDataset.collate)
    batches = list(loader)                  # read in 2 worker processes
    assert [tuple(b.shape) for b in batches] == [(2, 3, 16, 16), (2, 3, 16, 16), (1, 3, 16, 16)]
    assert torch.equal(torch.cat(batches), ref)
    assert ref.min() >= -1 and ref.max() <= 1 and ref.std() > 0.3
