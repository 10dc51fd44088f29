"""``dmir train``: train a DDPM prior on an image folder (:mod:`dmir.train`)."""
from __future__ import annotations

import sys

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
                       "images under DATA: ε-prediction, linear 1000-step schedule, Adam, EMA "
                       "weights, bf16 autocast on CUDA. OUT gets checkpoint.pt (resumed "
                       "automatically when present), model/ (EMA weights, safetensors + "
                       "config.json), loss.png and loss.json.")
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
    t.add_argument("--no-amp", action="store_true", help="CUDA: train in float32")
    t.add_argument("--max-images", type=int, metavar="N", help="use the first N images only")




def _int_list(opt: str, text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{opt} takes comma-separated integers, got {text!r}") from None


def run(a) -> int:
    import torch

    from ..train import TrainConfig, train

    if a.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here; use --device cpu")
    cfg = TrainConfig(data=list(a.data), out_dir=a.out, crop=a.crop, batch=a.batch,
                      steps=a.steps, lr=a.lr, ema_rate=a.ema, ch=a.ch,
                      ch_mult=_int_list("--ch-mult", a.ch_mult), num_res_blocks=a.res_blocks,
                      attn_resolutions=_int_list("--attn", a.attn), save_every=a.save_every,
                      seed=a.seed, device=a.device, amp=not a.no_amp, max_images=a.max_images)
    train(cfg, progress=sys.stderr.isatty(), log=lambda m: print(m, flush=True))
    return 0
