"""Make the documentation's gallery: real restorations of the shipped demo photos with the
shipped prior, through :func:`dmir.pipeline.restore` (what ``dmir restore --degrade`` runs).

    python docs/gen_gallery.py [--out docs/gallery] [--size 128] [--steps 30]

Writes ``OUT/<photo>-<task>.png`` (degraded | restored | original, side by side) and
``OUT/index.md`` (the page: images, PSNR/SSIM, the ``dmir restore`` command of every row).
The docs build (docs/hooks.py) runs it when the gallery is missing, so the site's gallery is
always made by this code, never placed by hand.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

#: (photo, task, task parameters as dmir restore flags, σ_y, caption)
ROWS = [
    ("astronaut", "inpainting", {}, 0.0, "inpainting: strokes and a box removed"),
    ("coffee", "sr_averagepooling", {"scale": 4}, 0.0, "super-resolution ×4"),
    ("chelsea", "denoising", {}, 0.1, "denoising, σ_y = 0.1"),
    ("rocket", "deblur", {"kernel": "gauss:2"}, 0.01,
     "deblurring, Gaussian σ = 2 px, σ_y = 0.01"),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--out", default=os.path.join(here, "gallery"))
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--method", default="ddnm")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    sys.path.insert(0, os.path.dirname(here))          # this checkout's dmir
    import numpy as np
    import torch

    from dmir import io as dio
    from dmir import metrics, pipeline
    from dmir.demo import DEMO_IMAGES, demo_images, demo_tasks

    os.makedirs(a.out, exist_ok=True)
    photos = demo_images(a.size)
    mask = next(t[3]["mask"] for t in demo_tasks(a.size) if t[2] == "inpainting")
    mask_path = os.path.join(a.out, "mask.png")
    dio.write_image(mask_path, mask[None, None].expand(1, 3, -1, -1) * 2 - 1)
    prior = pipeline.load_prior()                              # the shipped dmir-ddpm, once
    lines = ["# Gallery", "",
             f"Real restorations made by `docs/gen_gallery.py` with the shipped prior "
             f"(`dmir-ddpm`), method `{a.method}`, {a.steps} steps, on {a.size}×{a.size} "
             "public-domain photos shipped with dmir (`dmir/data/demo`). Each photo is "
             "degraded with a fixed seed and restored, exactly as `dmir restore --degrade` "
             "does; the command under each row reproduces it bit for bit from the photo and "
             "mask files next to this page (`PHOTO.png`, `mask.png`).", "",
             "Left to right: the measurement shown as an image (A⁺y), the restoration, the "
             "original.", ""]
    t_all = time.time()
    for name, task, params, sigma, caption in ROWS:
        src = os.path.join(a.out, f"{name}.png")          # the photo as dmir restore reads it
        dio.write_image(src, photos[DEMO_IMAGES.index(name)][None])
        x = dio.read_image(src)
        kw = dict(params)
        if task == "inpainting":
            kw["mask"] = mask_path
        r = pipeline.restore(x, task, method=a.method, model=prior, degrade=True,
                             sigma_y=sigma, steps=a.steps, seed=a.seed, **kw)
        base = r.op.pinv(r.y).detach().reshape(r.x.shape).clamp(-1, 1)
        row = torch.cat([base, r.x.clamp(-1, 1), x], dim=-1)
        fname = f"{name}-{task}.png"
        dio.write_image(os.path.join(a.out, fname), row)
        p_b, p_x = (float(metrics.psnr_model(v, x)) for v in (base, r.x))
        s_x = float(metrics.ssim_model(r.x, x))
        flags = []
        for k, v in params.items():
            flags += [f"--{k}", str(v)]
        if task == "inpainting":
            flags += ["--mask", "mask.png"]
        if sigma:
            flags += ["--sigma-y", f"{sigma:g}"]
        cmd = shlex.join(["dmir", "restore", f"{name}.png", "-o", f"{name}-restored.png",
                          "--task", task, *flags, "--degrade", "--method", a.method,
                          "--steps", str(a.steps), "--seed", str(a.seed)])
        lines += [f"## {caption}", "", f"![{name}: {caption}]({fname})", "",
                  f"PSNR A⁺y {p_b:.2f} dB → restored {p_x:.2f} dB (SSIM {s_x:.3f}); "
                  f"{r.nfe} network evaluations, {r.seconds:.1f} s on the build machine.", "",
                  "```bash", cmd, "```", ""]
        print(f"gallery: {fname}: {p_b:.2f} -> {p_x:.2f} dB ({r.seconds:.1f} s)")
    lines += [f"*Made in {time.time() - t_all:.0f} s by `python docs/gen_gallery.py --size "
              f"{a.size} --steps {a.steps}`; numpy {np.__version__}, torch "
              f"{torch.__version__}.*", ""]
    with open(os.path.join(a.out, "index.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
