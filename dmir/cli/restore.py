"""``dmir restore``: read a photo, restore it with :func:`dmir.pipeline.restore`, write it."""
from __future__ import annotations

import argparse
import math
import textwrap
import warnings

from .. import models
from ..errors import NumericalError, ShapeError
from .common import Progress, UsageError, listing, note, safe


def epilog() -> str:
    from .. import operators, solvers

    return "\n\n".join([
        listing("tasks (--task):", safe(operators.describe)),
        listing("methods (--method):", safe(solvers.describe)),
        textwrap.dedent("""\
            kernels (--kernel, task deblur): gauss:SIGMA[:SIZE]  box:SIZE  motion:LENGTH:ANGLE
              (angle in degrees; non-separable)  or a .npy/.png file (normalised to sum 1)

            INPUT is the degraded photo (sr_*: the low-resolution image; inpainting: the damaged
            full-size photo with --mask; colorization: a gray image, or RGB converted with
            --weights; deblur*/denoising: the blurred/noisy photo). Compressed sensing needs
            --degrade. With --degrade INPUT is a clean image: the task's operator and noise are
            applied (seeded), the result is restored and PSNR/SSIM (on [0, 1], per-channel
            SSIM, Wang et al. 2004) of A+y and of the result are printed. Noise levels are in
            [0, 1] pixel units. A gray INPUT with an RGB prior is restored with its channel
            replicated and written gray (RGB for colorization).

            Masks (--mask): WHITE (1) = KEPT, BLACK (0) = TO FILL. Most tools (diffusers,
            OpenCV inpaint, LaMa, image editors) draw the area to fill in white: add
            --mask-invert for those. A PNG with transparency is read from its alpha channel
            (transparent = to fill); an INPUT with transparency and no --mask is its own mask.
            A note says when a mask drops more than half of the image.

            Real photos (no --degrade) get the operators that match how photos are made:
            deblur with --boundary reflect, colorization with Pillow's luma weights
            (--weights pillow); use sr_bicubic_aa for a photo downscaled by a camera or PIL
            (sr_averagepooling and sr_bicubic are the papers' protocols). With --degrade and in
            presets the papers' operators are used exactly."""),
    ])



def add_parser(sub) -> None:
    r = sub.add_parser("restore", help="restore a degraded photo (or degrade + restore a clean "
                       "one with --degrade)", description="Restore INPUT and write OUTPUT (PNG).",
                       epilog=epilog(),
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
                   help="inpainting: mask .npy (0/1; H×W or 3×H×W) or image, the size of the "
                        "image: white/1 = kept, black/0 = to fill (transparent = to fill in a "
                        "PNG with alpha)")
    g.add_argument("--mask-invert", action="store_true",
                   help="inpainting: the mask marks the area to fill in white (diffusers, "
                        "OpenCV, LaMa, image editors)")
    g.add_argument("--kernel", metavar="SPEC", help="deblur: blur kernel (see below)")
    g.add_argument("--boundary", choices=["reflect", "zero", "circular", "auto"],
                   help="deblur: how the blur treats the image borders (default: reflect, as "
                        "a camera or gaussian_filter; with --degrade: auto = zero for "
                        "separable kernels, circular otherwise)")
    g.add_argument("--weights", metavar="W",
                   help="colorization: channel weights of the gray image, W1,W2,W3 or a name: "
                        "pillow (0.299,0.587,0.114; the default for a real photo), rec709 "
                        "(scikit-image), protocol (1/3 each; the default with --degrade)")
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
    d.add_argument("--smart-init", choices=["target", "pinv"],
                   help="--init-opt: start from the DDIM inversion of the clean INPUT ('target', "
                   "the DeqIR release's --smart_init, an oracle: needs --degrade) or of A+y "
                   "('pinv')")
    d.add_argument("--init-inner", choices=["converged", "release"],
                   help="--init-opt: fixed-point solve per Adam step: dmir's converged solve "
                   "(default) or the release's unconverged Anderson (m 3, beta 0.9, tol 1e-2)")



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
        if a.init_iters is not None or a.init_lr is not None or a.init_grad is not None \
                or a.smart_init is not None or a.init_inner is not None:
            raise UsageError("--init-iters, --init-lr, --init-grad, --smart-init and "
                             "--init-inner need --init-opt consistency|mse|lpips")
        return
    if a.method.split("-")[0] != "deqir":
        raise UsageError(f"--init-opt works only with --method deqir (it optimises DeqIR's "
                         f"initial noise through its fixed point), got --method {a.method}")
    if a.smart_init == "target" and not a.degrade:
        raise UsageError("--smart-init target inverts the clean image: it needs --degrade "
                         "(use --smart-init pinv for an unknown image)")
    if a.init_opt in ("mse", "lpips") and not a.degrade:
        raise UsageError(f"--init-opt {a.init_opt} needs --degrade: the target is the clean "
                         "INPUT (an oracle experiment); use --init-opt consistency for a "
                         "degraded photo")
    if a.init_opt == "consistency" and a.sigma_y == 0 and a.poisson is None:
        raise UsageError("--init-opt consistency needs measurement noise (--sigma-y > 0 or "
                         "--poisson): without it DeqIR's result already satisfies A x = y "
                         "exactly and there is nothing to optimise")


