"""GPU throughput of DDNM / DDNM-EquS+ against the physical limit and the reference loop.

Setting (issue 9): the full-size ImageNet-256 ADM (``adm-imagenet256-uncond``, 552.8 M
parameters) and the CelebA-HQ DDPM (``ddpm-celebahq256``, 113.7 M), random weights built on the
device (time does not depend on their values; ``--adm-weights/--ddpm-weights PATH`` load real
checkpoints instead), ×4 bicubic super-resolution (DDNM protocol) of a 256×256 image, σ_y = 0,
100 steps, η = 0.85.

For each model, method and fast-path variant, batch sizes 1, 2, …, 64 (a sweep stops at the first
out-of-memory batch, recorded as such):

* s/image, images/s — one timed ``solver.sample`` after a warm-up run at the same batch shape;
* TFLOP/s — FLOPs of one network evaluation (counted once per model with
  :class:`torch.utils.flop_counter.FlopCounterMode` on the meta device) × NFE × batch / time,
  and its fraction of ``--peak-tflops`` (default 800: the bf16 matrix rate measured on an
  H100, the issue's number); the limit in s/image is FLOPs × NFE / peak;
* ``net%`` — the share of the time spent in the bare network (NFE × timed forward passes);
* peak memory — ``torch.cuda.max_memory_allocated``.

Variants: ``fp32`` (our batched, device-resident loop without the fast path), ``fast`` (the
defaults of :mod:`dmir.models.fast` for the device: bf16 autocast + channels_last on CUDA),
``fast-nchw`` (without channels_last), ``fast+graphs`` (+ CUDA graphs), ``fast+compile``
(+ torch.compile, ``--compile-mode``), ``bf16`` / ``fp16`` (autocast in that dtype + channels_last).

In the same run the **reference loop** is re-created faithfully (:func:`reference_restore`: the
DDNM code base's ``ddnm_diffusion``, which the EquS code extends with its flips): batch 1, the
ADM with the reference's ``use_fp16`` torso (float16 convolutions; the DDPM UNet has no fp16 mode
in its code base and runs in float32), timesteps built on the host and ᾱ recomputed from β at
every step, the state copied to the host and back at every step (``xs.append(x.to('cpu'))``,
``xs[-1].to('cuda')``). speedup = our best images/s ÷ the reference's.

Also: the bf16 path (autocast + channels_last) against the fp32 path, same seed, batch 1 — PSNR
on [0, 1] and relative L2 error (random weights do not restore images: their outputs reach
±hundreds, so the PSNR after clamping says little; pass real checkpoints for that); a check
that the sampling loop does not synchronise with the host (CUDA sync debug mode "error" around
the loop); and with ``--profile`` the top kernels by GPU time
(torch.profiler) at the best batch size, grouped into matrix / attention / normalisation /
other. Prints tables; writes benchmarks/results/gpu_throughput.json (``--small``:
gpu_throughput_small.json).

    python benchmarks/gpu_throughput.py --device cuda [--batches 1 2 4 8 16 32 64]
        [--models adm ddpm] [--methods ddnm ddnm-equs+] [--variants fast fast+graphs]
        [--steps 100] [--peak-tflops 800] [--profile] [--no-reference]
    python benchmarks/gpu_throughput.py --device cpu --small     # tiny configs, proves it runs
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dmir import io as dio
from dmir import metrics, operators, solvers
from dmir.models import adm, ddpm_unet, fast
from dmir.models.base import linear_betas
from dmir.solvers.schedules import make_plan

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
IMAGE = HERE.parent / "tests" / "data" / "kodim05_crop64.png"
ISSUE_TFLOP_ADM = 2.24          # the issue's FLOPs per image per network evaluation (ADM-256)

#: model key → (module, full config, small config for --small)
MODELS = {
    "adm": (adm, dict(adm.CONFIGS["adm-imagenet256-uncond"], use_fp16=False),
            dict(adm.CONFIGS["adm-imagenet256-uncond"], image_size=64, num_channels=32,
                 channel_mult="1,2,2", num_res_blocks=1, attention_resolutions="16,8",
                 num_head_channels=32, use_fp16=False)),
    "ddpm": (ddpm_unet, dict(ddpm_unet.CONFIGS["ddpm-celebahq256"]),
             dict(ddpm_unet.CONFIGS["ddpm-celebahq256"], ch=32, ch_mult=[1, 2, 2],
                  num_res_blocks=1, attn_resolutions=[16], image_size=64)),
}
NAMES = {"adm": "adm-imagenet256-uncond", "ddpm": "ddpm-celebahq256"}


# ----------------------------------------------------------------------------- the models
def build_net(key: str, cfg: dict, device, weights: str | None = None, seed: int = 0):
    """(network in float32 on ``device``, its config): random weights, or a checkpoint."""
    mod = MODELS[key][0]
    if weights:
        from dmir import models
        prior = models.load(weights, format=mod.FORMAT, config=NAMES[key], device=device)
        return prior.net.eval(), prior.info["config"]
    torch.manual_seed(seed)
    with torch.device(device):
        net = mod.build(cfg)
    return net.eval(), cfg


def make_prior(key: str, net, cfg: dict):
    mod = MODELS[key][0]
    return mod.prior(net, cfg, name=f"{NAMES[key]} (benchmark)")


def reference_net(key: str, net, cfg: dict, fp16: bool = True):
    """The network as the reference code runs it: ADM with ``use_fp16`` (float16 torso
    convolutions, the rest float32), the DDPM UNet in float32 (its code has no fp16 mode).
    ``fp16=False``: the ADM in float32 too (CPU runs, where float16 convolutions are emulated)."""
    if key != "adm" or not fp16:
        return copy.deepcopy(net)
    ref_cfg = dict(cfg, use_fp16=True)
    dev = next(net.parameters()).device
    with torch.device(dev):
        ref = adm.build(ref_cfg)
    ref.load_state_dict(net.state_dict())     # copies cast to each parameter's dtype
    return ref.eval()


def flops_per_forward(key: str, cfg: dict, size: int) -> int:
    """FLOPs of one network evaluation of one image (counted on the meta device)."""
    from torch.utils.flop_counter import FlopCounterMode
    mod = MODELS[key][0]
    with torch.device("meta"):
        net = mod.build(dict(cfg, use_fp16=False) if key == "adm" else cfg)
        x = torch.zeros(1, 3, size, size)
        t = torch.zeros(1)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(x, t)
    return int(fc.get_total_flops())


# ----------------------------------------------------------------------------- the reference
def reference_steps(steps: int, schedule: str, equs: bool):
    """(t, t_next, flip) per network evaluation: the reference's timesteps and EquS flips
    (flip on even schedule indices k; the same plan as :mod:`dmir.solvers.schedules`)."""
    plan = make_plan(steps, 1000, schedule)
    return [(plan.timestep(i), plan.timestep(j), equs and i % 2 == 0)
            for i, j in plan.pairs if j < i]


def reference_restore(net, betas, op, y, x_T, steps, eta=0.85, generator=None):
    """A faithful re-creation of the DDNM reference loop (``ddnm_diffusion`` in
    wyhuai/DDNM ``functions/svd_ddnm.py``; EquS adds the flip), noise-free case, no time travel.

    What it keeps from the reference, on purpose (it is the timing baseline): timestep tensors
    built on the host and copied to the device at every step; ᾱ recomputed from the float32 β
    (concatenate, cumprod, index_select) twice per step; the state copied to the host after
    every step and back before the next (``xs.append(x.to('cpu'))``, ``xs[-1].to(device)``),
    x̂0 too; the operator applied as A then A⁺ (Eq. 13) and the re-noising with c1, c2. The
    network is called directly, ``net(x, t)``. Noise is drawn from ``generator`` (the reference
    uses ``randn_like``: the same draw, seeded) so that the result can be compared with dmir.

    Args:
        net: ``net(x, t)`` → ε (6 channels for learned σ: the first 3 are used).
        betas: (T,) float32 β on the device. op: dmir operator. y: (n, *y_shape) measurement.
        x_T: (n, C, H, W) start on the device. steps: :func:`reference_steps`.
    Returns: the restored x (n, C, H, W) on the host, as the reference returns ``xs[-1]``.
    """
    def compute_alpha(beta, t):
        beta = torch.cat([torch.zeros(1).to(beta.device), beta], dim=0)
        return (1 - beta).cumprod(dim=0).index_select(0, t + 1).view(-1, 1, 1, 1)

    device = x_T.device
    n = x_T.size(0)
    x0_preds, xs = [], [x_T]
    with torch.no_grad():
        for i, j, flip in steps:
            t = (torch.ones(n) * i).to(device)
            next_t = (torch.ones(n) * j).to(device)
            at = compute_alpha(betas, t.long())
            at_next = compute_alpha(betas, next_t.long())
            xt = xs[-1].to(device)
            x_in = torch.flip(xt, [3]) if flip else xt       # EquS: the flipped frame
            et = net(x_in, t)
            if et.size(1) == 6:
                et = et[:, :3]
            x0_t = (x_in - et * (1 - at).sqrt()) / at.sqrt()                    # Eq. 12
            if flip:
                x0_t = torch.flip(x0_t, [3])
            x0_t_hat = x0_t - op.pinv(op.A(x0_t) - y)                           # Eq. 13
            c1 = (1 - at_next).sqrt() * eta
            c2 = (1 - at_next).sqrt() * ((1 - eta ** 2) ** 0.5)
            z = torch.randn(x0_t.shape, generator=generator, device=device, dtype=x0_t.dtype)
            xt_next = at_next.sqrt() * x0_t_hat + c1 * z + c2 * et
            x0_preds.append(x0_t.to("cpu"))
            xs.append(xt_next.to("cpu"))
    return xs[-1]


# ----------------------------------------------------------------------------- timing
def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def problem(op, size: int, batch: int, device, seed: int = 0):
    """(y, x_T) for ``batch`` copies of the test photo (bilinear to size×size)."""
    x = dio.read_image(IMAGE)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.to(device).expand(batch, -1, -1, -1).contiguous()
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(batch, 3, size, size, generator=g).to(device)
    return op.A(x), x_T


def generator(device, seed=0):
    return torch.Generator(device=device).manual_seed(seed)


VARIANTS = ("fp32", "fast", "fast-nchw", "fast+graphs", "fast+compile", "bf16", "fp16")


def variant_prior(key, net, cfg, variant, device, compile_mode):
    """A prior with its own copy of ``net``, put on the fast path as ``variant`` says."""
    prior = make_prior(key, copy.deepcopy(net), cfg)
    if variant == "fp32":
        return prior
    kw = {}
    if variant == "fast-nchw":
        kw["channels_last"] = False
    elif variant == "fast+graphs":
        kw["cuda_graphs"] = True
    elif variant == "fast+compile":
        kw["compile"] = compile_mode
    elif variant in ("bf16", "fp16"):
        kw["dtype"] = {"bf16": "bfloat16", "fp16": "float16"}[variant]
    return fast.accelerate(prior, device, **kw)


def net_forward_s(prior, batch, size, device, reps=3):
    """Seconds per network evaluation of a batch (after one warm-up call)."""
    x = torch.randn(batch, 3, size, size, device=device)
    with torch.no_grad():
        prior.eps(x, 500)
        _, dt = timed(lambda: [prior.eps(x, 500) for _ in range(reps)], device)
    return dt / reps


def loop_syncs_ok(solver, y, x_T, device) -> bool | None:
    """True if the sampling loop runs with CUDA sync debug mode 'error' (no host sync);
    None off CUDA."""
    if torch.device(device).type != "cuda":
        return None
    g = torch.Generator().manual_seed(1)      # a CPU generator, as dmir.pipeline draws from
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.no_grad():
            solver._loop(y, x_T, g, None)
        ok = True
    except RuntimeError as e:
        print(f"  host sync in the loop: {str(e).splitlines()[0]}", file=sys.stderr)
        ok = False
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return ok


def is_oom(e: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(e, oom) or "out of memory" in str(e).lower()


def run_ours(prior, method, op, size, batch, steps, device, warmup_steps, check_sync=False):
    """One timed restoration of a batch, after a warm-up run of ``warmup_steps`` at the same
    shape (compilation, graph capture, cuDNN autotuning); returns a row dict, raises on OOM."""
    y, x_T = problem(op, size, batch, device)
    warm = solvers.build(method, prior, op, steps=warmup_steps, eta=0.85)
    warm.sample(y, x_T=x_T, generator=generator(device))
    solver = solvers.build(method, prior, op, steps=steps, eta=0.85)
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    x, dt = timed(lambda: solver.sample(y, x_T=x_T, generator=generator(device)), device)
    peak = (torch.cuda.max_memory_allocated(device) / 2 ** 30
            if torch.device(device).type == "cuda" else None)
    row = {"batch": batch, "seconds": dt, "nfe": solver.nfe, "peak_mem_gib": peak,
           "finite": bool(torch.isfinite(x).all()),
           "net_s": net_forward_s(prior, batch, size, device)}
    if check_sync:
        row["loop_sync_free"] = loop_syncs_ok(warm, y, x_T, device)
    return row


def add_rates(row, flops, peak_tflops):
    b, dt, nfe = row["batch"], row["seconds"], row["nfe"]
    row["s_per_image"] = dt / b
    row["images_per_s"] = b / dt
    row["tflops"] = flops * nfe * b / dt / 1e12
    row["frac_peak"] = row["tflops"] / peak_tflops
    return row


# ----------------------------------------------------------------------------- profile
def kernel_class(name: str) -> str:
    n = name.lower()
    if any(k in n for k in ("flash", "fmha", "attention", "softmax")):
        return "attention"
    if any(k in n for k in ("gemm", "conv", "xmma", "cutlass", "sm80", "sm90", "wgmma",
                            "implicit", "cudnn", "winograd", "mkldnn", "addmm", "bmm",
                            "linear", "matmul")):
        return "matrix (conv/gemm)"
    if any(k in n for k in ("group_norm", "groupnorm", "welford", "rowwisemoments",
                            "native_group")):
        return "normalisation"
    if any(k in n for k in ("copy", "contiguous", "nchw", "nhwc", "transpose", "permute")):
        return "layout/copy"
    return "element-wise/other"


def profile(prior, method, op, size, batch, device, steps=3, top=15):
    """Top kernels by device time over ``steps`` sampler steps (torch.profiler)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile
    y, x_T = problem(op, size, batch, device)
    solver = solvers.build(method, prior, op, steps=steps, eta=0.85)
    solver.sample(y, x_T=x_T, generator=generator(device))      # warm
    cuda = torch.device(device).type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with tprofile(activities=acts) as prof:
        solver.sample(y, x_T=x_T, generator=generator(device))
        sync(device)
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    if cuda:   # device kernels only: the CPU-side aten ops also carry device time
        events = [e for e in events if getattr(e, "device_type", None) is not None
                  and "CUDA" in str(e.device_type)] or events
    else:      # leaf aten ops
        events = [e for e in events if e.key.startswith("aten::")]
    total = sum(getattr(e, attr) for e in events) or 1.0
    rows = sorted(({"kernel": e.key[:90], "ms": getattr(e, attr) / 1e3,
                    "share": getattr(e, attr) / total, "calls": e.count,
                    "class": kernel_class(e.key)} for e in events),
                  key=lambda r: -r["ms"])
    classes = {}
    for r in rows:
        classes[r["class"]] = classes.get(r["class"], 0.0) + r["share"]
    return {"batch": batch, "steps": steps, "time_kind": attr, "top": rows[:top],
            "classes": dict(sorted(classes.items(), key=lambda kv: -kv[1]))}


