"""Quality bar of the shipped learned prior on held-out photos, with the CLI's defaults.

Images: centre crops (default 256×256; smaller images are skipped) of the first ``--limit``
(default 8) colour images of each held-out set (CBSD68, Kodak24, imagenet-heldout: never seen in
training, docs/prior.md). Each model restores them through :func:`dmir.pipeline.restore` with
the CLI's defaults (method ``ddnm-equs+``, its default steps and η, the fast path), one sample,
seed 0, from noise-free measurements of:

- ``sr4``: ``sr_averagepooling`` ×4;
- ``inpaint``: ``inpainting`` with the DDNM/EquS paper mask (dmir/data/ddnm_inpainting_mask.npy,
  26 % of the pixels missing in blobs up to ~100 px);
- ``color``: ``colorization`` (the whole chroma comes from the prior);
- ``sr4_eta0``: ``sr4`` with deterministic sampling (η = 0).

Metrics on [0, 1]: PSNR (and its gain over A⁺y), SSIM. The bar (issue 27): mean gain over A⁺y
≥ +2 dB on SR×4, ≥ +3 dB on inpainting, colorization better than A⁺y, η = 0 within 1 dB of the
default η on SR, no task worse than A⁺y. ``--grid`` saves a colorization comparison grid
(gray input, each model, the original).

    python benchmarks/prior_quality.py [--models dmir-ddpm other/folder] [--limit 8]
        [--size 256] [--tasks sr4 inpaint color sr4_eta0] [--method ddnm-equs+] [--threads N]
        [--grid docs/prior_colorization.png] [--eta 1.0] [--lpips]

``--eta`` replaces the method's default η on every task but ``sr4_eta0``; ``--lpips`` adds
LPIPS-alex (lower is better; needs ``dmir metrics setup`` once), the check that a PSNR gain is
not bought with blur.

Prints a markdown table and writes benchmarks/results/prior_quality.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

import dmir
from dmir import io as dio
from dmir import models, pipeline
from dmir.metrics import image as im
from restore import centre_crop   # benchmarks/restore.py (this script's folder is on sys.path)

HERE = Path(__file__).resolve().parent
EVAL = HERE.parent.parent / "shared" / "data" / "eval"
MASK = Path(dmir.__file__).parent / "data" / "ddnm_inpainting_mask.npy"
SETS = ("CBSD68", "Kodak24", "imagenet-heldout")
#: name → (task, task parameters, η or None for the method's default)
TASKS = {"sr4": ("sr_averagepooling", {"scale": 4}, None),
         "inpaint": ("inpainting", {"mask": "ddnm"}, None),
         "color": ("colorization", {}, None),
         "sr4_eta0": ("sr_averagepooling", {"scale": 4}, 0.0)}
BARS = {"sr4": 2.0, "inpaint": 3.0, "color": 0.0, "sr4_eta0": 0.0}


def load_set(folder: Path, limit: int, size: int) -> tuple[list[str], torch.Tensor]:
    names, xs = [], []
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        x = centre_crop(dio.read_image(f), size)
        if x is None or x.shape[1] != 3:
            continue
        names.append(f.name)
        xs.append(x)
        if len(xs) == limit:
            break
    return names, torch.cat(xs)


def task_params(name: str, size: int) -> dict:
    params = dict(TASKS[name][1])
    if params.get("mask") == "ddnm":
        mask = dio.load_mask(str(MASK))
        if mask.shape[-1] != size:
            mask = torch.nn.functional.interpolate(mask[None, None], size=(size, size),
                                                   mode="nearest")[0, 0]
        params["mask"] = mask
    return params


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=[models.DEFAULT_MODEL])
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--eval-dir", default=str(EVAL))
    ap.add_argument("--limit", type=int, default=8, help="images per set")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--method", default="ddnm-equs+", help="the CLI's default")
    ap.add_argument("--steps", type=int, default=None, help="default: the method's own")
    ap.add_argument("--eta", type=float, default=None,
                    help="η for every task but sr4_eta0 (default: the method's own)")
    ap.add_argument("--lpips", action="store_true", help="also report LPIPS-alex")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--grid", default=None, help="save a colorization comparison grid here")
    ap.add_argument("--out", default=str(HERE / "results" / "prior_quality.json"))
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.lpips:
        from dmir.metrics.lpips import lpips
        from dmir.metrics.weights import WeightsNotSetUpError
        try:    # before the first restoration, not minutes into the run
            lpips(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64))
        except WeightsNotSetUpError as e:
            raise SystemExit(f"--lpips: {e}") from None

    priors = {m: pipeline.load_prior(m) for m in a.models}
    rows, grid_rows = [], []
    for set_name in a.sets:
        names, x = load_set(Path(a.eval_dir) / set_name, a.limit, a.size)
        for tname in a.tasks:
            task, _, eta = TASKS[tname]
            if eta is None:
                eta = a.eta
            params = task_params(tname, a.size)
            apy = None
            outs = {}
            for m, prior in priors.items():
                t0 = time.perf_counter()
                r = pipeline.restore(x, task, degrade=True, input_range="model", model=prior,
                                     method=a.method, steps=a.steps, eta=eta, seed=0,
                                     progress=False, task_params=params)
                secs = time.perf_counter() - t0
                if apy is None:
                    apy = r.op.pinv(r.y).reshape(x.shape).clamp(-1, 1).cpu()
                    outs["A+y"] = (apy, 0.0)
                outs[m] = (r.x.clamp(-1, 1), secs)
            for m, (xh, secs) in outs.items():
                u, v = im.to_unit(xh), im.to_unit(x)
                row = {"set": set_name, "task": tname, "model": m, "images": names,
                       "psnr": [float(p) for p in im.psnr(u, v, reduction="none")],
                       "ssim": [float(p) for p in im.ssim(u, v, reduction="none")],
                       "seconds_per_image": secs / len(names)}
                if a.lpips:
                    row["lpips"] = [float(p) for p in lpips(u, v, reduction="none")]
                rows.append(row)
                print(f"{set_name:<17}{tname:<10}{m:<28}PSNR {sum(row['psnr']) / len(names):6.2f}"
                      f"  SSIM {sum(row['ssim']) / len(names):.3f}"
                      + (f"  LPIPS {sum(row['lpips']) / len(names):.3f}" if a.lpips else "")
                      + f"  {row['seconds_per_image']:.1f} s/img", flush=True)
            if tname == "color" and a.grid:
                for i in range(min(2, len(names))):
                    grid_rows.append([im.to_unit(apy[i])] + [im.to_unit(outs[m][0][i])
                                                             for m in priors]
                                     + [im.to_unit(x[i])])

    def mean(sel):
        v = [p for r in sel for p in r["psnr"]]
        return sum(v) / len(v)

    n = len(rows[0]["images"]) if rows else 0
    eta_txt = "the CLI defaults" if a.eta is None else f"η {a.eta} (sr4_eta0: 0)"
    print(f"\n{a.size}×{a.size} centre crops, up to {a.limit} images per set "
          f"({', '.join(a.sets)}), {a.method} with {eta_txt}, noise-free; PSNR [dB]\n")
    lp = " LPIPS |" if a.lpips else ""
    print(f"| task | model | PSNR | SSIM |{lp} gain over A⁺y | bar |")
    print("|---|---|---:|---:|" + ("---:|" if a.lpips else "") + "---:|---|")
    summary = []
    for tname in a.tasks:
        base = mean([r for r in rows if r["task"] == tname and r["model"] == "A+y"])
        for m in ["A+y"] + a.models:
            sel = [r for r in rows if r["task"] == tname and r["model"] == m]
            p = mean(sel)
            ss = [s for r in sel for s in r["ssim"]]
            gain = p - base
            bar = ""
            if m != "A+y":
                ok = gain >= BARS[tname] if BARS[tname] else gain > 0
                if tname == "sr4_eta0" and "sr4" in a.tasks:
                    sr = mean([r for r in rows if r["task"] == "sr4" and r["model"] == m])
                    ok = ok and p >= sr - 1.0
                bar = "met" if ok else "NOT met"
            entry = {"task": tname, "model": m, "psnr": p, "ssim": sum(ss) / len(ss),
                     "gain_vs_apy": gain, "bar": bar}
            lcol = ""
            if a.lpips:
                ll = [v for r in sel for v in r["lpips"]]
                entry["lpips"] = sum(ll) / len(ll)
                lcol = f" {entry['lpips']:.3f} |"
            summary.append(entry)
            print(f"| {tname} | {m} | {p:.2f} | {sum(ss) / len(ss):.3f} |{lcol} {gain:+.2f} "
                  f"| {bar} |")
    if grid_rows:
        from dmir.plot import image_grid

        image_grid(grid_rows, a.grid, col_titles=["gray (A⁺y)"] + list(a.models) + ["original"])
        print(f"wrote {a.grid}")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as fh:
        json.dump({"models": a.models, "method": a.method, "steps": a.steps, "eta": a.eta,
                   "size": a.size, "limit": a.limit, "images_per_set": n, "sets": a.sets,
                   "summary": summary, "rows": rows}, fh, indent=1)
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
