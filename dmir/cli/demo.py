"""``dmir demo``: restore sample photos for four tasks and write a comparison grid."""
from __future__ import annotations


def add_parser(sub) -> None:
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




def run(a) -> int:
    from ..demo import run_demo

    from .common import Progress

    return run_demo(a.out, size=a.size, steps=a.steps, method=a.method, model=a.model,
                    seed=a.seed, device=a.device, log=lambda m: print(m, flush=True),
                    progress=lambda desc: Progress(desc, quiet=a.quiet))