# ----------------------------------------------------------------------------- main
def psnr_between(a, b) -> float:
    return float(metrics.psnr_model(a.float().cpu(), b.float().cpu()))


def bench_model(key, a, device, results):
    mod, full_cfg, small_cfg = MODELS[key]
    cfg = small_cfg if a.small else full_cfg
    size = cfg["image_size"]
    weights = getattr(a, f"{key}_weights")
    net, cfg = build_net(key, cfg, device, weights)
    flops = flops_per_forward(key, cfg, size)
    limit_s = flops * a.steps / (a.peak_tflops * 1e12)     # s/image at the peak rate (uniform)
    res = {"config": NAMES[key] + (" (small)" if a.small else ""), "size": size,
           "params": sum(p.numel() for p in net.parameters()),
           "weights": weights or "random", "flops_per_forward": flops,
           "limit_s_per_image": limit_s, "runs": [], "reference": {}, "oom_at": {}}
    print(f"\n{res['config']}: {res['params'] / 1e6:.1f} M parameters, "
          f"{flops / 1e12:.4g} TFLOP per image per network evaluation at {size}x{size}; "
          f"limit {limit_s:.3g} s/image for {a.steps} evaluations at {a.peak_tflops:g} TFLOP/s",
          file=sys.stderr)
    op = operators.build(a.task, (3, size, size), scale=a.scale).to(device)
    for variant in a.variants:
        try:
            prior = variant_prior(key, net, cfg, variant, device, a.compile_mode)
        except Exception as e:  # noqa: BLE001 - e.g. cuda_graphs on CPU: skip the variant
            print(f"  {variant}: skipped ({e})", file=sys.stderr)
            continue
        opts = fast.options_of(prior)
        for method in a.methods:
            for batch in a.batches:
                try:
                    row = run_ours(prior, method, op, size, batch, a.steps, device,
                                   a.warmup_steps, check_sync=batch == a.batches[0])
                except Exception as e:  # noqa: BLE001
                    if not is_oom(e):
                        raise
                    res["oom_at"][f"{method}/{variant}"] = batch
                    print(f"  {method} {variant} batch {batch}: out of memory; sweep stopped",
                          file=sys.stderr)
                    break
                finally:
                    if torch.device(device).type == "cuda":
                        torch.cuda.empty_cache()
                row.update(method=method, variant=variant,
                           options=opts.describe() if opts else "float32, NCHW (plain)")
                add_rates(row, flops, a.peak_tflops)
                row["net_share"] = min(1.0, row["net_s"] * row["nfe"] / row["seconds"])
                res["runs"].append(row)
                print(f"  {method:<11} {variant:<12} batch {batch:>3}: {row['s_per_image']:.3f} "
                      f"s/image, {row['tflops']:.3g} TFLOP/s ({100 * row['frac_peak']:.3g} %)",
                      file=sys.stderr)
        del prior
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    fp32_out = {}
    for method in a.methods:
        # bf16 (the fast path's dtype on CUDA) vs fp32: the same seed, batch 1, full steps
        outs = {}
        for variant in ("fp32", "bf16"):
            prior = variant_prior(key, net, cfg, variant, device, a.compile_mode)
            y, x_T = problem(op, size, 1, device, seed=1)
            s = solvers.build(method, prior, op, steps=a.steps, eta=0.85)
            outs[variant] = s.sample(y, x_T=x_T, generator=generator(device, 1))
            del prior, s
        fp32_out[method] = outs["fp32"]
        res.setdefault("bf16_vs_fp32", {})[method] = {
            "bf16": fast.resolve_options(device, dtype="bfloat16").describe(),
            "psnr_db": psnr_between(outs["bf16"], outs["fp32"]),
            "max_abs": float((outs["bf16"] - outs["fp32"]).abs().max()),
            "rel_l2": float((outs["bf16"] - outs["fp32"]).norm() / outs["fp32"].norm())}
        if a.reference:
            ref_fp16 = a.ref_dtype == "float16" or (a.ref_dtype == "auto" and
                                                    torch.device(device).type == "cuda")
            ref = reference_net(key, net, cfg, fp16=ref_fp16)
            betas = linear_betas(1000).float().to(device)
            equs = "equs" in method
            steps = reference_steps(a.steps, "quadratic" if method.endswith("+") else "uniform",
                                    equs)
            y, x_T = problem(op, size, 1, device, seed=1)
            reference_restore(ref, betas, op, y, x_T, steps[:a.warmup_steps],
                              generator=generator(device, 1))                 # warm-up
            x_ref, dt = timed(lambda: reference_restore(
                ref, betas, op, y, x_T, steps, generator=generator(device, 1)), device)
            row = add_rates({"batch": 1, "seconds": dt, "nfe": len(steps)}, flops,
                            a.peak_tflops)
            row["dtype"] = "float16 torso (use_fp16)" if key == "adm" and ref_fp16 else "float32"
            # the re-creation is a timing baseline; with the reference's own precision it
            # restores nearly what our fp32 path restores from the same x_T and noise
            ours = fp32_out[method].float().cpu()
            row["psnr_vs_ours_fp32_db"] = psnr_between(x_ref, ours)
            row["rel_l2_vs_ours_fp32"] = float((x_ref.float() - ours).norm() / ours.norm())
            res["reference"][method] = row
            print(f"  {method:<11} reference    batch   1: {row['s_per_image']:.3f} s/image "
                  f"(vs our fp32 output: rel. L2 {row['rel_l2_vs_ours_fp32']:.1e})",
                  file=sys.stderr)
            del ref
    if a.profile:
        best = max(res["runs"], key=lambda r: r["images_per_s"])
        prior = variant_prior(key, net, cfg, best["variant"], device, a.compile_mode)
        res["profile"] = profile(prior, best["method"], op, size, best["batch"], device)
        res["profile"]["variant"] = best["variant"]
        del prior
    results["models"][key] = res
    del net
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def print_tables(results, peak):
    print(f"\nphysical limit: {peak:g} TFLOP/s (bf16 matrix rate); times for "
          f"{results['steps']} steps, images/s = batch / seconds")
    print("\n| model | method | variant | batch | s/image | images/s | TFLOP/s | % of limit "
          "| net % | peak mem | speedup vs ref |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, m in results["models"].items():
        for r in m["runs"]:
            ref = m["reference"].get(r["method"])
            sp = f"{r['images_per_s'] / ref['images_per_s']:.1f}×" if ref else "–"
            mem = f"{r['peak_mem_gib']:.1f} GiB" if r["peak_mem_gib"] is not None else "–"
            print(f"| {m['config']} | {r['method']} | {r['variant']} | {r['batch']} | "
                  f"{r['s_per_image']:.3f} | {r['images_per_s']:.2f} | {r['tflops']:.3g} | "
                  f"{100 * r['frac_peak']:.3g} | {100 * r['net_share']:.0f} | {mem} | {sp} |")
        for method, r in m["reference"].items():
            print(f"| {m['config']} | {method} | reference ({r['dtype']}) | 1 | "
                  f"{r['s_per_image']:.3f} | {r['images_per_s']:.2f} | {r['tflops']:.3g} | "
                  f"{100 * r['frac_peak']:.3g} | – | – | 1.0× |")
        for k, b in m["oom_at"].items():
            print(f"| {m['config']} | {k.replace('/', ' | ')} | {b} | out of memory |||||||")
    print("\n| model | FLOP/image/NFE | limit s/image | best s/image (batch, variant) | "
          "% of limit | reference s/image | speedup | bf16 vs fp32 (PSNR, rel. L2) | "
          "loop host-sync free |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, m in results["models"].items():
        for method in dict.fromkeys(r["method"] for r in m["runs"]):
            rs = [r for r in m["runs"] if r["method"] == method]
            best = max(rs, key=lambda r: r["images_per_s"])
            ref = m["reference"].get(method)
            cmp = m.get("bf16_vs_fp32", {}).get(method, {})
            psnr = cmp.get("psnr_db")
            sync_free = {r.get("loop_sync_free") for r in rs} - {None}
            cells = [f"{m['config']} {method}", f"{m['flops_per_forward'] / 1e12:.4g} T",
                     f"{m['limit_s_per_image']:.3g}",
                     f"{best['s_per_image']:.3f} ({best['batch']}, {best['variant']})",
                     f"{100 * best['frac_peak']:.3g}",
                     f"{ref['s_per_image']:.3f}" if ref else "–",
                     f"{ref['s_per_image'] / best['s_per_image']:.1f}×" if ref else "–",
                     f"{psnr:.1f} dB, {cmp['rel_l2']:.1e}" if psnr is not None else "–",
                     str(all(sync_free)) if sync_free else "n/a (not CUDA)"]
            print("| " + " | ".join(cells) + " |")
    for key, m in results["models"].items():
        if "profile" in m:
            p = m["profile"]
            print(f"\nprofile {m['config']} ({p['variant']}, batch {p['batch']}, "
                  f"{p['steps']} steps): " + ", ".join(f"{k} {100 * v:.0f} %"
                                                       for k, v in p["classes"].items()))
            print("| kernel | ms | share | calls | class |\n|---|---:|---:|---:|---|")
            for r in p["top"]:
                print(f"| `{r['kernel']}` | {r['ms']:.1f} | {100 * r['share']:.1f} % | "
                      f"{r['calls']} | {r['class']} |")


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--small", action="store_true",
                    help="tiny configs (64x64, 1-2 levels), batch 1-2, 4 steps: proves it runs")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--methods", nargs="+", default=["ddnm", "ddnm-equs+"])
    ap.add_argument("--variants", nargs="+", choices=VARIANTS)
    ap.add_argument("--batches", nargs="+", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--warmup-steps", type=int, default=3)
    ap.add_argument("--task", default="sr_bicubic")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--peak-tflops", type=float, default=800.0,
                    help="the physical limit in TFLOP/s (default 800: H100 bf16, the issue's)")
    ap.add_argument("--compile-mode", default="default", choices=fast.COMPILE_MODES)
    ap.add_argument("--no-reference", dest="reference", action="store_false")
    ap.add_argument("--ref-dtype", default="auto", choices=["auto", "float16", "float32"],
                    help="reference ADM precision: auto = its use_fp16 torso on CUDA, float32 "
                    "on CPU (float16 convolutions are emulated there, ~50x slower)")
    ap.add_argument("--profile", action="store_true", help="top kernels at the best batch")
    ap.add_argument("--adm-weights", metavar="PATH", help="a real ADM checkpoint instead")
    ap.add_argument("--ddpm-weights", metavar="PATH", help="a real DDPM checkpoint instead")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    cuda = torch.device(a.device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device here; use --device cpu --small")
    a.batches = a.batches or ([1, 2] if a.small else [1, 2, 4, 8, 16, 32, 64])
    a.steps = a.steps or (4 if a.small else 100)
    a.warmup_steps = min(a.warmup_steps, a.steps)
    a.variants = a.variants or (["fp32", "fast", "fast+graphs"] if cuda else
                                ["fp32", "fast", "bf16"])
    a.out = a.out or OUT / ("gpu_throughput_small.json" if a.small else "gpu_throughput.json")
    if cuda:
        torch.backends.cudnn.benchmark = True      # as the reference's main.py
    dev_name = torch.cuda.get_device_name(a.device) if cuda else platform.processor() or "cpu"
    results = {"device": dev_name, "torch": torch.__version__, "steps": a.steps,
               "task": f"{a.task} x{a.scale}", "peak_tflops": a.peak_tflops,
               "small": a.small, "models": {}}
    # the issue's FLOP figure, checked on the full-size ADM whatever the run's sizes
    adm_full = flops_per_forward("adm", MODELS["adm"][1], 256)
    results["adm256_tflop_per_image_per_nfe"] = adm_full / 1e12
    print(f"ADM-256 FLOPs per image per network evaluation: {adm_full / 1e12:.3f} TFLOP "
          f"(issue: {ISSUE_TFLOP_ADM}); 100 steps at {a.peak_tflops:g} TFLOP/s: "
          f"{adm_full * 100 / a.peak_tflops / 1e12:.3f} s/image", file=sys.stderr)
    for key in a.models:
        bench_model(key, a, a.device, results)
        write_json(a.out, results)          # partial results survive a later failure
    print_tables(results, a.peak_tflops)
    write_json(a.out, results)
    print(f"\nwrote {a.out}")
    return results


if __name__ == "__main__":
    main()
