"""The learned natural-image prior that ships with dmir (``dmir-ddpm``): small enough to ship,
loads offline through the checkpoint loader, and restores held-out photos better than A⁺y and
than the analytic natural-image prior.

The four 64×64 crops in tests/data/heldout64 come from the evaluation sets (CBSD68, Kodak24,
imagenet-heldout, McMaster), never seen in training (docs/prior.md).
"""
import json
from pathlib import Path

import pytest
import torch

from dmir import cli, models, operators, solvers
from dmir import io as dio
from dmir.metrics import image as im

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def photos():
    return torch.cat([dio.read_image(p) for p in sorted((DATA / "heldout64").glob("*.png"))])


@pytest.fixture(scope="module")
def prior():
    return models.load(models.LEARNED_PRIOR)


def test_shipped_prior_is_small_and_loads_as_a_ddpm_checkpoint(prior):
    folder = Path(models.learned_prior_path())
    size = sum(f.stat().st_size for f in folder.rglob("*.safetensors"))
    assert size <= 25 * 2 ** 20
    meta = json.loads((folder / "config.json").read_text())
    assert meta["format"] in ("ddpm", "experts")
    assert prior.name == "dmir-ddpm" and prior.info["format"] == meta["format"]
    if meta["format"] == "ddpm":                 # one float32 network
        assert meta["training"]["step"] >= 1000 and 4 * prior.num_parameters() <= size
    else:                                        # timestep experts (dmir.models.experts)
        subs = [json.loads((folder / e["path"] / "config.json").read_text())
                for e in meta["experts"]]
        assert all(m["format"] == "ddpm" and m["training"]["step"] >= 1000 for m in subs)
        assert len(subs) >= 2 and 2 * prior.num_parameters() <= size      # float16 on disk
    assert models.DEFAULT_MODEL == "dmir-ddpm"
    assert cli._parser().parse_args(["restore", "a", "-o", "b", "--task", "denoising"]).model \
        == "dmir-ddpm"


def test_denoiser_beats_the_noisy_input(prior, photos):
    """ε-prediction on held-out photos: x̂0 is much closer to x than x_t is (t = 200, 500)."""
    g = torch.Generator().manual_seed(0)
    for t in (200, 500):
        a = prior.alphas_cumprod[t].float()
        e = torch.randn(photos.shape, generator=g)
        xt = a.sqrt() * photos + (1 - a).sqrt() * e
        with torch.no_grad():
            x0 = prior.x0(xt, torch.full((len(photos),), t))
        noisy = im.psnr_model(xt / a.sqrt(), photos)
        assert im.psnr_model(x0, photos) > noisy + 8.0


def _restore(model, task, params, photos, steps=30):
    op = operators.build(task, tuple(photos.shape[1:]), **params)
    y = op.A(photos)
    with torch.no_grad():
        out = solvers.build("ddnm", model, op, steps=steps).sample(
            y, generator=torch.Generator().manual_seed(0))
    return im.psnr_model(op.pinv(y).reshape(photos.shape), photos), im.psnr_model(out, photos)


# measured (4 photos, 30 steps, seed 0): SR×4 A⁺y 22.61, learned 23.82, analytic 21.65 dB;
# inpainting A⁺y 18.72, learned 27.99, analytic 25.30 dB
@pytest.mark.parametrize("task,params,gain", [
    ("sr_averagepooling", {"scale": 4}, 0.8),
    ("inpainting", {"mask": "box"}, 6.0),
])
def test_ddnm_with_the_learned_prior_beats_apy_and_the_analytic_prior(prior, photos, task,
                                                                       params, gain):
    if params.get("mask") == "box":
        mask = torch.ones(64, 64)
        mask[20:44, 16:40] = 0
        mask[:, 50:54] = 0
        params = {"mask": mask}
    apy, learned = _restore(prior, task, params, photos)
    _, analytic = _restore(models.load("natural"), task, params, photos)
    assert learned > apy + gain, (apy, learned)
    assert learned > analytic + 1.0, (analytic, learned)


def test_default_restore_runs_at_any_size(tmp_path, capsys):
    """The CLI default (learned prior) on a 70×45 photo: non-multiple sizes are padded."""
    src = tmp_path / "odd.png"
    dio.write_image(src, dio.read_image(DATA / "heldout64" / "kodak24_kodim15.png")[..., :45, :62])
    rc = cli.main(["restore", str(src), "-o", str(tmp_path / "o.png"), "--task", "denoising",
                   "--sigma-y", "0.1", "--degrade", "--steps", "10"])
    out = capsys.readouterr().out
    assert rc == 0 and "3x45x62" in out
    psnr = [float(l.split()[-2]) for l in out.splitlines() if l.startswith(("A+y", "ddnm"))]
    assert psnr[1] > psnr[0] + 2.0, out
