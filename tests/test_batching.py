"""Batched restoration with per-image seeds: a batch gives every image what it gets alone
(dmir.rng.BatchGenerator; dmir bench --batch)."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dmir import cli, models, operators, solvers
from dmir.bench import results as res
from dmir.errors import ShapeError
from dmir.rng import BatchGenerator, randn

BENCH = str(Path(__file__).parent / "data" / "bench")


def test_batch_generator_rows_equal_single_draws():
    seeds = [3, 11, 7]
    a = randn((3, 2, 4, 4), BatchGenerator.from_seeds(seeds))
    for i, s in enumerate(seeds):
        assert torch.equal(a[i:i + 1], torch.randn((1, 2, 4, 4),
                                                   generator=torch.Generator().manual_seed(s)))
    with pytest.raises(ShapeError, match="cannot draw a batch of 2"):
        randn((2, 1), BatchGenerator.from_seeds(seeds))


@pytest.mark.parametrize("method,kw", [("ddnm", {}), ("ddnm-equs+", {}),
                                       ("ddnm", {"equs": "random"}), ("pigdm", {}),
                                       ("ddrm", {}), ("dps", {"scale": 0.3})])
def test_sampler_batch_equals_one_at_a_time(method, kw):
    """Every random draw (x_T, re-noising, EquS' random group element) is per image."""
    prior = models.load("natural")
    op = operators.build("sr_averagepooling", (3, 16, 16), scale=2)
    y = torch.randn((3, 3, 8, 8), generator=torch.Generator().manual_seed(0)) * 0.3
    seeds = [5, 6, 7]
    solver = solvers.build(method, prior, op, steps=6, sigma_y=0.05, **kw)
    assert solver.batch_invariant
    batched = solver.sample(y, generator=BatchGenerator.from_seeds(seeds))
    for i, s in enumerate(seeds):
        one = solver.sample(y[i:i + 1], generator=torch.Generator().manual_seed(s))
        torch.testing.assert_close(batched[i:i + 1], one, atol=1e-5, rtol=1e-5)
    # and the images really differ from a shared-generator batch (the test can fail)
    shared = solver.sample(y, generator=torch.Generator().manual_seed(5))
    assert not torch.allclose(shared[1:], batched[1:], atol=1e-3)


def _run(out, batch, *extra):
    args = ["bench", "--data", BENCH, "--size", "32", "--out", str(out), "--no-progress",
            "--save-images", "--grid", "0", "--metrics", "psnr", "ssim", "cons",
            "--batch", str(batch), *extra]
    assert cli.main(args) == 0
    rows, bad = res.read_jsonl(os.path.join(out, res.RESULTS))
    assert bad == 0
    return {res.key_of(r): r for r in rows}


def test_bench_batch_1_equals_batch_4(tmp_path):
    """Batch-size independence is a float32 property: the CPU fast path (bf16 autocast) blocks
    its matrix products by batch shape, which moves PSNR by ~2e-3 dB, so it runs --no-fast."""
    spec = ["--no-fast", "--task", "inpainting,mask=ddnm_inpainting_mask.npy", "--task",
            "sr_averagepooling,scale=2,sigma_y=0.05", "--method", "ddnm,steps=5",
            "--method", "ddnm,steps=5,equs=random,label=ddnm-random", "--method",
            "pigdm,steps=5", "--model", "dmir-ddpm"]
    one = _run(tmp_path / "b1", 1, *spec)
    four = _run(tmp_path / "b4", 4, *spec)
    assert one.keys() == four.keys() and len(one) == 3 * 2 * 4
    for k, r in one.items():
        assert "error" not in r and "error" not in four[k], k
        for v in ("psnr", "ssim", "cons"):
            assert four[k][v] == pytest.approx(r[v], abs=1e-3), (k, v)
        assert four[k]["nfe"] == r["nfe"]
        if k[2] != "A+y":
            a, b = (np.asarray(Image.open(tmp_path / d / "images" / "bench" / k[1] / k[2] / k[3]),
                               np.int64) for d in ("b1", "b4"))
            assert np.abs(a - b).max() <= 1, k
