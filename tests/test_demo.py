"""``dmir demo`` writes its grid and metrics table; bad options are refused."""
import json

from PIL import Image

from dmir import cli
from dmir.demo import DEMO_IMAGES, demo_images, demo_tasks


def test_demo_images_and_tasks():
    x = demo_images(64)
    assert x.shape == (len(DEMO_IMAGES), 3, 64, 64)
    assert -1 <= x.min() < -0.5 and 0.5 < x.max() <= 1       # real photos, full range
    tasks = demo_tasks(64)
    assert [t[2] for t in tasks] == ["sr_averagepooling", "inpainting", "denoising", "deblur"]
    mask = tasks[1][3]["mask"]
    assert 0.05 < 1 - mask.mean() < 0.5                      # some, not most, pixels missing


def test_demo_runs_and_writes_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = cli.main(["demo", "-o", str(out), "--size", "32", "--steps", "2", "--model", "natural"])
    assert rc == 0
    meta = json.loads((out / "metrics.json").read_text())
    assert len(meta["tasks"]) == 4 and meta["model"] == "natural"
    for r in meta["tasks"]:
        assert r["psnr"] == r["psnr"] and r["psnr_apy"] == r["psnr_apy"]   # finite numbers
    g = Image.open(out / "grid.png")
    assert g.width > 4 * 32 and g.height > 16 * 32            # 16 rows of 4 images
    assert "| denoising (σ 0.1) |" in (out / "metrics.md").read_text()
    rc = cli.main(["demo", "-o", str(tmp_path / "x"), "--size", "30"])
    assert rc == 2 and "--size must be a multiple of 8" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
