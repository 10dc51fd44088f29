"""DCDP on real photos: PSNR, SSIM, network evaluations and wall-clock next to DPS, DDNM and A⁺y.

The DPS/DCDP protocol (``dmir.operators.dps_protocol``): 61×61 Gaussian blur σ = 3
(``deblur_dps_gauss``), 61×61 motion blur, intensity 0.5, one seeded kernel per image
(``deblur_dps_motion``), MATLAB bicubic ×4 (``sr_matlab_bicubic``), a box hole of half the image
side (128 at 256, ``inpainting_box``, margin side/16) and 70 % random pixels missing
(``inpainting_random``); Gaussian measurement noise σ = 0.05 in [-1, 1] = ``DPS_SIGMA_Y`` =
0.025 in dmir's pixel units. Images: the ``adm`` crop (guided-diffusion's centre crop after
box/bicubic downscaling) of the first ``--limit`` photos of each folder, at ``--size``.

Methods (all with the same prior, y and seed per image):

* ``A+y``          — the pseudo-inverse (conjugate gradients for the blurs, so regularised);
* ``DCDP-DDIM``    — DCDP with the released per-task preset (K, τ, lr, T0), DDIM purification
                     (≤ 20 steps per outer iteration);
* ``DCDP-Tweedie`` — the same with one Tweedie step per outer iteration (NFE = K);
* ``DCDP-CM``      — one consistency-model step per outer iteration (NFE = K), when the model
                     (or ``--cm``) is a consistency model (cm format, e.g. cd-lsun-bedroom256-lpips);
* ``DPS``          — 1000 ancestral steps with the gradient through the network (``--dps-steps``);
* ``DDNM``         — DDNM+ (σ_y > 0), 100 steps, η = 0.85 (``--ddnm-steps``).

Prints one table per task and writes benchmarks/results/dcdp.json (per image and means).

    python benchmarks/dcdp.py                                    # default prior, 4 photos, 256
    OMP_NUM_THREADS=1 python benchmarks/dcdp.py --model natural --size 64 --limit 1 \\
        --dps-steps 200 --ddnm-steps 50                          # a CPU smoke run
    python benchmarks/dcdp.py --model adm-ffhq256 --images FFHQ_DIR --device cuda
    python benchmarks/dcdp.py --model adm-lsun-bedroom256 --cm cd-lsun-bedroom256-lpips ...
"""
from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from dmir import io as dio
from dmir import metrics, models, operators, solvers
from dmir.data.datasets import find_images, preprocess
from dmir.operators.dps_protocol import DPS_SIGMA_MODEL, DPS_SIGMA_Y

HERE = Path(__file__).resolve().parent
EVAL = HERE.parent.parent / "shared" / "data" / "eval"
TASKS = ("deblur_dps_gauss", "deblur_dps_motion", "sr_matlab_bicubic", "inpainting_box",
         "inpainting_random")
METHODS = ("apy", "dcdp-ddim", "dcdp-tweedie", "dcdp-cm", "dps", "ddnm")
LABEL = {"apy": "A+y", "dcdp-ddim": "DCDP-DDIM", "dcdp-tweedie": "DCDP-Tweedie",
         "dcdp-cm": "DCDP-CM", "dps": "DPS", "ddnm": "DDNM"}
#: DPS step-size presets of dmir.solvers.dps for the protocol operators
DPS_TASK = {"deblur_dps_gauss": "deblur_gauss", "deblur_dps_motion": "deblur",
            "sr_matlab_bicubic": "sr_bicubic", "inpainting_box": "inpainting",
            "inpainting_random": "inpainting"}


def load_images(folders, limit, size):
    """[(name, (1, 3, size, size) in [-1, 1])], the first ``limit`` RGB photos per folder."""
    out = []
    for d in folders:
        n = 0
        for f in find_images(d):
            x = dio.read_image(os.path.join(d, f))
            if x.shape[1] != 3:
                continue
            a = preprocess(((x[0].permute(1, 2, 0) + 1) / 2).double().numpy(), size, "adm")
            out.append((f"{Path(d).name}/{Path(f).name}",
                        torch.from_numpy(a).permute(2, 0, 1)[None].float() * 2 - 1))
            n += 1
            if n == limit:
                break
    return out


