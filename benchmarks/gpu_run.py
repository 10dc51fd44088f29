"""One prepared GPU run (issue 19): CUDA correctness, throughput, DeqIR latency, prior training.

The GPU is lent for 15 minutes in all (its start counts) and one command may run 600 s, so the
whole GPU programme is this one script, tested on the CPU with ``--small`` (tests/test_gpu_run.py).

Driver note
-----------
One call of the device tool (``run``), in the repository root, ``timeout_s=600``::

    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_run.py --out $OUT --budget 540

(``python3`` is the interpreter that holds PyTorch there; dmir is imported from this checkout.)
Everything it needs travels with the working tree: the fixture model dmir/data/dmir-ddpm, the
training photos benchmarks/gpu_data/ (9.9 MB), the test photo in tests/data/; it reads nothing
else and needs no network. It ends within ``--budget`` seconds of its start, CUDA warm-up
included: each stage gets a share of the time left (below) while later stages keep their
minimum; a stage that cannot get its minimum is recorded as skipped; inside a stage, parts that
no longer fit are skipped and listed; a watchdog ends the process 20 s after the budget, writing
what it has (and the latest trained weights). Output stays under 12 kB (what the tool shows).
If the machine is still warm afterwards (30 s) and device time is left, more training resumes
from the state left on it: ``... gpu_run.py --out $OUT --stages 4 --budget N``.

Afterwards, on the CPU here:

1. copy the returned folder (``files_at``) to ``benchmarks/results/gpu_run/`` and commit it;
2. evaluate the trained prior on held-out photos next to the shipped one::

       python benchmarks/prior_quality.py --model benchmarks/results/gpu_run/prior \\
           --out benchmarks/results/prior_quality_gpu.json
       python benchmarks/prior_quality.py          # the shipped dmir-ddpm, same photos

   and ship it (replace ``dmir/data/dmir-ddpm``) only if it beats the shipped prior on both
   tasks;
3. ``give_back`` the machine unless you rerun at once; put the headline numbers (stage
   summaries in ``gpu_run.json``) into the issue's closing note.

Output folder (``--out``; default ``$OUT``, else benchmarks/results/gpu_run), at most 8 files of
≤ 16 MiB (what the device machine returns), each written as soon as its stage ends:

* ``gpu_run.json``            device (``torch.cuda.get_device_name``), budget, per-stage status
                              (ok / skipped / failed / partial) and seconds;
* ``1_cuda_correctness.json`` every method and EquS/EquS+ variant (``dmir.solvers.names()``)
  on the shipped trained prior (64×64 SR×4, 20 steps, 3 for DCDP's K) on the device in float32
  and with the fast path (bf16 autocast + channels_last), against the same run on the CPU with
  the same seed (a CPU generator: dmir draws on the generator's device, so both runs get the
  same noise; DeqIR with its sliding window, which ends on the exact chain); tiling
  (:class:`~dmir.models.tiled.TiledPrior` on 96×128); CUDA graphs
  and ``torch.compile`` once each against the eager fast path. Tolerances
  (:data:`TOLERANCES`; outputs compared on [0, 1] after clamping): float32 (TF32 off) PSNR vs
  CPU ≥ 40 dB; fast path PSNR vs CPU float32 ≥ 30 dB and PSNR against the truth within 0.5 dB
  of the CPU's; CUDA graphs ≥ 40 dB and compile ≥ 30 dB vs the eager fast path;
* ``2_throughput.json``       benchmarks/gpu_throughput.py's measurements (its functions; its
  JSON layout, so its ``print_tables`` reads it) for the full-size ImageNet-256 ADM with random
  weights, DDNM and DDNM-EquS+, SR×4 bicubic, batch 1…64 on the fast path, the reference loop's
  re-creation (batch 1, float16 torso), CUDA graphs at small batches, bf16 vs fp32; images/s,
  TFLOP/s, fraction of the limit (0.28 s/image for 100 steps at 800 TFLOP/s), peak memory.
  Timed runs have 20 steps (time per step does not depend on the count; s/image is also given
  for 100 steps); a batch whose predicted time no longer fits ends its sweep;
* ``3_deqir_latency.json``    DeqIR on one 256×256 image with the full ADM (random weights,
  fast path) and the shipped trained prior: sequential vs full Anderson vs sliding window, T 25
  and 50: wall-clock, evaluations, ΔPSNR vs the sequential chain (equal output: ≤ 0.1 dB) and
  the latency ratio (goal ≤ ½);
* ``4_prior_training.json``   ``dmir.train`` at GPU scale (:data:`RECIPE`), loss curve, rate;
* ``4_loss.png``; ``prior/model.safetensors`` (bf16 storage) + ``prior/config.json``: the EMA
  weights, loadable with ``dmir.models.load``.

Stage shares (seconds, :data:`SHARES`): 1 → 90, 2 → 90, 3 → 50, 4 → the rest (≈ 300 s of a
540 s budget, more when earlier stages end early).

    python benchmarks/gpu_run.py --small [--out DIR]   # CPU, tiny models: proves it runs

``--small`` costs about 47 s of CPU time (measured with OMP_NUM_THREADS=1: 45.7 s user + 1.5 s
system, all four stages complete, 22/22 methods). Its wall time is that divided by the share
of a CPU it gets: 355 s on a 2-CPU machine at load average 11 (13 % of a CPU), about a minute
on an idle one; its budget defaults to 1800 s so that a loaded machine still completes it. The
exit status is 1 when a stage failed or reports FAILED (e.g. stage 1 "incomplete": the budget
ran out before every method), 2 for bad options (``--budget`` must be a positive, finite
number of seconds).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import importlib.util
import json
import math
import os
import platform
import shutil
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))      # this checkout's dmir (the device machine has no install)

from dmir import io as dio  # noqa: E402
from dmir import models, operators, solvers  # noqa: E402
from dmir.metrics import image as im  # noqa: E402
from dmir.models import fast  # noqa: E402
from dmir.models.tiled import TiledPrior  # noqa: E402

IMAGE = ROOT / "tests" / "data" / "kodim05_crop64.png"
GPU_DATA = HERE / "gpu_data"

# ----------------------------------------------------------------------------- settings
#: Stage 4 at GPU scale: dmir.train.TrainConfig fields (update here when the recipe changes;
#: keys TrainConfig does not have are reported and ignored). 6.8 M parameters: 13 MiB in bf16,
#: under the device machine's 16 MiB per returned file (a 25 MB network would not come back).
RECIPE = {
    "crop": 128, "batch": 64, "lr": 2e-4, "warmup": 200, "ema_rate": 0.999, "grad_clip": 1.0,
    "ch": 64, "ch_mult": [1, 1, 2, 2], "num_res_blocks": 2, "attn_resolutions": [],
    "dropout": 0.0, "prediction": "v_prediction", "amp": True, "seed": 0,
    "save_every": 500, "log_every": 25, "val": [],
}
#: --small: the same code on the CPU with a tiny network
SMALL_RECIPE = dict(RECIPE, crop=32, batch=4, ch=32, ch_mult=[1, 2], num_res_blocks=1,
                    warmup=4, save_every=4, log_every=2, max_images=8)

#: seconds per stage (None: the rest) and the least a stage needs to be worth starting
SHARES = {1: 90, 2: 90, 3: 50, 4: None}
MINIMUM = {1: 20, 2: 30, 3: 20, 4: 45}
SMALL_SHARES = {1: None, 2: None, 3: None, 4: None}   # no caps: complete, however slow
SMALL_MINIMUM = {1: 2, 2: 2, 3: 2, 4: 3}
RESERVE_S = 5          # kept for the summary at the end
WATCHDOG_GRACE_S = 20  # the process ends this long after the budget whatever it is doing

#: stage 1 pass criteria (PSNR on [0, 1] after clamping, dB)
TOLERANCES = {
    "fp32_psnr_vs_cpu_min": 40.0,
    "fast_psnr_vs_cpu_min": 30.0,
    "fast_truth_delta_max": 0.5,
    "graphs_psnr_vs_eager_min": 40.0,
    "compile_psnr_vs_eager_min": 30.0,
}
#: --small: DeqIR variants run (benchmarks/deqir.py's names; all of them on the GPU)
SMALL_DEQIR = ("published", "window-5")
PEAK_TFLOPS = 800.0    # the limit: 0.28 s/image = 2.24 TFLOP × 100 / 800 TFLOP/s

NAMES = {1: "1_cuda_correctness.json", 2: "2_throughput.json", 3: "3_deqir_latency.json",
         4: "4_prior_training.json"}
SUMMARY = "gpu_run.json"
LOSS_PNG = "4_loss.png"
PRIOR_DIR = "prior"


def _module(name: str):
    """A sibling benchmark script as a module (benchmarks/ is not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def write_json(path: Path, obj) -> None:
    dio.atomic_write(path, json.dumps(obj, indent=1, default=str).encode())


def device_name(device) -> str:
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


class Stage:
    """Time keeping of one stage: ``left()`` seconds until its own deadline."""

    def __init__(self, run, number: int, budget: float):
        self.run, self.number, self.budget = run, number, budget
        self.t0 = time.monotonic()
        self.deadline = self.t0 + budget
        self.skipped: list[str] = []
        self.partial: dict = {}          # the results so far (kept if the stage fails)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def fits(self, seconds: float, what: str) -> bool:
        """True if ``seconds`` fit in the time left; else records ``what`` as skipped."""
        if seconds <= self.left():
            return True
        self.skipped.append(f"{what} (needs ~{seconds:.0f} s, {max(0.0, self.left()):.0f} s left)")
        print(f"  skipped: {self.skipped[-1]}", flush=True)
        return False


def photo(size: int, width: int | None = None) -> torch.Tensor:
    """(1, 3, size, width) in [-1, 1]: the Kodak crop of tests/data, resized bilinearly."""
    x = dio.read_image(IMAGE)
    width = width or size
    if tuple(x.shape[-2:]) != (size, width):
        x = F.interpolate(x, size=(size, width), mode="bilinear", align_corners=False)
    return x.clamp(-1, 1)


def psnr(a, b) -> float:
    return float(im.psnr_model(a.float().cpu().clamp(-1, 1), b.float().cpu().clamp(-1, 1)))


def rel_l2(a, b) -> float:
    a, b = a.float().cpu(), b.float().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


# ============================================================================= stage 1
def _restore(prior, method, op, y, x_T, steps, device, info=None, **options):
    """One restoration on ``device``; (output on the CPU, seconds). Noise from a CPU generator
    with seed 2: dmir draws on the generator's device and moves the numbers (dmir.rng), so every
    device gets the CPU run's noise. ``info``: a dict that gets the solver's NFE (and DeqIR's
    convergence)."""
    s = solvers.build(method, prior, op.to(device), steps=steps, **options)
    g = torch.Generator().manual_seed(2)
    sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = s.sample(y.to(device), x_T=x_T.to(device), generator=g)
    sync(device)
    if info is not None:
        info["nfe"] = s.nfe
        if getattr(s, "converged", None) is not None:
            info["converged"] = bool(s.converged)
    return out.float().cpu(), time.perf_counter() - t0


def stage_correctness(st: Stage) -> dict:
    run = st.run
    dev, small = run.device, run.small
    cuda = torch.device(dev).type == "cuda"
    tol = TOLERANCES
    if cuda:   # float32 means float32: no TF32 convolutions / matmuls in this stage
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    base = models.load(models.DEFAULT_MODEL)          # the shipped trained prior, float32, CPU
    size, steps, dcdp_k = (32, 12, 2) if small else (64, 20, 3)
    clean = photo(size)
    op = operators.build("sr_averagepooling", (3, size, size), scale=4)
    y = op.A(clean)
    x_T = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))

    def variants():
        """name → prior on the device: 'fp32' (plain float32) and 'fast' (the fast path's
        defaults). On the CPU (--small) only 'fast', as bf16 autocast: the arithmetic of the
        CUDA fast path (a float32 run would compare the CPU with itself)."""
        if not cuda:
            return {"fast": fast.accelerate(copy.deepcopy(base), dev, dtype="bfloat16")}
        return {"fp32": copy.deepcopy(base).to(dev),
                "fast": fast.accelerate(copy.deepcopy(base).to(dev), dev)}

    dev_priors = variants()
    res = {"model": f"{models.DEFAULT_MODEL} (shipped, trained)", "image": f"{IMAGE.name} at "
           f"{size}x{size}", "task": "sr_averagepooling x4, sigma_y 0", "steps": steps,
           "dcdp_K": dcdp_k, "tolerances": tol, "tf32": False if cuda else None,
           "fast_options": {k: (fast.options_of(p).describe() if fast.options_of(p) else
                                "float32, NCHW (plain)") for k, p in dev_priors.items()},
           "methods": [], "extras": {}}
    methods = solvers.names()
    for i, method in enumerate(methods):
        done = [r["seconds_total"] for r in res["methods"]]
        if done and not st.fits(1.5 * sum(done) / len(done), f"methods {', '.join(methods[i:])}"):
            break
        t_m = time.perf_counter()
        k = dcdp_k if method == "dcdp" else steps
        # DeqIR: the sliding window, which ends on the exact chain, so that both devices solve
        # to the same image (its default full Anderson stops after 15 evaluations, unconverged
        # on this prior at T = 20; stage 3 times the parallel solvers on the device)
        kw = {"window": 5} if method.startswith("deqir") else {}
        row = {"method": method, "steps": k, "options": kw, "seconds": {}, "psnr_vs_cpu": {},
               "rel_l2_vs_cpu": {},
               "psnr_truth": {}, "pass": {}, "solver": {}}
        try:
            ref, row["seconds"]["cpu"] = _restore(base, method, op, y, x_T, k, "cpu",
                                                  row["solver"].setdefault("cpu", {}), **kw)
            row["psnr_truth"]["cpu"] = psnr(ref, clean)
            for name, p in dev_priors.items():
                out, row["seconds"][name] = _restore(p, method, op, y, x_T, k, dev,
                                                     row["solver"].setdefault(name, {}), **kw)
                row["psnr_vs_cpu"][name] = psnr(out, ref)
                row["rel_l2_vs_cpu"][name] = rel_l2(out, ref)
                row["psnr_truth"][name] = psnr(out, clean)
                row["finite"] = bool(torch.isfinite(out).all()) and row.get("finite", True)
            d = row["psnr_truth"]["fast"] - row["psnr_truth"]["cpu"]
            row["fast_truth_delta_db"] = d
            if "fp32" in dev_priors:
                row["pass"]["fp32"] = row["psnr_vs_cpu"]["fp32"] >= tol["fp32_psnr_vs_cpu_min"]
            row["pass"]["fast"] = (row["psnr_vs_cpu"]["fast"] >= tol["fast_psnr_vs_cpu_min"]
                                   and abs(d) <= tol["fast_truth_delta_max"])
        except Exception as e:  # noqa: BLE001 - a method that fails on the device is a result
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            row["pass"] = {k: False for k in dev_priors}
        row["seconds_total"] = time.perf_counter() - t_m
        res["methods"].append(row)
        vs = "  ".join(f"{k} {v:5.1f}" for k, v in row["psnr_vs_cpu"].items())
        print(f"  {method:<14} vs CPU: {vs} dB;  truth {row['psnr_truth'].get('cpu', 0):5.2f}/"
              f"{row['psnr_truth'].get('fast', 0):5.2f} dB  "
              f"{'ok' if all(row['pass'].values()) else 'FAIL ' + row.get('error', '')}",
              flush=True)
        run.save_partial(st, res)

    # tiling: the prior's own size as tile on a 1.5x2 larger image
    if st.fits(3 * sum(r["seconds_total"] for r in res["methods"][:1]) + 1, "tiling"):
        H, W = size * 3 // 2, size * 2
        tclean = photo(H, W)
        top = operators.build("sr_averagepooling", (3, H, W), scale=4)
        ty = top.A(tclean)
        tx_T = torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(1))
        row = {"image": f"{H}x{W}", "tile": size, "overlap": size // 4, "method": "ddnm",
               "steps": steps, "psnr_vs_cpu": {}, "psnr_truth": {}, "seconds": {}}
        try:
            ref, row["seconds"]["cpu"] = _restore(TiledPrior(base, tile=size), "ddnm", top, ty,
                                                  tx_T, steps, "cpu")
            row["psnr_truth"]["cpu"] = psnr(ref, tclean)
            for name, p in dev_priors.items():
                out, row["seconds"][name] = _restore(TiledPrior(p, tile=size), "ddnm", top, ty,
                                                     tx_T, steps, dev)
                row["psnr_vs_cpu"][name] = psnr(out, ref)
                row["psnr_truth"][name] = psnr(out, tclean)
            row["pass"] = {k: row["psnr_vs_cpu"][k] >= tol[f"{k}_psnr_vs_cpu_min"]
                           for k in dev_priors}
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            row["pass"] = {k: False for k in dev_priors}
        res["extras"]["tiling"] = row
        vs = ", ".join(f"{k} {v:.1f} dB" for k, v in row["psnr_vs_cpu"].items())
        print(f"  tiling {H}x{W} (tile {size}) vs CPU: {vs} {row.get('error', '')}", flush=True)
        run.save_partial(st, res)

    # CUDA graphs and torch.compile, once each, against the eager fast path (ddnm)
    eager = None
    for name, kw, limit, need in (("cuda_graphs", {"cuda_graphs": True},
                                   tol["graphs_psnr_vs_eager_min"], 5),
                                  ("compile", {"compile": "default"},
                                   tol["compile_psnr_vs_eager_min"], 40)):
        if not cuda:
            res["extras"][name] = {"status": "skipped (needs CUDA" + (
                "; inductor on the CPU takes minutes under --small)" if name == "compile"
                else ")")}
            continue
        if not st.fits(need, name):
            res["extras"][name] = {"status": "skipped (time)"}
            continue
        row = {"method": "ddnm", "steps": steps}
        try:
            if eager is None:
                eager, row["eager_seconds"] = _restore(dev_priors["fast"], "ddnm", op, y, x_T,
                                                       steps, dev)
            p = fast.accelerate(copy.deepcopy(base).to(dev), dev, **kw)
            t0 = time.perf_counter()
            _restore(p, "ddnm", op, y, x_T, steps, dev)           # capture / compile
            row["first_run_seconds"] = time.perf_counter() - t0
            out, row["seconds"] = _restore(p, "ddnm", op, y, x_T, steps, dev)
            row["options"] = fast.options_of(p).describe()
            row["psnr_vs_eager"] = psnr(out, eager)
            row["rel_l2_vs_eager"] = rel_l2(out, eager)
            row["pass"] = row["psnr_vs_eager"] >= limit
            row["status"] = "ok"
            del p
        except Exception as e:  # noqa: BLE001
            row["status"] = "failed"
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            row["pass"] = False
        res["extras"][name] = row
        print(f"  {name}: {row['status']}"
              + (f", {row['psnr_vs_eager']:.1f} dB vs eager fast, first run "
                 f"{row['first_run_seconds']:.1f} s" if row["status"] == "ok" else
                 f" {row.get('error', '')}"), flush=True)
        run.save_partial(st, res)

    rows = res["methods"]
    failed = [r["method"] + "/" + k for r in rows for k, v in r["pass"].items() if not v]
    failed += [f"{k}" for k, r in res["extras"].items()
               if isinstance(r.get("pass"), bool) and not r["pass"]]
    failed += [f"tiling/{k}" for k, v in res["extras"].get("tiling", {}).get("pass", {}).items()
               if not v]
    res["summary"] = {
        "methods_run": len(rows), "methods_total": len(methods),
        "min_psnr_vs_cpu": {k: min((r["psnr_vs_cpu"][k] for r in rows if k in r["psnr_vs_cpu"]),
                                   default=None) for k in dev_priors},
        "max_fast_truth_delta_db": max((abs(r["fast_truth_delta_db"]) for r in rows
                                        if "fast_truth_delta_db" in r), default=None),
        "failed": failed, "all_pass": not failed and len(rows) == len(methods)}
    return res


