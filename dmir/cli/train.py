"""``dmir train``: train a DDPM prior on an image folder (:mod:`dmir.train`)."""
from __future__ import annotations

import sys

from ..log import isatty
from .common import UsageError


HELP = "train a DDPM prior on an image folder"


def add_parser(sub, full: bool = True) -> None:
    """The ``train`` sub-command; ``full=False`` adds only its name and help line (its
    defaults come from :class:`dmir.train.TrainConfig`, whose module loads torch)."""
    if not full:
        sub.add_parser("train", help=HELP)
        return
    from ..train import TrainConfig

    d = TrainConfig()
    t = sub.add_parser("train", help=HELP,
                       description="Train a DDPM UNet (the DDPM/SDEdit 'simple' architecture, "
                       "so the result loads with --model OUT/model) on random crops of the "
                       "images under DATA: v-prediction (or ε), linear 1000-step schedule, "
                       "Adam, EMA weights, bf16 autocast. The full training state lives in "
                       "dmir's cache (--state to choose) and is resumed automatically; Ctrl-C "
                       "or SIGTERM stops it at the end of the current step and saves it. OUT gets model/ (latest EMA weights, safetensors + "
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
    t.add_argument("--weighting", default=d.weighting, metavar="W",
                   help="loss weighting over the noise level: uniform (the native ε/v loss), "
                   "min-snr[:GAMMA] (Hang et al. 2023; γ 5) or trunc-snr[:CAP] (x₀ weight "
                   "max(SNR, 1), capped at CAP× the native loss; 10) (uniform)")
    t.add_argument("--timesteps", metavar="START:STOP", help="train a timestep expert: only "
                   "t in [START, STOP) of the 1000-step schedule (eDiff-I expert denoisers; "
                   "combine experts into one prior with dmir.models.experts.save_folder)")
    t.add_argument("--val-base", metavar="MODEL", help="with --timesteps and --val: the prior "
                   "that serves the other timesteps when the expert is validated")
    t.add_argument("--no-ema-warmup", action="store_true", help="EMA at --ema from the first "
                   "step (for warm starts: the EMA then starts from the trained --init weights "
                   "instead of following the first fresh Adam steps)")
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




def _int_list(opt: str, text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{opt} takes comma-separated integers, got {text!r}") from None


def _range(flag, spec):
    if spec is None:
        return None
    parts = spec.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        return [int(parts[0]), int(parts[1])]
    except ValueError:
        raise UsageError(f"{flag} must be START:STOP (integers, e.g. 0:800), got {spec!r}") \
            from None


def run(a) -> int:
    import torch

    from ..train import TrainConfig, train

    if a.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here; use --device cpu")
    cfg = TrainConfig(data=list(a.data), out_dir=a.out, crop=a.crop, batch=a.batch,
                      steps=a.steps, lr=a.lr, ema_rate=a.ema, ch=a.ch,
                      ch_mult=_int_list("--ch-mult", a.ch_mult), num_res_blocks=a.res_blocks,
                      attn_resolutions=_int_list("--attn", a.attn), save_every=a.save_every,
                      seed=a.seed, device=a.device, amp=not a.no_amp, max_images=a.max_images,
                      prediction=a.prediction, weighting=a.weighting, init=a.init, state_dir=a.state, warmup=a.warmup,
                      log_every=a.log_every, val=list(a.val), val_every=a.val_every,
                      val_images=a.val_images, val_size=a.val_size,
                      timesteps=_range("--timesteps", a.timesteps), val_base=a.val_base,
                      ema_warmup=not a.no_ema_warmup)
    if a.threads is not None:
        if a.threads < 1:
            raise UsageError(f"--threads must be a positive integer, got {a.threads}")
        torch.set_num_threads(a.threads)
    train(cfg, progress=isatty(sys.stderr), log=lambda m: print(m, flush=True))
    return 0
