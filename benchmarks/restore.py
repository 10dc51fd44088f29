"""Restoration quality on real photos: PSNR of A⁺y and of dmir's solvers, per image.

Centre crops (default 256×256) of evaluation photos, noise-free tasks, one posterior sample
and the mean of K samples per method. Prints a markdown table and writes
benchmarks/results/restore.json.

    python benchmarks/restore.py [--model natural|patch-gmm] [--images DIR ...] [--limit N]
        [--tasks sr_bicubic inpainting] [--methods ddnm ddnm-equs+] [--samples 8] [--steps 100]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

import dmir
from dmir import io as dio
from dmir import metrics, models, operators, solvers

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data" / "eval"
MASK = Path(dmir.__file__).parent / "data" / "ddnm_inpainting_mask.npy"
TASKS = {"sr_bicubic": {"scale": 4}, "sr_averagepooling": {"scale": 4},
         "inpainting": {"mask": str(MASK)}, "colorization": {}}


def centre_crop(x, size):
    _, _, H, W = x.shape
    if min(H, W) < size:
        return None
    t, l = (H - size) // 2, (W - size) // 2
    return x[..., t:t + size, l:l + size]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="natural")
    ap.add_argument("--images", nargs="+", default=[str(SHARED / "Set5"), str(SHARED / "Kodak24")])
    ap.add_argument("--limit", type=int, default=5, help="images per folder")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--tasks", nargs="+", default=["sr_bicubic", "inpainting"])
    ap.add_argument("--methods", nargs="+", default=["ddnm", "ddnm-equs+"])
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--eta", type=float, default=0.85)
    ap.add_argument("--out", default=str(HERE / "results" / "restore.json"))
    a = ap.parse_args()

    prior = models.load(a.model)
    files = []
    for d in a.images:
        files += sorted(f for f in glob.glob(os.path.join(d, "*")) if os.path.isfile(f))[: a.limit]
    rows = []
    for f in files:
        x = centre_crop(dio.read_image(f), a.size)
        if x is None or x.shape[1] != 3:
            continue
        for task in a.tasks:
            op = operators.build(task, tuple(x.shape[1:]), **TASKS[task])
            y = op.A(x)
            row = {"image": os.path.basename(f), "task": task,
                   "A+y": metrics.psnr_model(op.pinv(y), x)}
            for m in a.methods:
                t0 = time.perf_counter()
                s = solvers.build(m, prior, op, steps=a.steps, eta=a.eta)
                ys = y.expand(a.samples, *y.shape[1:]).contiguous()
                out = s.sample(ys, generator=torch.Generator().manual_seed(0))
                row[f"{m} (1 sample)"] = metrics.psnr_model(out[:1], x)
                row[f"{m} (mean of {a.samples})"] = metrics.psnr_model(out.mean(0, keepdim=True), x)
                row[f"{m} seconds"] = time.perf_counter() - t0
            rows.append(row)
            print({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()},
                  flush=True)
    cols = [k for k in rows[0] if k not in ("image", "task") and not k.endswith("seconds")]
    print(f"\nmodel {a.model}, {a.steps} steps, eta {a.eta}, {a.size}×{a.size} centre crops, "
          f"PSNR [dB]\n")
    print("| image | task | " + " | ".join(cols) + " |")
    print("|---|---|" + "---:|" * len(cols))
    for r in rows:
        print(f"| {r['image']} | {r['task']} | " + " | ".join(f"{r[c]:.2f}" for c in cols) + " |")
    for task in a.tasks:
        sel = [r for r in rows if r["task"] == task]
        print(f"| **mean** | {task} | " + " | ".join(
            f"{np.mean([r[c] for r in sel]):.2f}" for c in cols) + " |")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as fh:
        json.dump({"model": a.model, "steps": a.steps, "eta": a.eta, "size": a.size,
                   "samples": a.samples, "rows": rows}, fh, indent=1)
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
