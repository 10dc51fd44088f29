"""Golden outputs: ``dmir restore`` and ``dmir bench`` give, for fixed seeds, the same results as
when ``tests/data/golden_*.npz`` were recorded (before the pipeline/layout refactor, issue 16; re-recorded from main after h14b/h20, whose
few-steps EquS+ fallback changed the ddnm-equs+ cases, and checked equal to main's outputs).

Re-record (only when a change of results is intended):
``DMIR_RECORD_GOLDEN=1 python -m pytest -q tests/test_golden.py``.
"""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dmir import cli
from dmir import io as dio
from dmir.bench import results as res

DATA = Path(__file__).parent / "data"
BENCH = str(DATA / "bench")
RECORD = os.environ.get("DMIR_RECORD_GOLDEN") == "1"

#: (case name, restore arguments after INPUT -o OUTPUT); 32×32 crops, 16-bit output
RESTORE_CASES = [
    ("natural_sr", ["--task", "sr_averagepooling", "--scale", "2", "--degrade",
                    "--model", "natural", "--method", "ddnm", "--steps", "10"]),
    ("natural_inpaint_equs", ["--task", "inpainting", "--mask", "{mask}", "--degrade",
                              "--model", "natural", "--steps", "10", "--seed", "3"]),
    ("natural_deblur_noise", ["--task", "deblur", "--kernel", "gauss:1.5", "--sigma-y", "0.05",
                              "--degrade", "--model", "natural", "--method", "pigdm",
                              "--steps", "10", "--seed", "1"]),
    ("natural_samples", ["--task", "denoising", "--sigma-y", "0.1", "--degrade", "--model",
                         "natural", "--method", "ddnm", "--steps", "8", "--samples", "2"]),
    ("learned_sr", ["--task", "sr_bicubic", "--scale", "2", "--degrade", "--method", "ddnm",
                    "--steps", "5", "--seed", "2", "--no-fast"]),
    ("learned_inpaint_equs", ["--task", "inpainting", "--mask", "{mask}", "--degrade",
                              "--steps", "5", "--no-fast"]),
    ("learned_plain_input", ["--task", "denoising", "--sigma-y", "0.05", "--method", "ddnm",
                             "--steps", "4", "--no-fast"]),
]
# (--no-fast: the fast path runs bfloat16 on CPUs with native bfloat16 only, so its results
# depend on the machine; float32 results do not)

#: (case name, bench arguments); 2 images at 32×32
BENCH_CASES = [
    ("natural", ["--task", "inpainting,mask=ddnm_inpainting_mask.npy", "--task",
                 "sr_averagepooling,scale=2,sigma_y=0.02", "--method", "ddnm,steps=6",
                 "--method", "ddnm-equs+,steps=6", "--model", "natural"]),
    ("learned", ["--task", "deblur,kernel=gauss:1", "--method", "ddnm,steps=4",
                 "--model", "dmir-ddpm", "--seed", "5", "--no-fast"]),
]
RECORD_KEYS = ("psnr", "ssim", "cons")


def _inputs(tmp):
    k = Image.open(DATA / "kodim05_crop64.png").convert("RGB")
    k.crop((8, 8, 40, 40)).save(tmp / "clean.png")
    m = np.full((32, 32), 255, np.uint8)
    m[10:20, 8:24] = 0
    Image.fromarray(m).save(tmp / "mask.png")
    return tmp / "clean.png", tmp / "mask.png"


def _restore_outputs(tmp):
    clean, mask = _inputs(tmp)
    out = {}
    for name, args in RESTORE_CASES:
        dst = tmp / f"{name}.png"
        args = [a.format(mask=mask) for a in args]
        assert cli.main(["restore", str(clean), "-o", str(dst), "--bits", "16", *args]) == 0
        a, _ = dio._read_array(str(dst))
        out[f"restore/{name}"] = np.round(a * 65535).astype(np.uint16)
    return out


def _bench_outputs(tmp):
    out = {}
    for name, args in BENCH_CASES:
        d = tmp / f"bench_{name}"
        assert cli.main(["bench", "--data", BENCH, "--size", "32", "--limit", "2", "--out",
                         str(d), "--no-progress", "--save-images", "--grid", "0",
                         "--metrics", "psnr", "ssim", "cons", *args]) == 0
        rows, bad = res.read_jsonl(os.path.join(d, "results.jsonl"))
        assert bad == 0
        for r in rows:
            key = f"bench/{name}/{r['task']}/{r['method']}/{r['image']}"
            out[key + "/values"] = np.array([r[k] for k in RECORD_KEYS], np.float64)
            if r["method"] != "A+y":
                png = os.path.join(d, "images", "bench", r["task"], r["method"], r["image"])
                out[key + "/image"] = np.asarray(Image.open(png).convert("RGB"))
    return out


def _check(got, path, pixel_tol):
    if RECORD:
        np.savez_compressed(path, **got)
        pytest.skip(f"recorded {path}")
    want = dict(np.load(path))
    assert sorted(got) == sorted(want)
    for k, w in want.items():
        g = got[k]
        assert g.shape == w.shape, k
        if k.endswith("/values"):
            np.testing.assert_allclose(g, w, atol=2e-3, rtol=0, err_msg=k)
        else:   # images: float noise may move a pixel by one quantisation level
            diff = np.abs(g.astype(np.int64) - w.astype(np.int64))
            assert diff.max() <= pixel_tol, (k, int(diff.max()))


def test_restore_matches_the_recorded_outputs(tmp_path):
    _check(_restore_outputs(tmp_path), DATA / "golden_restore.npz", pixel_tol=40)


def test_bench_matches_the_recorded_outputs(tmp_path):
    _check(_bench_outputs(tmp_path), DATA / "golden_bench.npz", pixel_tol=1)
