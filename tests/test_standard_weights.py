"""LPIPS and FID from the weight files users of the usual packages already have: torchvision's
AlexNet/VGG16 state dicts, the lpips package's v0.1 heads, pytorch-fid's Inception file. The
files are made from today's ``dmir metrics setup`` cache (the lpips heads are the real ones from
the lpips wheel) and must give the same values as the setup path."""
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dmir import metrics
from dmir.metrics import standard, weights
from dmir.metrics.fid import InceptionV3

DATA = Path(__file__).parent / "data"


def _img(p, size=None) -> torch.Tensor:
    im = Image.open(p).convert("RGB")
    if size:
        im = im.resize((size, size), Image.BICUBIC)
    a = np.asarray(im, dtype=np.float32) / 255
    return torch.from_numpy(a.transpose(2, 0, 1).copy())[None]


def _torchvision_trunk(net, cache, path):
    """dmir's cached trunk written as torchvision's state dict (with a classifier)."""
    sd = weights.load(f"lpips-{net}", cache)
    tv = {}
    for i, idx in enumerate(standard.LPIPS_TRUNK_INDICES[net]):
        tv[f"features.{idx}.weight"] = sd[f"convs.{i}.weight"]
        tv[f"features.{idx}.bias"] = sd[f"convs.{i}.bias"]
    tv["classifier.6.weight"] = torch.zeros(1000, 4096)
    tv["classifier.6.bias"] = torch.zeros(1000)
    torch.save(tv, path)
    return path


def _lpips_heads(net, archives, path):
    """The lpips package's own heads file, out of its wheel."""
    whl = Path(archives) / weights.SOURCES["lpips"].filename
    with zipfile.ZipFile(whl) as zf:
        path.write_bytes(zf.read(f"lpips/weights/v0.1/{net}.pth"))
    return path


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_from_torchvision_and_lpips_files_equals_setup(net, lpips_cache, tmp_path):
    trunk = _torchvision_trunk(net, lpips_cache.cache, tmp_path / standard.TORCHVISION_FILES[net])
    heads = _lpips_heads(net, lpips_cache.archives, tmp_path / f"{net}.pth")
    ref = _img(DATA / "lpips-example" / "ex_ref.png")
    p0, p1 = _img(DATA / "lpips-example" / "ex_p0.png"), _img(DATA / "lpips-example" / "ex_p1.png")
    today = metrics.LPIPS(net, weights_dir=lpips_cache.cache)
    std = metrics.LPIPS(net, trunk=trunk, heads=heads)
    x, y = torch.cat([p0, p1]), torch.cat([ref, ref])
    d_today, d_std = today(x, y), std(x, y)
    assert torch.equal(d_today, d_std), (d_today, d_std)
    if net == "alex":           # LPIPS's test_network.py: 'Distances: (0.722, 0.138)'
        assert [round(float(v), 3) for v in d_std] == [0.722, 0.138]
    # the lpips() function takes them too, and the trunk defaults to torch.hub's folder
    # (one image against the first of a batch of two: conv kernels may differ with the batch
    # size and thread count, so to float32 rounding rather than bit for bit)
    assert metrics.lpips(p0, ref, net, trunk=trunk, heads=heads) == pytest.approx(
        float(d_today[0]), rel=1e-6)