def summary_correctness(r: dict) -> str:
    s = r["summary"]
    m = ", ".join(f"{k} {v:.1f} dB" for k, v in s["min_psnr_vs_cpu"].items() if v is not None)
    d = s["max_fast_truth_delta_db"]
    return (f"{s['methods_run']}/{s['methods_total']} methods; min PSNR vs CPU: {m}; max |Δ "
            f"truth| fast {d if d is None else round(d, 2)} dB; "
            + ("all pass" if s["all_pass"] else
               f"FAILED: {', '.join(s['failed']) or 'incomplete'}"))


# ============================================================================= stage 2
def stage_throughput(st: Stage) -> dict:
    run = st.run
    gt = _module("gpu_throughput")
    dev, small = run.device, run.small
    cuda = torch.device(dev).type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True          # as the reference's main.py
    key = "adm"
    cfg = gt.MODELS[key][2 if small else 1]
    size = cfg["image_size"]
    steps, warm = (4, 2) if small else (20, 3)
    batches = [1, 2] if small else [1, 2, 4, 8, 16, 32, 64]
    graph_batches = [1, 2, 4, 8]
    methods = ["ddnm", "ddnm-equs+"]
    variant = "fast"                                    # bf16 autocast + channels_last on CUDA
    net, cfg = gt.build_net(key, cfg, dev)
    flops = gt.flops_per_forward(key, cfg, size)
    flops256 = flops if not small else gt.flops_per_forward(key, gt.MODELS[key][1], 256)
    limit_s = flops * steps / (PEAK_TFLOPS * 1e12)
    res = {"config": gt.NAMES[key] + (" (small)" if small else ""), "size": size,
           "params": sum(p.numel() for p in net.parameters()), "weights": "random",
           "flops_per_forward": flops, "limit_s_per_image": limit_s, "runs": [],
           "reference": {}, "oom_at": {}}
    out = {"steps": steps, "task": "sr_bicubic x4", "peak_tflops": PEAK_TFLOPS, "small": small,
           "adm256_tflop_per_image_per_nfe": flops256 / 1e12,
           "limit_s_per_image_100_steps": flops256 * 100 / (PEAK_TFLOPS * 1e12),
           "models": {key: res}}
    op = operators.build("sr_bicubic", (3, size, size), scale=4).to(dev)
    print(f"  {res['config']}: {res['params'] / 1e6:.1f} M parameters, "
          f"{flops / 1e12:.3g} TFLOP/image/NFE; {steps} steps per timed run", flush=True)

    def sweep(method, variant, batch_list):
        prior = gt.variant_prior(key, net, cfg, variant, dev, "default")
        opts = fast.options_of(prior)
        last = None
        for b in batch_list:
            need = 2.2 * last if last else 5.0     # a doubled batch: about twice the time
            if not st.fits(need, f"{method} {variant} batch {b}+"):
                break
            t0 = time.perf_counter()
            try:
                row = gt.run_ours(prior, method, op, size, b, steps, dev, warm,
                                  check_sync=b == batch_list[0])
            except Exception as e:  # noqa: BLE001
                if not gt.is_oom(e):
                    raise
                res["oom_at"][f"{method}/{variant}"] = b
                print(f"  {method} {variant} batch {b}: out of memory", flush=True)
                break
            finally:
                free_memory(dev)
            last = time.perf_counter() - t0
            row.update(method=method, variant=variant,
                       options=opts.describe() if opts else "float32, NCHW (plain)")
            gt.add_rates(row, flops, PEAK_TFLOPS)
            row["net_share"] = min(1.0, row["net_s"] * row["nfe"] / row["seconds"])
            res["runs"].append(row)
            mem = f"{row['peak_mem_gib']:.1f} GiB" if row["peak_mem_gib"] is not None else "-"
            print(f"  {method:<11} {variant:<11} batch {b:>3}: "
                  f"{row['s_per_image'] * 100 / steps:7.3f}"
                  f" s/image/100 steps, {row['tflops']:6.1f} TFLOP/s "
                  f"({100 * row['frac_peak']:4.1f} % of {PEAK_TFLOPS:g}), {mem}", flush=True)
            run.save_partial(st, out)
        del prior
        free_memory(dev)

    def reference(method):
        if not st.fits(10 if not small else 1, f"reference loop {method}"):
            return
        ref = gt.reference_net(key, net, cfg, fp16=cuda)
        betas = models.linear_betas(1000).float().to(dev)
        rsteps = gt.reference_steps(steps, "quadratic" if method.endswith("+") else "uniform",
                                    "equs" in method)
        y, x_T = gt.problem(op, size, 1, dev, seed=1)
        gt.reference_restore(ref, betas, op, y, x_T, rsteps[:warm],
                             generator=gt.generator(dev, 1))
        _, dt = gt.timed(lambda: gt.reference_restore(ref, betas, op, y, x_T, rsteps,
                                                      generator=gt.generator(dev, 1)), dev)
        row = gt.add_rates({"batch": 1, "seconds": dt, "nfe": len(rsteps)}, flops, PEAK_TFLOPS)
        row["dtype"] = "float16 torso (use_fp16)" if cuda else "float32"
        res["reference"][method] = row
        print(f"  {method:<11} reference   batch   1: {row['s_per_image'] * 100 / steps:7.3f} "
              f"s/image/100 steps ({row['dtype']})", flush=True)
        del ref
        free_memory(dev)
        run.save_partial(st, out)

    for method in methods:
        sweep(method, variant, batches)
        reference(method)
    if cuda:
        for method in methods:
            sweep(method, "fast+graphs", graph_batches)
    if st.fits(15 if not small else 1, "bf16 vs fp32"):
        outs = {}
        for v in ("fp32", "bf16"):
            prior = gt.variant_prior(key, net, cfg, v, dev, "default")
            y, x_T = gt.problem(op, size, 1, dev, seed=1)
            s = solvers.build("ddnm", prior, op, steps=steps, eta=0.85)
            outs[v] = s.sample(y, x_T=x_T, generator=gt.generator(dev, 1)).float().cpu()
            del prior, s
            free_memory(dev)
        res["bf16_vs_fp32"] = {"ddnm": {
            "psnr_db": psnr(outs["bf16"], outs["fp32"]), "rel_l2": rel_l2(outs["bf16"],
                                                                          outs["fp32"]),
            "max_abs": float((outs["bf16"] - outs["fp32"]).abs().max())}}
    if cuda and res["runs"] and st.fits(20, "profile"):
        best = max(res["runs"], key=lambda r: r["images_per_s"])
        prior = gt.variant_prior(key, net, cfg, best["variant"], dev, "default")
        try:
            res["profile"] = gt.profile(prior, best["method"], op, size, best["batch"], dev)
            res["profile"]["variant"] = best["variant"]
        except Exception as e:  # noqa: BLE001
            res["profile"] = {"error": f"{type(e).__name__}: {e}"}
        del prior
    del net
    free_memory(dev)
    # the headline numbers
    summ = {}
    for method in methods:
        rs = [r for r in res["runs"] if r["method"] == method]
        if not rs:
            continue
        best = max(rs, key=lambda r: r["images_per_s"])
        ref = res["reference"].get(method)
        summ[method] = {
            "best_batch": best["batch"], "best_variant": best["variant"],
            "images_per_s": best["images_per_s"], "tflops": best["tflops"],
            "s_per_image_100_steps": best["s_per_image"] * 100 / steps,
            "fraction_of_limit": best["frac_peak"],
            "peak_mem_gib": best["peak_mem_gib"],
            "reference_s_per_image_100_steps": ref["s_per_image"] * 100 / steps if ref else None,
            "speedup_vs_reference": best["images_per_s"] / ref["images_per_s"] if ref else None,
            "loop_sync_free": next((r.get("loop_sync_free") for r in rs
                                    if "loop_sync_free" in r), None)}
    out["summary"] = summ
    return out


