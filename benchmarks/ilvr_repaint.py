"""ILVR and RePaint next to DDNM and A⁺y on real photos with one prior (default: the shipped
``dmir-ddpm``): PSNR per image and mean, network evaluations, seconds.

Centre crops (default 64×64) of the first image of each evaluation folder (Kodak24, CBSD68,
Set14, imagenet-heldout), noise-free. Tasks: ×4 average-pooling SR (ILVR's φ_N = A⁺A exactly,
the box-filter resizer) and inpainting with the DDNM paper mask (``ddnm_inpainting_mask.npy``,
256×256, subsampled by 4 to 64×64 — the same pattern of strokes, scaled). One posterior sample per
image, the same seed for every method.

    OMP_NUM_THREADS=1 python benchmarks/ilvr_repaint.py [--model dmir-ddpm] [--size 64]
        [--repaint-steps 100 --jump-length 10 --jump-n-sample 3]

Prints a markdown table and writes benchmarks/results/ilvr_repaint.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import dmir
from dmir import io as dio
from dmir import metrics, models, operators, pipeline, solvers

HERE = Path(__file__).resolve().parent
EVAL = HERE.parent.parent / "shared" / "data" / "eval"
FOLDERS = ("Kodak24", "CBSD68", "Set14", "imagenet-heldout")
MASK = Path(dmir.__file__).parent / "data" / "ddnm_inpainting_mask.npy"


def crop(x, size):
    _, _, H, W = x.shape
    t, l = (H - size) // 2, (W - size) // 2
    return x[..., t:t + size, l:l + size]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="dmir-ddpm")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100, help="DDNM and ILVR steps")
    ap.add_argument("--repaint-steps", type=int, default=100)
    ap.add_argument("--jump-length", type=int, default=10)
    ap.add_argument("--jump-n-sample", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval", default=str(EVAL), help="folder with the evaluation folders")
    ap.add_argument("--out", default=str(HERE / "results" / "ilvr_repaint.json"))
    a = ap.parse_args()

    S = a.size
    ev = Path(a.eval)
    x = torch.cat([crop(dio.read_image(sorted((ev / f).glob("*"))[0]), S) for f in FOLDERS])
    prior = pipeline.prepare_prior(models.load(a.model), (3, S, S), "cpu", batch=len(FOLDERS))
    m = torch.from_numpy(np.load(MASK)).float()
    m = m[:: m.shape[0] // S, :: m.shape[1] // S][:S, :S]
    tasks = {"sr_averagepooling x4": operators.build("sr_averagepooling", (3, S, S), scale=4),
             "inpainting (DDNM mask)": operators.build("inpainting", (3, S, S), mask=m)}
    rp = dict(steps=a.repaint_steps, jump_length=a.jump_length,
              jump_n_sample=a.jump_n_sample)
    methods = {
        "sr_averagepooling x4": [("DDNM", "ddnm", dict(steps=a.steps)),
                                 ("ILVR", "ilvr", dict(steps=a.steps))],
        "inpainting (DDNM mask)": [("DDNM", "ddnm", dict(steps=a.steps)),
                                   ("RePaint", "repaint", rp),
                                   ("RePaint (no jumps)", "repaint",
                                    dict(steps=a.repaint_steps, jump_length=1,
                                         jump_n_sample=1))],
    }
    rows = []
    for task, op in tasks.items():
        y = op.A(x)
        ref = (x + 1) / 2
        rows.append(dict(task=task, method="A+y", nfe=0, seconds=0.0,
                         psnr=[float(v) for v in metrics.psnr(
                             ((op.pinv(y) + 1) / 2).clamp(0, 1), ref, reduction="none")]))
        for label, name, opts in methods[task]:
            s = solvers.build(name, prior, op, **opts)
            t0 = time.perf_counter()
            out = s.sample(y, generator=torch.Generator().manual_seed(a.seed))
            dt = time.perf_counter() - t0
            p = metrics.psnr(((out + 1) / 2).clamp(0, 1), ref, reduction="none")
            rows.append(dict(task=task, method=label, options={k: v for k, v in opts.items()},
                             nfe=s.nfe, seconds=dt, psnr=[float(v) for v in p]))
            print(task, label, f"{float(p.mean()):.2f} dB", s.nfe, f"{dt:.0f}s", flush=True)
    print(f"\n| task | method | NFE | " + " | ".join(FOLDERS) + " | mean PSNR |")
    print("|---|---|---|" + "---|" * len(FOLDERS) + "---|")
    for r in rows:
        print(f"| {r['task']} | {r['method']} | {r['nfe']} | "
              + " | ".join(f"{v:.2f}" for v in r["psnr"]) + f" | {np.mean(r['psnr']):.2f} |")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(dict(model=a.model, size=S, images=list(FOLDERS),
                                           seed=a.seed, rows=rows), indent=1))


if __name__ == "__main__":
    main()