_FLAG_PARAM = {"scale": "scale", "ratio": "ratio", "block": "block", "mask": "mask",
               "kernel": "kernel", "weights": "weights", "boundary": "boundary"}


def _parse_weights(text: str) -> list[float]:
    from ..inputs import COLOR_WEIGHTS

    if text.lower() in COLOR_WEIGHTS:
        return list(COLOR_WEIGHTS[text.lower()])
    try:
        w = [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"--weights must be comma-separated numbers like 0.299,0.587,0.114 "
                         f"or one of {', '.join(COLOR_WEIGHTS)}, got {text!r}") from None
    if not all(math.isfinite(v) for v in w) or not any(w):
        raise UsageError(f"--weights must be finite and not all zero, got {text!r}")
    return w


def _operator_params(a, task: str, C: int, hw=None) -> dict:
    from .. import pipeline
    from ..io import load_mask

    allowed, _ = pipeline.task_params(task)
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
            v = load_mask(v)
        elif flag == "kernel":
            v = pipeline.parse_kernel(v, min(hw) if hw else None)
        elif flag == "weights":
            v = _parse_weights(v)
        params[name] = v
    if "scale" in allowed and "scale" not in params:
        raise UsageError(f"task {task!r} needs --scale S (an integer ≥ 2)")
    if task == "inpainting" and "mask" not in params and not _has_transparency(a.input):
        raise UsageError("task 'inpainting' needs --mask PATH (.npy of 0/1 or an image: white "
                         "= kept, black = to fill; --mask-invert for the opposite) or an INPUT "
                         "with transparency (transparent = to fill)")
    if a.mask_invert and task != "inpainting":
        raise UsageError(f"--mask-invert applies to inpainting masks, not to task {task!r}")
    if task == "deblur" and "kernel" not in params:
        raise UsageError("task 'deblur' needs --kernel SPEC (gauss:SIGMA[:SIZE], box:SIZE, "
                         "motion:LENGTH:ANGLE or a .npy/.png file)")
    return params


def _has_transparency(path) -> bool:
    """Whether the image file has an alpha channel that is not fully opaque."""
    from .. import io as dio

    if str(path).lower().endswith(".npy"):
        return False
    a, _ = dio._read_array(path)
    return a.shape[2] in (2, 4) and bool((a[:, :, -1] < 1.0).any())


def _read_input(path, keep_alpha: bool = False):
    """INPUT as (1, C, H, W) in [-1, 1]; with ``keep_alpha`` an alpha channel that is not
    fully opaque is passed on as an RGBA/LA array (the pipeline takes it as the mask)."""
    if keep_alpha and _has_transparency(path):
        from .. import io as dio

        a, _ = dio._read_array(path)
        return a.astype("float32")          # H×W×C in [0, 1], alpha last
    return _read_plain(path)