def summary_throughput(r: dict) -> str:
    parts = []
    for m, s in r["summary"].items():
        sp = f", {s['speedup_vs_reference']:.1f}x the reference" if s["speedup_vs_reference"] \
            else ""
        parts.append(f"{m}: {s['images_per_s']:.2f} images/s at batch {s['best_batch']} "
                     f"({s['s_per_image_100_steps']:.3f} s/image/100 steps, "
                     f"{100 * s['fraction_of_limit']:.1f} % of the limit){sp}")
    return "; ".join(parts) or "no runs"


# ============================================================================= stage 3
#: DeqIR variants in the order they are run (the most telling first; later ones are skipped
#: when the stage's time runs out): benchmarks/deqir.py's names, w = 10 for T > 20, else 5
DEQIR_ORDER = ("published", "window-{w}", "window-{w2}", "window-{w}-picard", "picard",
               "anderson", "joint")


def stage_deqir(st: Stage) -> dict:
    run = st.run
    dq = _module("deqir")
    gt = _module("gpu_throughput")
    from dmir.models.nets import adm
    from dmir.solvers.deqir import ConvergenceWarning

    dev, small = run.device, run.small
    cuda = torch.device(dev).type == "cuda"
    Ts = [6] if small else [25, 50]
    cap = 20 if small else 50
    chunk = None if small else 32      # images per network call: bounds the ADM's memory
    warnings.simplefilter("ignore", ConvergenceWarning)

    problems = []        # (name, prior on the fast path, clean, op, y, x_T)
    cfg = gt.MODELS["adm"][2 if small else 1]
    net, cfg = gt.build_net("adm", cfg, dev)
    for name, prior, size in (
            ("adm (small)" if small else "adm256",
             adm.prior(net, cfg, name=gt.NAMES["adm"] + " (random weights)"), cfg["image_size"]),
            (f"{models.DEFAULT_MODEL} (trained)", models.load(models.DEFAULT_MODEL).to(dev),
             32 if small else 256)):
        prior = fast.accelerate(prior, dev) if cuda else prior
        clean = photo(size).to(dev)
        op = operators.build("sr_averagepooling", (3, size, size), scale=4).to(dev)
        x_T = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(dev)
        problems.append((name, prior, clean, op, op.A(clean), x_T))
    del net

    def timed(fn):
        sync(dev)
        t0 = time.perf_counter()
        with torch.no_grad():
            o = fn()
        sync(dev)
        return o, time.perf_counter() - t0

    rows = []
    res = {"task": "sr_averagepooling x4, sigma_y 0", "nw": 0, "etw": 0.1, "cap": cap,
           "chunk": chunk,
           "options": {p[0]: (fast.options_of(p[1]).describe() if fast.options_of(p[1])
                              else "float32") for p in problems},
           "equal_output_db": 0.1, "latency_goal": 0.5, "rows": rows}
    for T in Ts:
        for pname, prior, clean, op, y, x_T in problems:
            if not st.fits(5 if not small else 0.5, f"{pname} T={T}"):
                continue
            s = solvers.build("deqir", prior, op, steps=T)
            timed(lambda: s.sequential(y, x_T=x_T))                       # warm-up
            timed(lambda: solvers.build("deqir", prior, op, steps=T, max_iter=1).sample(
                y, x_T=x_T.clone()))                                     # batched shapes
            seq, t_seq = timed(lambda: s.sequential(y, x_T=x_T))
            p_seq = psnr(seq, clean)
            rows.append(dict(prior=pname, T=T, method="sequential", evals=T, nfe=s.nfe,
                             err=0.0, dpsnr=0.0, converged=True, wall=t_seq, ratio=1.0))
            print(f"  {pname} T={T}: sequential {t_seq:.3f} s", flush=True)
            variants = dq.variants(T, cap)
            w = 10 if T > 20 else 5
            order = [n.format(w=w, w2=2 * w) for n in DEQIR_ORDER]
            last = t_seq
            for name in order:
                if name not in variants or (small and name not in SMALL_DEQIR):
                    continue
                if not st.fits(min(3 * last, 60), f"{pname} T={T} {name}"):
                    continue
                s = solvers.build("deqir", prior, op, steps=T, chunk=chunk, **variants[name])
                try:
                    o, dt = timed(lambda: s.sample(y, x_T=x_T.clone()))
                except Exception as e:  # noqa: BLE001 - e.g. out of memory: the next one
                    rows.append(dict(prior=pname, T=T, method=name,
                                     error=f"{type(e).__name__}: {str(e)[:200]}"))
                    print(f"  {pname} T={T}: {name}: {rows[-1]['error']}", flush=True)
                    free_memory(dev)
                    continue
                last = dt
                r = dict(prior=pname, T=T, method=name, evals=s.iterations, nfe=s.nfe,
                         err=float((o - seq).abs().max()), rel_l2=rel_l2(o, seq),
                         dpsnr=psnr(o, clean) - p_seq, converged=s.converged, wall=dt,
                         ratio=dt / t_seq, residual=s.residuals[-1] if s.residuals else None)
                r["equal_output"] = abs(r["dpsnr"]) <= res["equal_output_db"]
                rows.append(r)
                print(f"  {pname} T={T}: {name:<16} {dt:7.3f} s ({r['ratio']:.2f}x sequential),"
                      f" {r['evals']} evals, ΔPSNR {r['dpsnr']:+.3f} dB, max err {r['err']:.1e}",
                      flush=True)
                run.save_partial(st, res)
    del problems
    free_memory(dev)
    best = {}
    for r in rows:
        if r["method"] == "sequential" or not r.get("equal_output"):
            continue
        k = f"{r['prior']} T={r['T']}"
        if k not in best or r["wall"] < best[k]["wall"]:
            best[k] = {"method": r["method"], "wall": r["wall"], "ratio": r["ratio"],
                       "dpsnr": r["dpsnr"], "meets_goal": r["ratio"] <= res["latency_goal"]}
    res["summary"] = best
    return res