def build_op(task, size, index):
    shape = (3, size, size)
    if task == "sr_matlab_bicubic":
        return operators.build(task, shape, scale=4)
    if task == "inpainting_box":
        return operators.build(task, shape, box=size // 2, margin=max(size // 16, 1),
                               seed=index)
    if task in ("deblur_dps_motion", "inpainting_random"):
        return operators.build(task, shape, seed=index)
    return operators.build(task, shape)


def make_solver(method, prior, cm_prior, op, a):
    if method == "dcdp-ddim":
        return solvers.build("dcdp", prior, op, sigma_y=DPS_SIGMA_Y, purifier="ddim",
                             **a.dcdp_kw)
    if method == "dcdp-tweedie":
        return solvers.build("dcdp", prior, op, sigma_y=DPS_SIGMA_Y, purifier="tweedie",
                             **a.dcdp_kw)
    if method == "dcdp-cm":
        return solvers.build("dcdp", cm_prior, op, sigma_y=DPS_SIGMA_Y, purifier="consistency",
                             **a.dcdp_kw)
    if method == "dps":
        return solvers.build("dps", prior, op, steps=a.dps_steps, sigma_y=DPS_SIGMA_Y,
                             task=DPS_TASK[op.name])
    return solvers.build("ddnm", prior, op, steps=a.ddnm_steps, eta=0.85, sigma_y=DPS_SIGMA_Y)


def load_prior(name, a):
    kw = {} if a.class_label is None else {"class_labels": a.class_label}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", models.InferredConfigWarning)
        p = models.load(name, dtype=a.dtype, **kw)
    return p.to(a.device).eval() if isinstance(p, torch.nn.Module) else p


def restore(method, prior, cm_prior, op, y, a, seed):
    """(x̂, NFE, seconds) for one image."""
    t0 = time.perf_counter()
    if method == "apy":
        with torch.no_grad():
            x = op.pinv(y)
        return x, 0, time.perf_counter() - t0
    s = make_solver(method, prior, cm_prior, op, a)
    gen = torch.Generator(device=a.device).manual_seed(seed)
    x = s.sample(y, generator=gen)
    if a.device == "cuda":
        torch.cuda.synchronize()
    return x.detach(), s.nfe, time.perf_counter() - t0


def write_json(path, data):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = str(path) + ".part"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1)
    os.replace(tmp, path)


def summarise(rows, tasks, methods):
    out = {}
    for task in tasks:
        out[task] = {}
        for m in methods:
            sel = [r for r in rows if r["task"] == task and r["method"] == m]
            if sel:
                out[task][m] = {k: float(np.mean([r[k] for r in sel]))
                                for k in ("psnr", "ssim", "nfe", "seconds")}
                out[task][m]["images"] = len(sel)
    return out