def test_lpips_default_trunk_is_torch_hub(lpips_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    ck = tmp_path / "torch" / "hub" / "checkpoints"
    ck.mkdir(parents=True)
    _torchvision_trunk("alex", lpips_cache.cache, ck / standard.TORCHVISION_FILES["alex"])
    heads = _lpips_heads("alex", lpips_cache.archives, tmp_path / "alex.pth")
    m = metrics.LPIPS("alex", heads=heads)
    ref = _img(DATA / "lpips-example" / "ex_ref.png")
    p1 = _img(DATA / "lpips-example" / "ex_p1.png")
    assert round(float(m(p1, ref)), 3) == 0.138


def test_wrong_standard_files_are_refused(lpips_cache, tmp_path):
    vgg_trunk = _torchvision_trunk("vgg", lpips_cache.cache, tmp_path / "vgg16.pth")
    heads = _lpips_heads("alex", lpips_cache.archives, tmp_path / "alex.pth")
    with pytest.raises(standard.StandardWeightsError, match=r"missing 6 tensor\(s\), e\.g\. "
                                                           r"convs\.1\.bias"):
        metrics.LPIPS("alex", trunk=vgg_trunk, heads=heads)          # VGG's file for AlexNet
    alex_trunk = _torchvision_trunk("alex", lpips_cache.cache, tmp_path / "alexnet.pth")
    vgg_heads = _lpips_heads("vgg", lpips_cache.archives, tmp_path / "vgg.pth")
    with pytest.raises(standard.StandardWeightsError,
                       match=r"wrong shapes: lins\.1\.weight \(1, 128, 1, 1\) \(expected "
                             r"\(1, 192, 1, 1\)\)"):
        metrics.LPIPS("alex", trunk=alex_trunk, heads=vgg_heads)     # VGG's heads
    with pytest.raises(standard.StandardWeightsError, match="does not exist"):
        metrics.LPIPS("alex", trunk=tmp_path / "nope.pth", heads=heads)
    with pytest.raises(standard.StandardWeightsError, match=r"missing 376 tensor\(s\), e\.g\. layers\.conv\.beta"):
        metrics.FIDInception(weights=heads)


def _pytorch_fid_file(cache, path, gamma=None):
    """dmir's cached FID Inception written in pytorch-fid's (torchvision inception_v3) layout;
    ``gamma``: a batch-norm scale to store (the conv weight and mean are divided by it)."""
    sd = weights.load("fid-inception", cache)
    out = {}
    g = torch.Generator().manual_seed(0)
    for mine, tv in standard.fid_conv_names().items():
        w, mean = sd[f"{mine}.weight"], sd[f"{mine}.mean"]
        gm = torch.ones(w.shape[0]) if gamma is None else \
            torch.empty(w.shape[0]).uniform_(0.5, 2.0, generator=g)
        out[f"{tv}.conv.weight"] = (w.double() / gm.double().view(-1, 1, 1, 1)).float()
        out[f"{tv}.bn.weight"] = gm
        out[f"{tv}.bn.bias"] = sd[f"{mine}.beta"]
        out[f"{tv}.bn.running_mean"] = (mean.double() / gm.double()).float()
        out[f"{tv}.bn.running_var"] = sd[f"{mine}.var"]
        out[f"{tv}.bn.num_batches_tracked"] = torch.tensor(0)
    out["fc.weight"], out["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    torch.save(out, path)
    return path


def test_fid_conv_mapping_covers_the_network_once():
    names = standard.fid_conv_names()
    layers = {k.rsplit(".", 1)[0] for k in InceptionV3(init=False).state_dict()}
    assert set(names) == layers and len(names) == 94
    assert len(set(names.values())) == 94


def test_fid_from_pytorch_fid_file_equals_setup(fid_cache, tmp_path):
    f = _pytorch_fid_file(fid_cache.cache, tmp_path / standard.PYTORCH_FID_FILE)
    imgs = torch.cat([_img(DATA / n, 96) for n in ("kodim05_crop64.png", "kodim23_crop64.png")])
    today = metrics.FIDInception(weights_dir=fid_cache.cache)
    std = metrics.FIDInception(weights=f)
    fa, fb = today(imgs), std(imgs)
    assert fa.shape == (2, 2048) and torch.equal(fa, fb)     # same features: same FID and KID
    # FID(weights=...) runs that network
    a = metrics.FID(weights=f)
    for k, v in std.net.state_dict().items():
        assert torch.equal(a.net.net.state_dict()[k], v), k
    # a file with a batch-norm scale γ ≠ 1: folded into the conv, the same features
    g = _pytorch_fid_file(fid_cache.cache, tmp_path / "gamma.pth", gamma=True)
    fg = metrics.FIDInception(weights=g)(imgs[:1])
    assert torch.allclose(fg, fa[:1], rtol=1e-4, atol=1e-4)
