"""DeqIR parallel sampling: iterations, network evaluations and wall-clock against the
sequential chain.

For each prior and T, the same chain (same x_T; nw = 0, etw = 0.1, the DeqIR defaults) is
solved by

* ``sequential``  — T network calls, one state each (the reference),
* ``published``   — ``strategy="published"``: full per-state Anderson with the published
                    stopping rule (tol 1e-3, 15 evaluations of F),
* ``anderson``    — ``strategy="anderson"``: the same solver run until tol 1e-4 (at most
                    ``--cap`` evaluations),
* ``joint``       — Anderson with one set of mixing weights for the whole system,
* ``picard``      — plain fixed-point iteration of the same map (m = 1),
* ``window-w``    — the sliding window (per-state Anderson inside, tol 1e-4),
* ``window-w-picard`` — the sliding window with plain iteration inside (m = 1),

and reports evaluations of F (parallel rounds), NFE (single-image network evaluations), the
largest |x̂0 - x̂0_sequential| and the CPU wall-clock. Priors: the analytic Gaussian prior of the
conformance fixture (64×64, ×4 average-pool SR), the built-in natural-image prior on a 64×64
Kodak crop (×4 SR), and the tiny trained MNIST DDPM of tests/test_mnist_ddpm.py (28×28, ×2 SR)
as a small real network. Writes benchmarks/results/deqir.json.

    python benchmarks/deqir.py [--steps 20 50 100] [--priors gaussian natural mnist] [--cap 300]
    python benchmarks/deqir.py --priors adm256 --device cuda --steps 20 50 100   # on a GPU

``adm256`` is the full-size ImageNet-256 ADM (``adm-imagenet256-uncond``, 552.8 M parameters)
with random weights (time does not depend on their values) on a 256×256 Kodak crop; run it on a
GPU (optionally ``--dtype bfloat16``). ``ΔPSNR`` is PSNR(x̂, clean) − PSNR(x̂_sequential, clean):
"equal output" means |ΔPSNR| ≤ 0.1 dB.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from dmir import io as dio
from dmir import models, operators, solvers
from dmir.solvers.deqir import ConvergenceWarning

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
DATA = TESTS / "data"


def problem(name, device="cpu", dtype=None):
    """(prior, op, clean image, x_T) for a named prior."""
    g = torch.Generator().manual_seed(0)
    if name == "gaussian":
        traj = np.load(DATA / "trajectories_ref64.npz")
        prior = models.GaussianPrior(torch.from_numpy(traj["prior_mu"]), float(traj["prior_var"]))
        op = operators.build("sr_averagepooling", (3, 64, 64), scale=4)
        return prior, op, torch.from_numpy(traj["x_true"]), torch.from_numpy(traj["x_T"])
    if name == "natural":
        x = dio.read_image(DATA / "kodim05_crop64.png")
        op = operators.build("sr_averagepooling", (3, 64, 64), scale=4)
        return models.load("natural"), op, x, torch.randn(1, 3, 64, 64, generator=g)
    if name == "adm256":
        from dmir.models import adm
        cfg = dict(adm.CONFIGS["adm-imagenet256-uncond"], use_fp16=False)
        with torch.device(device):
            net = adm.build(cfg)
        prior = adm.prior(net.eval(), cfg, name="adm-imagenet256-uncond (random weights)")
        if dtype is not None:
            prior.net.to(dtype)
            prior.compute_dtype = dtype
        x = dio.read_image(DATA / "kodim05_crop64.png")
        x = torch.nn.functional.interpolate(x, size=(256, 256), mode="bilinear")
        op = operators.build("sr_averagepooling", (3, 256, 256), scale=4)
        return prior, op, x, torch.randn(1, 3, 256, 256, generator=g)
    if name == "mnist":
        sys.path.insert(0, str(TESTS))
        from test_mnist_ddpm import CKPT, MnistCNN, _Wrapped

        from dmir.checkpoints.reading import fit_state_dict

        sd = models.read_checkpoint(CKPT)
        cnn = MnistCNN()
        fit_state_dict(cnn, {k[3:]: v for k, v in sd.items() if k.startswith("gt.")}, "mnist")
        prior = models.NetworkPrior(_Wrapped(cnn).eval(), sd["alpha_t"][1:].double(),
                                    in_channels=1, image_size=28, name="mnist-ddpm")
        d = np.load(DATA / "mnist_test32.npz")
        x = torch.from_numpy(d["images"][:1].astype(np.float32) / 255.0)[:, None] - 0.5
        op = operators.build("sr_averagepooling", (1, 28, 28), scale=2)
        return prior, op, x, torch.randn(1, 1, 28, 28, generator=g)
    raise SystemExit(f"unknown prior {name!r}")


def variants(T, cap):
    w = 10 if T > 20 else 5
    return {
        "published": {"strategy": "published"},
        "anderson": {"strategy": "anderson", "max_iter": cap},
        "joint": {"strategy": "anderson", "max_iter": cap, "mixing": "joint"},
        "picard": {"strategy": "anderson", "max_iter": cap, "m": 1},
        f"window-{w}": {"window": w},
        f"window-{2 * w}": {"window": 2 * w},
        f"window-{w}-picard": {"window": w, "m": 1},
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[20, 50, 100])
    ap.add_argument("--priors", nargs="+", default=["gaussian", "natural", "mnist"])
    ap.add_argument("--cap", type=int, default=300, help="max evaluations of F when run to tol")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (adm256 wants a GPU)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    ap.add_argument("--out", default=str(HERE / "results" / "deqir.json"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    warnings.simplefilter("ignore", ConvergenceWarning)
    dev = torch.device(a.device)
    dtype = getattr(torch, a.dtype) if a.dtype else None

    def timed(fn):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = fn()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return out, time.perf_counter() - t0

    def psnr(x, clean):     # model-domain images, PSNR on [0, 1]
        mse = float(((x.clamp(-1, 1) - clean) ** 2).mean()) / 4
        return 10 * np.log10(1 / max(mse, 1e-20))

    rows = []
    print("| prior | T | method | F evals | NFE | max abs err vs seq | ΔPSNR [dB] | converged | "
          "wall [s] |")
    print("|---|---|---|---|---|---|---|---|---|")
    for pname in a.priors:
        prior, op, clean, x_T = problem(pname, dev, dtype)
        prior, op, clean, x_T = prior.to(dev), op.to(dev), clean.to(dev), x_T.to(dev)
        y = op.A(clean)
        for T in a.steps:
            s = solvers.build("deqir", prior, op, steps=T)
            ref, dt = timed(lambda: s.sequential(y, x_T=x_T))
            p_ref = psnr(ref, clean)
            rows.append(dict(prior=pname, T=T, method="sequential", evals=T, nfe=s.nfe,
                             err=0.0, dpsnr=0.0, converged=True, wall=dt))
            for name, kw in variants(T, a.cap).items():
                s = solvers.build("deqir", prior, op, steps=T, **kw)
                out, dt = timed(lambda: s.sample(y, x_T=x_T.clone()))
                rows.append(dict(prior=pname, T=T, method=name, evals=s.iterations, nfe=s.nfe,
                                 err=float((out - ref).abs().max()),
                                 dpsnr=psnr(out, clean) - p_ref, converged=s.converged,
                                 wall=dt, residual=s.residuals[-1]))
            for r in rows[-1 - len(variants(T, a.cap)):]:
                print(f"| {r['prior']} | {r['T']} | {r['method']} | {r['evals']} | {r['nfe']} | "
                      f"{r['err']:.1e} | {r['dpsnr']:+.3f} | {'yes' if r['converged'] else 'no'} "
                      f"| {r['wall']:.2f} |", flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"threads": a.threads, "device": str(dev),
                                       "dtype": a.dtype, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