def print_tables(summary, methods):
    for task, res in summary.items():
        print(f"\n{task}  (mean over {max(v['images'] for v in res.values())} images)")
        print(f"| {'method':<13} | PSNR [dB] |  SSIM  |  NFE  | s / image |")
        print("|---------------|----------:|-------:|------:|----------:|")
        for m in methods:
            if m in res:
                r = res[m]
                print(f"| {LABEL[m]:<13} | {r['psnr']:9.2f} | {r['ssim']:.4f} | {r['nfe']:5.0f} "
                      f"| {r['seconds']:9.2f} |")
        dcdp = [m for m in ("dcdp-ddim", "dcdp-tweedie", "dcdp-cm") if m in res]
        if dcdp and "apy" in res:
            best = max(dcdp, key=lambda m: res[m]["psnr"])
            line = (f"best DCDP ({LABEL[best]}): {res[best]['psnr'] - res['apy']['psnr']:+.2f} dB "
                    f"vs A+y")
            if "dps" in res:
                line += (f", {res[best]['psnr'] - res['dps']['psnr']:+.2f} dB vs DPS with "
                         f"{res[best]['nfe']:.0f} vs {res['dps']['nfe']:.0f} NFE")
            print(line)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", nargs="+", metavar="DIR",
                    default=[str(EVAL / "CBSD68"), str(EVAL / "imagenet-heldout")],
                    help="image folder(s), searched recursively (default: CBSD68 and "
                    "imagenet-heldout of the shared evaluation data)")
    ap.add_argument("--limit", type=int, default=2, help="photos per folder (2)")
    ap.add_argument("--size", type=int, default=256, help="image side (256; 64/128 on a CPU)")
    ap.add_argument("--model", default=models.DEFAULT_MODEL, metavar="NAME|PATH",
                    help=f"the prior (default {models.DEFAULT_MODEL}, the learned natural-image "
                    f"prior; 'natural' is the analytic one)")
    ap.add_argument("--cm", metavar="NAME|PATH",
                    help="a consistency model for DCDP-CM (default: the prior itself if it is one)")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--dps-steps", type=int, default=1000, help="DPS steps (1000)")
    ap.add_argument("--ddnm-steps", type=int, default=100, help="DDNM steps (100)")
    ap.add_argument("--dcdp-K", type=int, help="override the preset K (outer iterations)")
    ap.add_argument("--dcdp-tau", type=int, help="override the preset τ (SGD steps)")
    ap.add_argument("--class-label", type=int, help="class-conditional models: the class")
    ap.add_argument("--dtype", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results" / "dcdp.json"))
    a = ap.parse_args(argv)
    a.dcdp_kw = {k: v for k, v in (("K", a.dcdp_K), ("tau", a.dcdp_tau)) if v is not None}

    prior = load_prior(a.model, a)
    cm_prior = load_prior(a.cm, a) if a.cm else prior
    methods = list(a.methods)
    if "dcdp-cm" in methods and not callable(getattr(cm_prior, "denoise", None)):
        methods.remove("dcdp-cm")
        print(f"note: DCDP-CM skipped: {a.cm or a.model} is not a consistency model "
              f"(give --cm NAME|PATH)")
    images = load_images(a.images, a.limit, a.size)
    if not images:
        raise SystemExit(f"no RGB images found in {', '.join(a.images)}")
    print(f"prior {a.model}" + (f", CM {a.cm}" if a.cm else "") + f"; {len(images)} images "
          f"at {a.size}x{a.size}; sigma = {DPS_SIGMA_MODEL} in [-1, 1] (sigma_y {DPS_SIGMA_Y} "
          f"in [0, 1]); device {a.device}, torch threads {torch.get_num_threads()}", flush=True)

    rows = []
    for i, (name, x) in enumerate(images):
        x = x.to(a.device)
        for task in a.tasks:
            op = build_op(task, a.size, i).to(a.device)
            g = torch.Generator(device=a.device).manual_seed(a.seed + 1000 + i)
            y = operators.GaussianNoise(DPS_SIGMA_Y)(op.A(x), generator=g)
            for m in methods:
                out, nfe, sec = restore(m, prior, cm_prior, op, y, a, a.seed + i)
                rows.append({"image": name, "task": task, "method": m,
                             "psnr": metrics.psnr_model(out.cpu(), x.cpu()),
                             "ssim": metrics.ssim_model(out.cpu(), x.cpu()),
                             "nfe": int(nfe), "seconds": sec})
                r = rows[-1]
                print(f"  {name:<40} {task:<18} {LABEL[m]:<13} {r['psnr']:6.2f} dB  "
                      f"SSIM {r['ssim']:.4f}  NFE {nfe:5d}  {sec:7.2f} s", flush=True)
    summary = summarise(rows, a.tasks, methods)
    print_tables(summary, methods)
    settings = {k: v for k, v in vars(a).items() if k != "dcdp_kw"}
    settings.update(sigma_model=DPS_SIGMA_MODEL, sigma_y=DPS_SIGMA_Y,
                    torch_threads=torch.get_num_threads(), methods=methods)
    write_json(a.out, {"settings": settings, "summary": summary, "rows": rows})
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
