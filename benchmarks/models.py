"""Checkpoint benchmark: load time and peak memory of the full-size networks, and CPU forward
time per image.

Setting: the full-size configs ``adm-imagenet256-uncond`` (552.8 M parameters) and
``ddpm-celebahq256`` (113.7 M), random weights saved once in the original format (a float32
``torch.save`` state dict, as the official files are). Each load runs in a fresh subprocess
and reports wall time and peak RSS (VmHWM):

- ``dmir``: ``models.load(path)`` — weights_only, memory-mapped, built on the meta device and
  assigned (no random initialisation, no second copy);
- ``reference``: what the papers' code does — build the network (random init), then
  ``torch.load`` without mmap and ``load_state_dict``.

Forward time: one network evaluation per image (batch 1) at 64, 128 and 256 px, float32 and
bfloat16 weights, on this machine's CPU (all cores). Prints a markdown table and writes
benchmarks/results/models.json.

    python benchmarks/models.py [--sizes 64 128 256] [--models adm ddpm] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from dmir import models

OUT = Path(__file__).parent / "results"
# file names differ from the official ones so the registry does not adopt (and checksum) them
CONFIGS = {"adm": ("adm", "adm-imagenet256-uncond", "random_adm_imagenet256_uncond.pt"),
           "ddpm": ("ddpm", "ddpm-celebahq256", "random_ddpm_celebahq256.ckpt")}

_CHILD = r"""
import json, sys, time, torch
t0 = time.perf_counter()
mode, fmt, cfg, path = sys.argv[1:5]
if mode == "dmir":
    from dmir import models
    net = models.load(path, format=fmt, config=cfg).net
else:
    from dmir.models import loading
    mod = loading._format_module(fmt)
    c = dict(mod.CONFIGS[cfg])
    if fmt == "adm":
        c["use_fp16"] = False
    net = mod.build(c)                          # random initialisation, as the papers' code
    net.load_state_dict(torch.load(path, map_location="cpu"))
dt = time.perf_counter() - t0
n = sum(p.numel() for p in net.parameters())
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"seconds": dt, "peak_rss_mb": hwm / 1024, "params": n}))
"""


def random_checkpoint(fmt, cfg, path):
    """Random weights of the full config saved like the official file (float32 state dict).
    Zero-initialised layers (ADM's output convs) get small random values so outputs are not
    trivially zero."""
    from dmir.models import loading
    mod = loading._format_module(fmt)
    c = dict(mod.CONFIGS[cfg])
    if fmt == "adm":
        c["use_fp16"] = False
    torch.manual_seed(0)
    net = mod.build(c)
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1 and float(p.abs().max()) == 0.0:
                p.normal_(0, 1e-2)
    torch.save(net.state_dict(), path)
    return os.path.getsize(path)


def run_child(mode, fmt, cfg, path):
    r = subprocess.run([sys.executable, "-c", _CHILD, mode, fmt, cfg, str(path)],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def forward_ms(prior, size, reps):
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        prior.eps(x, 500)                           # warm-up
        t0 = time.perf_counter()
        for _ in range(reps):
            prior.eps(x, 500)
    return (time.perf_counter() - t0) / reps * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 256])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--dir", default=None, help="where the random checkpoints are written")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint files")
    a = ap.parse_args()
    work = Path(a.dir or tempfile.mkdtemp(prefix="dmir-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                           "threads": torch.get_num_threads(), "cpu": platform.processor()},
               "models": {}}
    rows = []
    for key in a.models:
        fmt, cfg, fname = CONFIGS[key]
        path = work / fname
        if not path.exists():
            print(f"writing random {cfg} → {path} …", file=sys.stderr)
            size = random_checkpoint(fmt, cfg, path)
        else:
            size = path.stat().st_size
        res = {"config": cfg, "file_mb": size / 2 ** 20,
               "params": models.num_parameters(fmt, cfg)}
        for mode in ("dmir", "reference"):
            res[mode] = run_child(mode, fmt, cfg, path)
        prior = models.load(str(path), format=fmt, config=cfg)
        res["forward_ms"] = {}
        for dt in a.dtypes:
            p = prior if dt == "float32" else models.load(str(path), format=fmt, config=cfg,
                                                          dtype=dt)
            for s in a.sizes:
                ms = forward_ms(p, s, a.reps)
                res["forward_ms"][f"{dt}@{s}"] = ms
                print(f"{cfg} {dt} {s}px: {ms:.0f} ms", file=sys.stderr)
        results["models"][key] = res
        rows.append(res)
        if not a.keep:
            path.unlink()
    print("\n| model | params | file | load dmir | peak RSS dmir | load reference | "
          "peak RSS reference |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        d, ref = r["dmir"], r["reference"]
        print(f"| {r['config']} | {r['params'] / 1e6:.1f} M | {r['file_mb']:.0f} MB | "
              f"{d['seconds']:.2f} s | {d['peak_rss_mb']:.0f} MB | {ref['seconds']:.2f} s | "
              f"{ref['peak_rss_mb']:.0f} MB |")
    keys = list(rows[0]["forward_ms"]) if rows else []
    print("\n| model | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for r in rows:
        print(f"| {r['config']} | " + " | ".join(f"{r['forward_ms'][k]:.0f} ms" for k in keys)
              + " |")
    OUT.mkdir(exist_ok=True)
    (OUT / "models.json").write_text(json.dumps(results, indent=1))
    print(f"\nwrote {OUT / 'models.json'}")


if __name__ == "__main__":
    main()
