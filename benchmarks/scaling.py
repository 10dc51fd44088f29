"""Cost against image size: ``dmir restore`` (default method, shipped prior) at 256² … 2048².

Each size runs ``python -m dmir restore clean.png --task denoising --degrade --steps N`` in
its own process (the demo photo resized to the size), on a pseudo-terminal so that the
progress bar is drawn as a user sees it. Measured: wall time, sampling time and network
evaluations (from the CLI's last line), time per network evaluation, peak RSS of the process
(``wait4``), which path the network took (the CLI's note: whole image or tiles), and the
progress bar's ETA: the remaining time it showed at the first update at or after 10% of the
steps, against the time that actually remained.

Fitted: the exponent b of time per network evaluation ∝ pixels^b (least squares on logs).
Targets (issue 20): b ≤ 1.1; peak RSS at 2048² ≤ 4 GB; ETA within 20% after the first 10%.
On a loaded machine run big sizes with fewer steps (``--steps 20 20 4 2``): time per network
evaluation does not depend on the step count.

    python benchmarks/scaling.py [--sizes 256 512 1024 2048] [--steps 20 20 20 20]

Prints a markdown table and writes benchmarks/results/scaling.json.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import pty
import re
import select
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import numpy as np

import dmir

# "3/20 NFE [00:05, ETA 00:28, ...]" (dmir's bar) or tqdm's "3/20 [00:05<00:28, ...]"
BAR = re.compile(r"(\d+)/(\d+)(?: NFE)? \[(\d+:)?(\d+):(\d+)(?:<|, ETA )(\d+:)?(\d+):(\d+)")
DONE = re.compile(r"(\d+) network evaluations, ([\d.]+) s\)")


def _secs(h, m, s):
    return (int(h[:-1]) if h else 0) * 3600 + int(m) * 60 + int(s)


def _input(size, folder):
    from PIL import Image
    src = Path(dmir.__file__).parent / "data" / "demo" / "astronaut.png"
    path = Path(folder) / f"clean{size}.png"
    Image.open(src).convert("RGB").resize((size, size), Image.BICUBIC).save(path)
    return path


def run_one(size, steps, folder, extra=()):
    inp = _input(size, folder)
    out = Path(folder) / f"out{size}.png"
    cmd = [sys.executable, "-m", "dmir", "restore", str(inp), "-o", str(out), "--task",
           "denoising", "--sigma-y", "0.1", "--degrade", "--steps", str(steps), *extra]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(dmir.__file__).parent.parent)]
                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    master, slave = pty.openpty()
    # a window size, or tqdm (dynamic_ncols) draws a zero-width bar
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
                         env=env)
    os.close(slave)
    err, eta, done_at, pending = b"", None, None, ""
    result = []

    def finished():                   # reap with wait4 (not Popen.poll) to keep the rusage
        if not result:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                result.append((status, usage))
        return bool(result)

    while True:
        r, _, _ = select.select([master], [], [], 0.5)
        if r:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                if finished():
                    break
                continue
            err += chunk
            now = time.perf_counter()
            pending += chunk.decode("utf-8", "replace")
            *lines, pending = re.split(r"[\r\n]", pending)
            for m in BAR.finditer("\n".join(lines)):
                i, n = int(m.group(1)), int(m.group(2))
                if eta is None and n and max(1, math.ceil(0.1 * n)) <= i < n:
                    eta = dict(step=i, of=n, at=now,
                               shown=_secs(m.group(6), m.group(7), m.group(8)))
                if n and i == n:
                    done_at = now
        elif finished():
            break
    if not result:
        result.append(os.wait4(p.pid, 0)[1:])
    status, usage = result[0]
    p.returncode = status
    wall = time.perf_counter() - t0
    stdout = p.stdout.read().decode()
    os.close(master)
    text = err.decode("utf-8", "replace")
    if status != 0 or not DONE.search(stdout):
        raise SystemExit(f"{size}²: dmir restore failed:\n{stdout}\n{text[-2000:]}")
    nfe, sample_s = int(DONE.search(stdout).group(1)), float(DONE.search(stdout).group(2))
    notes = [ln.split("note: ", 1)[1].strip() for ln in re.split(r"[\r\n]+", text)
             if "note: " in ln]
    path = next((n for n in notes if "image: the network runs" in n), "")
    r = dict(size=size, pixels=size * size, steps=steps, nfe=nfe, wall_s=wall,
             sample_s=sample_s, s_per_nfe=sample_s / nfe,
             peak_rss_mb=usage.ru_maxrss / 1024, path=path,
             psnr=[ln for ln in stdout.splitlines() if ln.startswith("ddnm")][:1])
    if eta is not None and done_at is not None:
        actual = done_at - eta["at"]            # until the bar reached n/n
        r.update(eta_step=eta["step"], eta_of=eta["of"], eta_shown_s=eta["shown"],
                 eta_actual_s=actual, eta_error=(eta["shown"] - actual) / max(actual, 1e-9))
    return r


def fit_exponent(rows):
    x = np.log([r["pixels"] for r in rows])
    y = np.log([r["s_per_nfe"] for r in rows])
    return float(np.polyfit(x, y, 1)[0])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    ap.add_argument("--steps", type=int, nargs="+", default=[20],
                    help="steps per size (one number for all, or one per size)")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                    help="further arguments for dmir restore (e.g. --tile 256)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "scaling.json"))
    a = ap.parse_args(argv)
    steps = a.steps * len(a.sizes) if len(a.steps) == 1 else a.steps
    if len(steps) != len(a.sizes):
        raise SystemExit("--steps: one number, or one per size")
    rows = []
    load = [os.getloadavg()[0]] if hasattr(os, "getloadavg") else []
    with tempfile.TemporaryDirectory() as d:
        for size, n in zip(a.sizes, steps):
            r = run_one(size, n, d, a.extra)
            rows.append(r)
            eta = (f", ETA at {r['eta_step']}/{r['eta_of']}: {r['eta_shown_s']} s shown, "
                   f"{r['eta_actual_s']:.0f} s actual ({100 * r['eta_error']:+.0f}%)"
                   if "eta_error" in r else "")
            print(f"  {size}²: {r['s_per_nfe']:.2f} s/NFE, {r['nfe']} NFE, wall "
                  f"{r['wall_s']:.0f} s, peak RSS {r['peak_rss_mb']:.0f} MB{eta}; {r['path']}",
                  flush=True)
    if hasattr(os, "getloadavg"):
        load.append(os.getloadavg()[0])
    b = fit_exponent(rows) if len(rows) > 1 else float("nan")
    base = rows[0]
    print()
    print("| size | steps | NFE | s/NFE | s/NFE per megapixel | × pixels | × time | peak RSS MB "
          "| ETA error after 10% | network path |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        eta = f"{100 * r['eta_error']:+.0f}%" if "eta_error" in r else "—"
        print(f"| {r['size']}² | {r['steps']} | {r['nfe']} | {r['s_per_nfe']:.2f} | "
              f"{r['s_per_nfe'] / (r['pixels'] / 2 ** 20):.2f} | "
              f"{r['pixels'] / base['pixels']:.0f} | {r['s_per_nfe'] / base['s_per_nfe']:.1f} | "
              f"{r['peak_rss_mb']:.0f} | {eta} | {r['path'] or '—'} |")
    print(f"\nfitted exponent of time per network evaluation vs pixels: {b:.3f} (target ≤ 1.1)")
    env = dict(python=sys.version.split()[0], cpu_count=os.cpu_count(), loadavg_1min=load,
               omp_num_threads=os.environ.get("OMP_NUM_THREADS"), extra=a.extra)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(env=env, exponent=b, results=rows), indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
