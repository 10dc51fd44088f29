"""Which CDDB step reproduces EquS Table 1? DDNM vs CDDB with step_size 1 and 2 (dmir's units:
the step multiplies Aᵀ(A x̂0 − y); the CDDB release's rule is 2) on the five equs-table1 tasks.

EquS Table 1 has CDDB equal to DDNM on inpainting and block CS (CelebA-HQ CS identical,
33.51/0.907/0.111) and far below it on SR ×4, deblurring and colorization. This script measures
the same comparison at a small size with the analytic prior ("natural") and the shipped learned
prior ("dmir-ddpm"): PSNR (dB) and, for colorization, Cons (ℓ1 of A x̂ − y summed over
the pixels, [0, 1] units) of the clamped 8-bit result (EquS's) and of the raw float result.

    python benchmarks/cddb_step.py [--size 32] [--steps 50] [--images 4] [--models natural dmir-ddpm]

Prints a markdown table and writes benchmarks/results/cddb_step.json. Numbers quoted in
docs/presets.md (section "CDDB's step in equs-table1").
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dmir import models, operators, solvers
from dmir.bench.presets import DDNM_MASK

HERE = Path(__file__).resolve().parent
EVAL = Path("/work/shared/data/eval/imagenet-heldout")


def load_images(n, size, folder=EVAL):
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    out = []
    for p in files[:n]:
        im = Image.open(p).convert("RGB")
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        im = im.resize((size, size), Image.Resampling.BICUBIC)
        a = torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
        out.append(a)
    return torch.stack(out)


def tasks(size, gen):
    m = np.load(DDNM_MASK)
    step = m.shape[0] // size
    mask = torch.from_numpy(m[::step, ::step].astype(np.float32))
    shape = (3, size, size)
    return {
        "sr4": operators.build("sr_bicubic", shape, scale=4),
        "inpainting": operators.build("inpainting", shape, mask=mask),
        "cs25": operators.build("cs_blockbased", shape, ratio=0.25, block=min(32, size),
                                generator=gen),
        "deblur_g": operators.build("deblur_gauss", shape),
        "colorization": operators.build("colorization", shape),
    }


def psnr(x, ref):
    mse = ((x.clamp(-1, 1) - ref) / 2).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(1 / mse)).tolist()


def cons_8bit(op, x, y):
    q = torch.round((x.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1
    return ((op.A(q) - y).abs() / 2).flatten(1).sum(1).tolist()


ROWS = [("DDNM", "ddnm", {}), ("CDDB step 1", "cddb", {"step_size": 1.0}),
        ("CDDB step 2 (release)", "cddb", {"step_size": 2.0})]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--eta", type=float, default=0.85)
    ap.add_argument("--models", nargs="+", default=["natural", "dmir-ddpm"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    x = load_images(args.images, args.size)
    ops = tasks(args.size, torch.Generator().manual_seed(0))
    res = {}
    for mname in args.models:
        prior = models.load(mname)
        for tname, op in ops.items():
            y = op.A(x)
            for label, method, kw in ROWS:
                t0 = time.time()
                s = solvers.build(method, prior, op, steps=args.steps, eta=args.eta, **kw)
                g = torch.Generator().manual_seed(1)
                with torch.no_grad():
                    xh = s.sample(y, generator=g)
                r = {"psnr": float(np.mean(psnr(xh, x)))}
                if tname == "colorization":
                    r["cons_8bit"] = float(np.mean(cons_8bit(op, xh, y)))
                    # before clamping/quantisation: how far the sampler left A x̂ from y
                    r["cons_float"] = float(((op.A(xh) - y).abs() / 2).flatten(1).sum(1).mean())
                res[f"{mname}|{tname}|{label}"] = r
                print(f"{mname:10s} {tname:12s} {label:22s} {r} ({time.time() - t0:.1f}s)",
                      flush=True)
    out = HERE / "results" / "cddb_step.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": res}, indent=1))
    # markdown: rows = prior × method, columns = tasks (PSNR; colorization PSNR / Cons)
    names = list(ops)
    print("\n| prior | method | " + " | ".join(names) + " |")
    print("|---|---|" + "---:|" * len(names))
    for mname in args.models:
        for label, _, _ in ROWS:
            cells = []
            for t in names:
                r = res[f"{mname}|{t}|{label}"]
                d = r["psnr"] - res[f"{mname}|{t}|DDNM"]["psnr"]
                c = f"{r['psnr']:.2f}" + ("" if label == "DDNM" else f" ({d:+.2f})")
                if "cons_8bit" in r:
                    c += f" / Cons {r['cons_8bit']:.1f} / float {r['cons_float']:.2f}"
                cells.append(c)
            print(f"| {mname} | {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
