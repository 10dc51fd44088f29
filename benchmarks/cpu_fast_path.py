"""The fast path of the shipped prior on this CPU: NFE/s and PSNR per option.

For ``models.load("dmir-ddpm")`` at 256² (batch 1), each of: plain (no fast path), channels_last,
bfloat16 autocast (NCHW and channels_last), ``torch.compile`` (float32 and bfloat16, compile time
reported separately). Network evaluations are timed round-robin (one of each option in turn, so
load from other processes hits all alike); NFE/s is 1 / median time. Accuracy: a short DDNM
denoising run (σ_y = 0.1, ``--steps`` steps, demo image, same seed) with each option, PSNR
against the clean image and its difference to plain. The rule (issue 20): turn on by default
what is faster without moving PSNR by more than 0.05 dB.

    python benchmarks/cpu_fast_path.py [--runs 15] [--steps 10] [--no-compile]

Prints a markdown table and writes benchmarks/results/cpu_fast_path.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import dmir
from dmir import models, operators, solvers
from dmir.models import fast

SIZE = 256
OPTIONS = {
    "plain": None,
    "channels_last": dict(dtype=None, channels_last=True),
    "bf16": dict(dtype="bfloat16", channels_last=False),
    "bf16+channels_last": dict(dtype="bfloat16", channels_last=True),
    "compile": dict(dtype=None, channels_last=True, compile=True),
    "compile+bf16": dict(dtype="bfloat16", channels_last=True, compile=True),
}


def _image():
    from PIL import Image
    path = Path(dmir.__file__).parent / "data" / "demo" / "astronaut.png"
    a = np.asarray(Image.open(path).convert("RGB").resize((SIZE, SIZE), Image.BICUBIC),
                   dtype=np.float32) / 255
    return torch.from_numpy(a).permute(2, 0, 1)[None] * 2 - 1


def _prior(opts):
    p = models.load("dmir-ddpm")
    if opts is not None:
        fast.accelerate(p, **opts)
    return p


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                         "cpu_fast_path.json"))
    a = ap.parse_args(argv)
    names = [n for n in OPTIONS if not (a.no_compile and "compile" in n)]
    x = _image()
    t = torch.tensor([500])
    priors, first_ms = {}, {}
    for n in names:
        priors[n] = _prior(OPTIONS[n])
        t0 = time.perf_counter()
        with torch.inference_mode():
            priors[n].eps(x, t)                     # compiles, for the compiled options
        first_ms[n] = (time.perf_counter() - t0) * 1e3
        print(f"  {n:20s} first call {first_ms[n]:8.0f} ms", flush=True)
    times = {n: [] for n in names}
    with torch.inference_mode():
        for _ in range(a.runs):
            for n in names:
                t0 = time.perf_counter()
                priors[n].eps(x, t)
                times[n].append(time.perf_counter() - t0)
    # accuracy: one short restoration each
    op = operators.build("denoising", (3, SIZE, SIZE))
    y = x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    rows = []
    for n in names:
        s = solvers.build("ddnm", priors[n], op, steps=a.steps, sigma_y=0.1)
        with torch.inference_mode():
            xr = s.sample(y, generator=torch.Generator().manual_seed(1))
        psnr = float(10 * torch.log10(4 / (xr.clamp(-1, 1) - x).pow(2).mean()))
        med = statistics.median(times[n])
        rows.append(dict(option=n, nfe_per_s=1 / med, ms=med * 1e3, first_call_ms=first_ms[n],
                         psnr=psnr))
    base = rows[0]
    for r in rows:
        r["speedup"] = r["nfe_per_s"] / base["nfe_per_s"]
        r["dpsnr"] = r["psnr"] - base["psnr"]
        r["eligible"] = r["speedup"] > 1.03 and abs(r["dpsnr"]) <= 0.05
    print()
    print(f"dmir-ddpm at {SIZE}², batch 1, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__} (median of {a.runs}, round-robin); PSNR: DDNM denoising "
          f"σ_y 0.1, {a.steps} steps")
    print("| option | NFE/s | ms | × plain | first call ms | PSNR dB | ΔPSNR | faster and ≤ 0.05 dB |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['option']} | {r['nfe_per_s']:.2f} | {r['ms']:.0f} | {r['speedup']:.2f} | "
              f"{r['first_call_ms']:.0f} | {r['psnr']:.2f} | {r['dpsnr']:+.3f} | "
              f"{'yes' if r['eligible'] else 'no'} |")
    env = dict(torch=torch.__version__, threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
               machine=platform.machine(), processor=platform.processor(),
               loadavg_1min=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
               runs=a.runs, steps=a.steps, size=SIZE)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(env=env, results=rows), indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