def _read_plain(path):
    from .. import io as dio

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x = dio.read_image(path)
    for w in caught:
        note(w.message)
    return x


def _fast_options(a) -> dict | None:
    """accelerate() keywords from --fast/--channels-last/--compile/--cuda-graphs (validated
    here, before any work), or None with --no-fast."""
    if not a.fast:
        if a.compile or a.cuda_graphs or a.channels_last:
            raise UsageError("--compile, --cuda-graphs and --channels-last need the fast path; "
                             "drop --no-fast")
        return None
    from ..models import fast

    kw = dict(dtype=a.dtype or "auto",
              channels_last="auto" if a.channels_last is None else a.channels_last,
              compile=a.compile, cuda_graphs=a.cuda_graphs)
    fast.resolve_options(a.device, **kw)         # ParameterError for a bad combination
    return kw


def run(a) -> int:
    import torch

    from .. import io as dio
    from .. import metrics, operators, pipeline, solvers

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

    # (1, C, H, W) in [-1, 1]; or H×W×C in [0, 1] with the alpha that masks an inpainting
    inp = _read_input(a.input, keep_alpha=task == "inpainting" and a.mask is None)
    if isinstance(inp, torch.Tensor):
        _, C, H, W = inp.shape
        in_range = "model"
    else:
        H, W, C = inp.shape[0], inp.shape[1], inp.shape[2] - 1
        in_range = "unit"
    params = _operator_params(a, task, C, (H, W))
    fast_kw = _fast_options(a)
    options = {} if a.purifier is None else {"purifier": a.purifier}
    if a.travel_length != 1 or a.travel_repeat != 1:
        options.update(travel_length=a.travel_length, travel_repeat=a.travel_repeat)
    init_opt = None
    if a.init_opt:
        init_opt = {"loss": a.init_opt,
                    "grad": a.init_grad or ("implicit" if a.init_opt == "consistency"
                                            else "phantom")}
        if a.init_iters is not None:
            init_opt["iters"] = a.init_iters
        if a.init_lr is not None:
            init_opt["lr"] = a.init_lr
        if a.smart_init is not None:
            init_opt["smart_init"] = a.smart_init
        if a.init_inner is not None:
            init_opt["inner"] = a.init_inner

    bar = Progress(a.method + (" init-opt" if a.init_opt else ""), quiet=a.quiet)
    try:
        r = pipeline.restore(inp, task, method=a.method, model=a.model, degrade=a.degrade,
                             sigma_y=a.sigma_y, poisson=a.poisson, steps=a.steps, eta=a.eta,
                             samples=a.samples, seed=a.seed, device=a.device, tile=a.tile,
                             fast=fast_kw, dtype=a.dtype, class_label=a.class_label,
                             solver_options=options, init_opt=init_opt, progress=bar,
                             note=note, input_range=in_range, invert_mask=a.mask_invert,
                             task_params=params)
    finally:
        bar.close()
    x, solver, hist = r.x, r.solver, r.history
    if not torch.isfinite(x).all():     # a user-facing failure: one line, exit status 2
        raise NumericalError(f"the sampler produced NaN/Inf values (method {a.method}, "
                             f"{solver.steps} steps); no output written")

    if hist is not None:
        L = hist["loss"]
        print(f"init-opt {a.init_opt}: loss {L[0]:.4g} -> {min(L):.4g} in {hist['steps']} Adam "
              f"steps ({hist['grad']} gradient, lr {hist['lr']:g}, stopped: "
              f"{hist['stopped']})")
    if r.clean is not None:
        clean = r.clean
        base = r.op.pinv(r.y).detach().to("cpu", torch.float32)
        if base.shape[1] != clean.shape[1]:         # a gray image restored as RGB
            base = base.mean(1, keepdim=True)
        rows = [("A+y (pinv)", base), (a.method, x)]
        if r.x_start is not None:
            rows = [rows[0], (a.method, r.x_start), ("+ init-opt", x)]
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
          f"{r.nfe if r.nfe is not None else '?'} network evaluations, "
          f"{r.seconds:.1f} s)")
    return 0
