"""``dmir bench``: the options; the work is :func:`dmir.bench.command.main`."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
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
                   "dmir-ddpm, the default of dmir restore; natural: the fast analytic prior)")
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
    o.add_argument("--batch", type=int, metavar="N",
                   help="images of the same task and size restored per sampler call (default: "
                   "4 on cpu, 8 on cuda); every image keeps its own seed, so results do not "
                   "depend on N")
    o.add_argument("--tile", type=int, default=None, metavar="N",
                   help="network priors: images larger than N×N as overlapping tiles (default: "
                   "tiles only when the batch does not fit in memory, as dmir restore)")
    o.add_argument("--fast", action=argparse.BooleanOptionalAction, default=True,
                   help="network priors: the fast path of dmir restore (default on)")
    o.add_argument("--summarize", action="store_true",
                   help="only merge the results in --out and rewrite the summaries")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")




def run(a) -> int:
    from ..bench.command import main

    return main(a)
