"""Images/s of the bench's restoration step, one image per sampler call vs batches.

The images of tests/data/bench (and copies, shifted, to reach --images) are centre-cropped to
--size, degraded (SR ×2, seeded) and restored with --method and --model through
:func:`dmir.bench.pipeline.restore` — the code ``dmir bench`` runs — once one at a time and once
in batches of each --batch, with per-image seeds. Prints a table (images/s, speed-up, max
difference to batch 1) and writes benchmarks/results/bench_batch.json.

    python benchmarks/bench_batch.py [--model dmir-ddpm] [--size 64] [--images 8]
        [--batch 2 4 8] [--steps 10] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from dmir import pipeline
from dmir.bench.pipeline import degrade, restore, seed_for
from dmir.bench.spec import DatasetSpec, MethodSpec
from dmir.data import ImageDataset

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent / "tests" / "data" / "bench"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="dmir-ddpm")
    ap.add_argument("--method", default="ddnm")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--batch", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(HERE / "results" / "bench_batch.json"))
    a = ap.parse_args()

    ds = ImageDataset.from_spec(DatasetSpec(name="bench", path=str(BENCH), size=a.size))
    clean = [ds.load(it) for it in ds.items]
    xs = [torch.roll(clean[i % len(clean)], shifts=3 * (i // len(clean)), dims=-1)
          for i in range(a.images)]
    op = pipeline.make_operator("sr_averagepooling", ds.shape, scale=2)
    ys = [degrade(op, x, 0.0, seed_for(0, "b", i, "noise")) for i, x in enumerate(xs)]
    seeds = [seed_for(0, "b", i, "sample") for i in range(a.images)]
    prior = pipeline.prepare_prior(pipeline.load_prior(a.model), ds.shape, a.device)
    op_dev = op if a.device == "cpu" else op.to(a.device)
    m = MethodSpec(name=a.method, method=a.method, steps=a.steps)
    restore(m, prior, op_dev, ys[0], 0.0, seeds[0], a.device)           # warm-up

    def run(batch):
        outs, t0 = [], time.perf_counter()
        for s in range(0, a.images, batch):
            y = torch.cat(ys[s:s + batch])
            sd = seeds[s:s + batch]
            x, _ = restore(m, prior, op_dev, y, 0.0, sd if batch > 1 else sd[0], a.device)
            outs.append(x)
        return torch.cat(outs), time.perf_counter() - t0

    ref, t1 = run(1)
    rows = [{"batch": 1, "images_per_s": a.images / t1, "speedup": 1.0, "max_diff": 0.0}]
    for b in a.batch:
        x, t = run(b)
        rows.append({"batch": b, "images_per_s": a.images / t, "speedup": t1 / t,
                     "max_diff": float((x - ref).abs().max())})
    print(f"{a.model}, {a.method} {a.steps} steps, {a.images} images {a.size}x{a.size}, "
          f"{a.device}, {torch.get_num_threads()} thread(s)")
    print("| batch | images/s | speed-up | max |x - x_batch1| |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['images_per_s']:.3f} | {r['speedup']:.2f} | "
              f"{r['max_diff']:.2e} |")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"model": a.model, "method": a.method, "steps": a.steps, "size": a.size,
                   "images": a.images, "device": a.device,
                   "threads": torch.get_num_threads(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