def summary_deqir(r: dict) -> str:
    return "; ".join(f"{k}: {b['method']} {b['ratio']:.2f}x sequential (ΔPSNR {b['dpsnr']:+.3f})"
                     for k, b in r["summary"].items()) or "no equal-output run"


# ============================================================================= stage 4
def train_config(recipe: dict, **kw):
    """A TrainConfig from ``recipe`` (+ kw); returns (config, keys TrainConfig does not have)."""
    from dmir.train import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    merged = {**recipe, **kw}
    return (TrainConfig(**{k: v for k, v in merged.items() if k in names}),
            sorted(set(merged) - names))


def export_prior(model_dir: Path, out: Path) -> dict:
    """The exported EMA model as bf16 safetensors + config.json in ``out``."""
    src = model_dir / "model.safetensors"
    sd = models.read_safetensors(src)
    out.mkdir(parents=True, exist_ok=True)
    models.write_safetensors({k: (v.to(torch.bfloat16) if v.is_floating_point() else v)
                              for k, v in sd.items()}, out / "model.safetensors",
                             metadata={"format": "ddpm", "storage": "bfloat16"})
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg.setdefault("training", {})["stored_as"] = "bfloat16"
    dio.atomic_write(out / "config.json", json.dumps(cfg, indent=1).encode())
    size = (out / "model.safetensors").stat().st_size
    return {"path": str(out), "bytes": size, "returnable": size <= 16 * 2 ** 20,
            "step": cfg.get("training", {}).get("step")}


