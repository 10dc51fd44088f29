"""Operator benchmark: construction time and A / Aᵀ / A⁺ / projection time per registry operator.

Setting: images (3, 256, 256), batch 4, float32, CPU, torch using all cores. Projection is the
DDNM range–null-space step x − A⁺(A x − y) through ``op.project(x, y)``. Targets:
projection ≤ 5 ms, construction ≤ 50 ms (misses are flagged with ✗).

    python benchmarks/operators.py [--runs 20] [--builds 5] [--only NAME ...]
    python benchmarks/operators.py --blur [--ddnm-steps 10]

Prints a markdown table and writes benchmarks/results/operators.json.

``--blur``: the DPS/DCDP-protocol blurs (61×61, reflected borders, operators without an SVD)
at (3, 256, 256), batch 1: A⁺ before (plain conjugate gradients, ≤ 100 iterations) and after
(``pinv_method="auto"``: the DCT-I spectral inverse for the symmetric Gaussian; the motion
kernel keeps CG, so its two rows measure the same method), against one network evaluation of the shipped prior (``dmir-ddpm``), and a
DDNM deblurring run (σ_y = 0.025, ``--ddnm-steps`` steps, demo image) with each A⁺: time and
PSNR. Target: A⁺ ≤ 10% of a network evaluation. Writes benchmarks/results/operators_blur.json.
Runs with torch's thread setting from the environment (OMP_NUM_THREADS), as the CLI does.
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
from dmir import operators
from dmir.operators.cs import random_orthogonal

SHAPE = (3, 256, 256)
BATCH = 4
PROJECT_TARGET_MS = 5.0
BUILD_TARGET_MS = 50.0
MASK = Path(dmir.__file__).parent / "data" / "ddnm_inpainting_mask.npy"


def gaussian_kernel(sigma: float, size: int) -> np.ndarray:
    k = np.exp(-0.5 * ((np.arange(size) - size // 2) / sigma) ** 2)
    return np.outer(k, k) / k.sum() ** 2


def motion_kernel(size: int = 9) -> np.ndarray:
    """A non-separable, motion-like streak: a thick line at ~30° through the centre."""
    k = np.zeros((size, size))
    c = size // 2
    for t in np.linspace(-c, c, 8 * size):
        i, j = c + t * np.sin(np.pi / 6), c + t * np.cos(np.pi / 6)
        k[int(round(i)), int(round(j))] += 1.0
        k[min(size - 1, int(round(i)) + 1), int(round(j))] += 0.3
    return k / k.sum()


def cases():
    """(label, registry name, params for a 'given' build, params for a 'drawn' build or None)."""
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(SHAPE[1] * SHAPE[2], generator=g)
    basis = random_orthogonal(32 * 32, g)
    mask = np.load(MASK)
    return [
        ("sr_bicubic x4", "sr_bicubic", dict(scale=4), None),
        ("sr_bicubic x2", "sr_bicubic", dict(scale=2), None),
        ("sr_averagepooling x4", "sr_averagepooling", dict(scale=4), None),
        ("deblur_gauss", "deblur_gauss", {}, None),
        ("deblur_uni", "deblur_uni", {}, None),
        ("deblur_aniso", "deblur_aniso", {}, None),
        ("colorization", "colorization", {}, None),
        ("denoising", "denoising", {}, None),
        ("cs_walshhadamard r0.25", "cs_walshhadamard", dict(ratio=0.25, perm=perm),
         dict(ratio=0.25, generator=torch.Generator().manual_seed(1))),
        ("cs_blockbased r0.25", "cs_blockbased", dict(ratio=0.25, basis=basis),
         dict(ratio=0.25, generator=torch.Generator().manual_seed(1))),
        ("inpainting (DDNM mask)", "inpainting", dict(mask=mask), None),
        ("deblur gauss 9x9 σ=2 (SVD)", "deblur", dict(kernel=gaussian_kernel(2.0, 9)), None),
        ("deblur motion 9x9 (FFT)", "deblur", dict(kernel=motion_kernel(9)), None),
        ("sr_bicubic_aa x4", "sr_bicubic_aa", dict(scale=4), None),
        ("deblur_dps_gauss (DCT-I A⁺)", "deblur_dps_gauss", {}, None),
        ("deblur_dps_motion (CG A⁺)", "deblur_dps_motion", {}, None),
        ("sr_matlab_bicubic x4", "sr_matlab_bicubic", dict(scale=4), None),
        ("inpainting_box", "inpainting_box", {}, None),
        ("inpainting_random", "inpainting_random", {}, None),
    ]


def _median_ms(fn, runs, warmup=3):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def _build_ms(name, params, builds):
    ts = []
    for _ in range(builds):
        p = dict(params)
        if "generator" in p:  # same seed every time: the same operator is drawn
            p["generator"] = torch.Generator().manual_seed(1)
        t0 = time.perf_counter()
        op = operators.build(name, shape=SHAPE, **p)
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts), op


def run(runs=20, builds=5, only=None):
    torch.set_num_threads(os.cpu_count() or 1)
    results = []
    all_cases = cases()
    covered = {c[1] for c in all_cases}
    missing = set(operators.names()) - covered
    if missing:
        raise SystemExit(f"benchmark does not cover registry operators: {sorted(missing)}")
    # warm up torch (first linalg / fft calls pay one-off initialisation)
    operators.build("sr_bicubic", shape=(3, 16, 16), scale=2)
    for label, name, given, drawn in all_cases:
        if only and name not in only and label not in only:
            continue
        build_ms, op = _build_ms(name, given, builds)
        build_drawn_ms = _build_ms(name, drawn, builds)[0] if drawn is not None else None
        g = torch.Generator().manual_seed(0)
        x = torch.randn((BATCH, *SHAPE), generator=g)
        y = op.A(torch.randn((BATCH, *SHAPE), generator=g))
        r = dict(
            label=label, name=name, y_shape=list(op.y_shape), has_svd=op.has_svd,
            kind=type(op).__name__,
            build_ms=build_ms, build_drawn_ms=build_drawn_ms,
            A_ms=_median_ms(lambda: op.A(x), runs),
            At_ms=_median_ms(lambda: op.At(y), runs),
            pinv_ms=_median_ms(lambda: op.pinv(y), runs),
            project_ms=_median_ms(lambda: op.project(x, y), runs),
        )
        builds_all = [b for b in (build_ms, build_drawn_ms) if b is not None]
        r["project_ok"] = r["project_ms"] <= PROJECT_TARGET_MS
        r["build_ok"] = max(builds_all) <= BUILD_TARGET_MS
        results.append(r)
        print(f"  {label:28s} project {r['project_ms']:7.2f} ms", flush=True)
    return results


def table(results):
    def f(v, ok=None):
        if v is None:
            return "—"
        s = f"{v:.2f}" if v < 100 else f"{v:.0f}"
        return s if ok is None else f"{s} {'✓' if ok else '✗'}"

    lines = [
        f"| operator | build ms (given) | build ms (drawn) | A ms | Aᵀ ms | A⁺ ms | "
        f"project ms (≤ {PROJECT_TARGET_MS:g}) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        bok = r["build_ms"] <= BUILD_TARGET_MS
        dok = None if r["build_drawn_ms"] is None else r["build_drawn_ms"] <= BUILD_TARGET_MS
        lines.append(
            f"| {r['label']} | {f(r['build_ms'], bok)} | {f(r['build_drawn_ms'], dok)} | "
            f"{f(r['A_ms'])} | {f(r['At_ms'])} | {f(r['pinv_ms'])} | "
            f"{f(r['project_ms'], r['project_ok'])} |")
    return "\n".join(lines)


def _demo_image(size=256):
    from PIL import Image
    path = Path(dmir.__file__).parent / "data" / "demo" / "astronaut.png"
    a = np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC),
                   dtype=np.float32) / 255
    return torch.from_numpy(a).permute(2, 0, 1)[None] * 2 - 1


def blur(runs=5, ddnm_steps=10):
    """A⁺ of the DPS-protocol blurs before/after, against one network evaluation."""
    from dmir import models, solvers
    from dmir.operators import dps_protocol as dp
    prior = models.load("dmir-ddpm")
    x = _demo_image()
    with torch.inference_mode():
        net_ms = _median_ms(lambda: prior.eps(x, torch.tensor([500])), max(2, runs // 2), 1)
    kernels_ = {"deblur_dps_gauss": dp.gaussian_kernel(), "deblur_dps_motion": dp.motion_kernel()}
    out = []
    for name, k in kernels_.items():
        ops = {"before (cg)": dp.ReflectBlur(SHAPE, k, pinv_method="cg"),
               "after (auto)": dp.ReflectBlur(SHAPE, k)}
        g = torch.Generator().manual_seed(0)
        y = ops["after (auto)"].A(x) + 2 * dp.DPS_SIGMA_Y * torch.randn(x.shape, generator=g)
        for label, op in ops.items():
            with torch.inference_mode():
                ms = _median_ms(lambda: op.pinv(y), runs, 1)
                xh = op.pinv(y)
            psnr_pinv = float(10 * torch.log10(4 / (xh - x).pow(2).mean()))
            s = solvers.build("ddnm", prior, op, steps=ddnm_steps, sigma_y=dp.DPS_SIGMA_Y)
            t0 = time.perf_counter()
            with torch.inference_mode():
                xr = s.sample(y, generator=torch.Generator().manual_seed(1))
            run_s = time.perf_counter() - t0
            r = dict(operator=name, variant=label, pinv_kind=op.pinv_kind, pinv_ms=ms,
                     network_ms=net_ms, pinv_over_network=ms / net_ms,
                     pinv_psnr=psnr_pinv, ddnm_steps=ddnm_steps, ddnm_s=run_s,
                     ddnm_s_per_100_steps=run_s * 100 / ddnm_steps,
                     ddnm_psnr=float(10 * torch.log10(4 / (xr.clamp(-1, 1) - x).pow(2).mean())))
            out.append(r)
            print(f"  {name:18s} {label:13s} A⁺ {ms:8.1f} ms ({100 * ms / net_ms:5.1f}% of a "
                  f"network eval {net_ms:.0f} ms)  DDNM {ddnm_steps} steps {run_s:6.1f} s, "
                  f"PSNR {r['ddnm_psnr']:.2f} dB", flush=True)
    return out


def blur_table(results):
    lines = ["| blur | A⁺ | A⁺ ms | % of network eval | A⁺y PSNR | DDNM s/100 steps | "
             "DDNM PSNR |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['operator']} | {r['variant']}: {r['pinv_kind']} | "
                     f"{r['pinv_ms']:.1f} | {100 * r['pinv_over_network']:.1f} | "
                     f"{r['pinv_psnr']:.2f} | {r['ddnm_s_per_100_steps']:.0f} | "
                     f"{r['ddnm_psnr']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blur", action="store_true",
                    help="A⁺ of the DPS-protocol blurs before/after vs a network evaluation")
    ap.add_argument("--ddnm-steps", type=int, default=10)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--builds", type=int, default=5)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "operators.json"))
    a = ap.parse_args(argv)
    if a.blur:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        results = blur(min(a.runs, 5), a.ddnm_steps)
        env = dict(torch=torch.__version__, threads=torch.get_num_threads(),
                   cpu_count=os.cpu_count(), shape=list(SHAPE), batch=1,
                   loadavg_1min=load, prior="dmir-ddpm")
        print()
        print(blur_table(results))
        out = Path(a.out).with_name("operators_blur.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(dict(env=env, results=results), indent=2))
        print(f"\nwrote {out}")
        return
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    results = run(a.runs, a.builds, a.only)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    env = dict(torch=torch.__version__, threads=torch.get_num_threads(),
               cpu_count=os.cpu_count(), machine=platform.machine(),
               processor=platform.processor() or platform.platform(), shape=list(SHAPE),
               batch=BATCH, dtype="float32", runs=a.runs, builds=a.builds,
               targets=dict(project_ms=PROJECT_TARGET_MS, build_ms=BUILD_TARGET_MS),
               loadavg_1min=dict(before=load_before, after=load_after))
    print()
    print(f"Operators at {SHAPE}, batch {BATCH}, float32, CPU, {env['threads']} threads, "
          f"torch {env['torch']} (median of {a.runs} runs; builds: median of {a.builds}); "
          f"targets: project ≤ {PROJECT_TARGET_MS:g} ms, build ≤ {BUILD_TARGET_MS:g} ms")
    busy = max((v for v in (load_before, load_after) if v is not None), default=0.0)
    if busy > 0.5 * (os.cpu_count() or 1) + 1:
        print(f"WARNING: system load average {busy:.1f} on {os.cpu_count()} cores: other "
              f"processes compete for the CPU and these timings are inflated")
    print()
    print(table(results))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(env=env, results=results), indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