def stage_train(st: Stage) -> dict:
    from dmir.train import train

    run = st.run
    dev, small = run.device, run.small
    cuda = torch.device(dev).type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True           # fixed shapes: autotune once
        torch.cuda.reset_peak_memory_stats(dev)
    recipe = SMALL_RECIPE if small else RECIPE
    work = run.work / "train"
    out_dir, state_dir = work / "out", work / "state"
    kw = dict(data=[str(GPU_DATA)], out_dir=str(out_dir), state_dir=str(state_dir), device=dev)
    cfg, ignored = train_config(recipe, steps=1, **kw)
    if ignored:
        print(f"  recipe keys unknown to TrainConfig (ignored): {', '.join(ignored)}", flush=True)
    res = {"recipe": recipe, "ignored_recipe_keys": ignored,
           "data": str(GPU_DATA.relative_to(ROOT)),
           "chunks": [], "status": "running"}
    run.train_out = out_dir
    marks = {}

    def log(msg):
        now = time.monotonic()
        if msg.startswith("training on"):
            marks["loop_start"] = now
            if "start_message" not in res:
                res["start_message"] = msg
                print(f"  {msg}", flush=True)
        elif msg.startswith("resuming from"):
            res.setdefault("resumed", msg)
        elif msg.startswith("done:"):
            marks["loop_end"] = now

    def chunk(target: int) -> dict:
        nonlocal cfg
        cfg, _ = train_config(recipe, steps=target, **kw)
        marks.clear()
        t0 = time.monotonic()
        train(cfg, progress=False, log=log)
        t1 = time.monotonic()
        loop = marks.get("loop_end", t1) - marks.get("loop_start", t0)
        c = {"to_step": target, "seconds": t1 - t0, "loop_seconds": loop,
             "overhead_seconds": (t1 - t0) - loop}
        res["chunks"].append(c)
        print(f"  trained to step {target}: {c['loop_seconds']:.1f} s of steps + "
              f"{c['overhead_seconds']:.1f} s loading/saving", flush=True)
        return c

    def current_step() -> int:
        p = out_dir / "model" / "config.json"
        return json.loads(p.read_text())["training"]["step"] if p.exists() else 0

    margin = 2 if small else 10 + 0.03 * st.left()
    step0 = current_step()
    warm_n, calib_n = (2, 2) if small else (30, 150)
    chunk(step0 + warm_n)                                    # cuDNN autotuning, allocations
    c = chunk(step0 + warm_n + calib_n)
    rate = c["loop_seconds"] / calib_n                       # seconds per step
    overhead = max(ch["overhead_seconds"] for ch in res["chunks"])
    n = int((st.left() - margin - overhead) / rate)
    if small:
        n = min(n, 6)
    if n > 0:
        chunk(current_step() + n)
    steps = current_step()
    hist = json.loads((out_dir / "loss.json").read_text()) if (out_dir / "loss.json").exists() \
        else []
    res.update({
        "status": "ok", "steps": steps, "steps_this_run": steps - step0,
        "seconds_per_step": rate, "crops_per_s": cfg.batch / rate,
        "params": models.num_parameters("ddpm", cfg.model_config()),
        "config": dataclasses.asdict(cfg), "loss": hist,
        "final_loss": hist[-1][1] if hist else None,
        "peak_mem_gib": torch.cuda.max_memory_allocated(dev) / 2 ** 30 if cuda else None})
    res["export"] = run.export_trained()
    return res


def summary_train(r: dict) -> str:
    e = r.get("export") or {}
    fl = r.get("final_loss")
    return (f"{r['steps_this_run']} steps ({r['steps']} in all) at "
            f"{r['seconds_per_step'] * 1e3:.0f}"
            f" ms/step ({r['crops_per_s']:.0f} crops/s), final loss "
            f"{fl if fl is None else round(fl, 4)}, {r['params']:,} parameters, weights "
            f"{e.get('bytes', 0) / 2 ** 20:.1f} MiB bf16")


# ============================================================================= the run
STAGES = {1: ("CUDA correctness", stage_correctness, summary_correctness),
          2: ("throughput", stage_throughput, summary_throughput),
          3: ("DeqIR latency", stage_deqir, summary_deqir),
          4: ("prior training", stage_train, summary_train)}


class Run:
    def __init__(self, a):
        self.t0 = time.monotonic()
        self.small, self.device, self.out, self.work = a.small, a.device, Path(a.out), Path(a.work)
        self.deadline = self.t0 + a.budget
        self.budget = a.budget
        self.stages = sorted(set(a.stages))
        self.shares, self.minimum = ((SMALL_SHARES, SMALL_MINIMUM) if a.small
                                     else (SHARES, MINIMUM))
        self.train_out: Path | None = None
        self.lock = threading.Lock()
        self.summary = {"device": device_name(a.device), "torch": torch.__version__,
                        "cuda": torch.version.cuda, "budget_s": a.budget, "small": a.small,
                        "argv": sys.argv[1:], "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                        "stages": {}}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def header(self, st: Stage) -> dict:
        return {"stage": st.number, "name": STAGES[st.number][0], "device": self.summary["device"],
                "torch": torch.__version__, "cuda": torch.version.cuda, "small": self.small,
                "budget_s": round(st.budget, 1)}

    def save_partial(self, st: Stage, res: dict) -> None:
        """The stage's JSON as it stands (status 'partial' until the stage ends)."""
        st.partial = res
        with self.lock:
            write_json(self.out / NAMES[st.number], {**self.header(st), "status": "partial",
                                                     "seconds": st.elapsed(),
                                                     "skipped": st.skipped, **res})

    def write_summary(self) -> None:
        with self.lock:
            self.summary["seconds"] = time.monotonic() - self.t0
            write_json(self.out / SUMMARY, self.summary)

    def export_trained(self) -> dict | None:
        """Copy the latest trained prior and loss curve into the output folder."""
        if self.train_out is None or not (self.train_out / "model" / "model.safetensors").exists():
            return None
        info = export_prior(self.train_out / "model", self.out / PRIOR_DIR)
        if (self.train_out / "loss.png").exists():
            shutil.copyfile(self.train_out / "loss.png", self.out / LOSS_PNG)
        return info

    def budget_for(self, i: int) -> float:
        later = sum(self.minimum[j] for j in self.stages if j > i)
        avail = self.left() - later - RESERVE_S
        share = self.shares[i]
        return avail if share is None else min(share, avail)

    def watchdog(self) -> threading.Timer:
        def fire():
            print(f"watchdog: budget {self.budget} s + {WATCHDOG_GRACE_S} s passed; ending now",
                  flush=True)
            try:
                cur = self.summary.get("current")
                if cur is not None:
                    self.summary["stages"][str(cur)] = {"status": "killed at the deadline"}
                if cur == 4:
                    self.summary["stages"]["4"]["export"] = self.export_trained()
                self.write_summary()
            finally:
                os._exit(3)
        t = threading.Timer(max(0.0, self.left() + WATCHDOG_GRACE_S), fire)
        t.daemon = True
        t.start()
        return t

    def go(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        dog = self.watchdog()
        t = time.monotonic()
        if torch.device(self.device).type == "cuda":     # context, cuBLAS/cuDNN handles
            x = torch.randn(8, 3, 64, 64, device=self.device)
            torch.nn.functional.conv2d(x, torch.randn(8, 3, 3, 3, device=self.device))
            (x.flatten(1) @ x.flatten(1).T).sum().item()
        self.summary["warmup_s"] = time.monotonic() - t
        print(f"gpu_run on {self.summary['device']} (torch {torch.__version__}, CUDA "
              f"{torch.version.cuda}); budget {self.budget} s; warm-up "
              f"{self.summary['warmup_s']:.1f} s; stages {self.stages}; out {self.out}",
              flush=True)
        self.write_summary()
        for i in self.stages:
            name, fn, summarize = STAGES[i]
            b = self.budget_for(i)
            st = Stage(self, i, max(0.0, b))
            entry = {"budget_s": round(b, 1)}
            if b < self.minimum[i]:
                entry.update(status="skipped", reason=f"{max(0.0, b):.0f} s left for it, "
                             f"needs {self.minimum[i]} s")
                self.summary["stages"][str(i)] = entry
                write_json(self.out / NAMES[i], {**self.header(st), **entry})
                print(f"\n== stage {i} ({name}): skipped ({entry['reason']})", flush=True)
                self.write_summary()
                continue
            print(f"\n== stage {i} ({name}): {b:.0f} s", flush=True)
            self.summary["current"] = i
            cpu0 = time.process_time()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = fn(st)
                status = "ok" if not st.skipped else "ok (parts skipped)"
                line = summarize(res)
            except Exception as e:  # noqa: BLE001 - the next stages still run
                status, line = "failed", f"{type(e).__name__}: {e}"
                res = {**st.partial, "error": line,
                       "traceback": traceback.format_exc()[-4000:]}
                print(traceback.format_exc()[-2000:], flush=True)
                if i == 4:      # keep what was trained up to the last save
                    try:
                        res["export"] = self.export_trained()
                    except Exception as e2:  # noqa: BLE001
                        res["export"] = f"failed: {e2}"
            entry.update(status=status, seconds=round(st.elapsed(), 1),
                         cpu_seconds=round(time.process_time() - cpu0, 1), summary=line)
            if st.skipped:
                entry["skipped"] = st.skipped
            with self.lock:
                write_json(self.out / NAMES[i], {**self.header(st), "status": status,
                                                 "seconds": st.elapsed(),
                                                 "skipped": st.skipped, **res})
            self.summary["stages"][str(i)] = entry
            self.summary.pop("current", None)
            self.write_summary()
            print(f"== stage {i} {status} in {st.elapsed():.1f} s: {line}", flush=True)
            free_memory(self.device)
            if torch.device(self.device).type == "cuda":   # PyTorch's defaults again
                torch.backends.cudnn.allow_tf32 = True
                torch.backends.cuda.matmul.allow_tf32 = False
                torch.backends.cudnn.benchmark = False
        dog.cancel()
        self.write_summary()
        files = sorted(str(p.relative_to(self.out)) for p in self.out.rglob("*") if p.is_file())
        print(f"\ndone in {time.monotonic() - self.t0:.1f} s; {len(files)} files in {self.out}: "
              f"{', '.join(files)}", flush=True)
        return self.summary


#: --small's default budget: its 47 CPU seconds complete even at 1/30 of a CPU
SMALL_BUDGET_S = 1800.0
#: the longest --budget accepted (a device command runs at most 600 s; a day is surely a typo)
MAX_BUDGET_S = 86400.0


def failures(summary: dict) -> list[str]:
    """The stages that failed, or that report a failure in their summary line (stage 1's
    ``FAILED: incomplete``): the run's exit status is non-zero when there are any."""
    out = []
    for i, e in sorted(summary.get("stages", {}).items()):
        if e.get("status") == "failed" or "FAILED" in str(e.get("summary", "")):
            out.append(f"stage {i}: {e.get('summary') or e.get('status')}")
    return out


def exit_status(summary: dict) -> int:
    """0 when every stage that ran passed; 1 (after one line on stderr per failure) otherwise."""
    bad = failures(summary)
    for line in bad:
        print(f"gpu_run: FAILED {line}", file=sys.stderr, flush=True)
    return 1 if bad else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or str(HERE / "results" / "gpu_run"),
                    help="output folder (default: $OUT, else benchmarks/results/gpu_run)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole run, CUDA warm-up included (default 540; "
                    f"{SMALL_BUDGET_S:.0f} with --small)")
    ap.add_argument("--small", action="store_true",
                    help="the CPU with tiny models and few steps (< 1 min): proves it runs")
    ap.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3, 4], choices=[1, 2, 3, 4])
    ap.add_argument("--device", default=None, help="default: cuda if available (cpu: --small)")
    ap.add_argument("--work", default=None,
                    help="scratch folder for the training state (default: /tmp/dmir_gpu_run, "
                    "--small: <out>/../gpu_run_work); training resumes from a state there")
    a = ap.parse_args(argv)
    if a.budget is None:
        a.budget = SMALL_BUDGET_S if a.small else 540.0
    if not (math.isfinite(a.budget) and 0 < a.budget <= MAX_BUDGET_S):
        ap.error(f"--budget must be a number of seconds in (0, {MAX_BUDGET_S}], got {a.budget}")
    if a.device is None:
        a.device = "cpu" if a.small or not torch.cuda.is_available() else "cuda"
    if torch.device(a.device).type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device here; use --small on the CPU")
    if not a.small and torch.device(a.device).type != "cuda":
        ap.error("the full-size run needs a GPU (--device cuda); use --small on the CPU")
    if a.work is None:
        a.work = (str(Path(a.out).resolve().parent / "gpu_run_work") if a.small
                  else os.path.join("/tmp", "dmir_gpu_run"))
    if Path(a.work).resolve() == Path(a.out).resolve() or \
            Path(a.out).resolve() in Path(a.work).resolve().parents:
        ap.error("--work must not be inside --out (the device returns at most 8 files)")
    if torch.device(a.device).type == "cuda":
        a.device = f"cuda:{torch.cuda.current_device()}"
    return Run(a).go()


if __name__ == "__main__":
    sys.exit(exit_status(main()))
