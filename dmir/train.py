"""Train a DDPM noise-prediction UNet on random crops of an image folder (``dmir train``).

The network is the DDPM "simple" UNet of :mod:`dmir.models.nets.ddpm_unet` (the architecture of the
SDEdit/DDIM/DDRM/DDNM CelebA-HQ and LSUN checkpoints), so the result loads through
:func:`dmir.models.load` like any published checkpoint.

Recipe (Ho et al. 2020, Algorithm 1; the defaults are the ones of the prior shipped with dmir):

- data: random ``crop``×``crop`` crops of every image found under the folders, random horizontal
  flips; images in [-1, 1];
- t uniform in 0..T-1 on the linear 1000-step schedule β = 1e-4..0.02, loss ‖ε − ε_θ(x_t, t)‖²
  (mean over pixels), x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε;
- Adam (β₁ 0.9, β₂ 0.999), linear warm-up, gradient-norm clipping at 1, EMA of the weights;
- bf16 autocast on CUDA (``amp=True``; float32 master weights), float32 on the CPU.

Outputs in ``out_dir``:

- ``checkpoint.pt``: weights, EMA, optimizer, step, RNG state and the loss history, written
  atomically every ``save_every`` steps; a later call with the same ``out_dir`` resumes from it
  (a run killed at any moment loses at most the steps since the last save);
- ``model/``: the EMA weights as ``model.safetensors`` plus ``config.json``
  (``{"format": "ddpm", "config": …, "training": …}``), loadable with ``models.load(out_dir/model)``;
- ``loss.png`` (loss curve, log scale, per-``log_every`` means) and ``loss.json``.

Nothing here parses options: the CLI builds a :class:`TrainConfig`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import InputError, ParameterError
from .models import ddpm_unet
from .checkpoints.reading import write_safetensors

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored in the checkpoint and the model's config)."""

    data: list = field(default_factory=list)   # image folders (searched recursively)
    out_dir: str = "dmir-train"
    crop: int = 64                 # training crop size (pixels); multiple of 2^(len(ch_mult)-1)
    batch: int = 16
    steps: int = 20000             # optimizer steps in total (a resumed run continues to this)
    lr: float = 2e-4
    warmup: int = 200
    ema_rate: float = 0.999
    grad_clip: float = 1.0
    ch: int = 32
    ch_mult: list = field(default_factory=lambda: [1, 2, 2, 4])
    num_res_blocks: int = 2
    attn_resolutions: list = field(default_factory=list)
    dropout: float = 0.0
    seed: int = 0
    save_every: int = 250
    log_every: int = 25
    device: str = "cpu"
    amp: bool = True               # bf16 autocast on CUDA (ignored on the CPU)
    max_images: int | None = None  # use only the first N images (sorted), e.g. for smoke tests

    def model_config(self) -> dict:
        return ddpm_unet.full_config({
            "ch": self.ch, "ch_mult": list(self.ch_mult), "num_res_blocks": self.num_res_blocks,
            "attn_resolutions": list(self.attn_resolutions), "dropout": self.dropout,
            "image_size": self.crop, "ema_rate": self.ema_rate, "resamp_with_conv": True})

    def validate(self) -> None:
        if not self.data:
            raise ParameterError("training needs at least one image folder")
        for k in ("crop", "batch", "steps", "save_every", "log_every"):
            if int(getattr(self, k)) < 1:
                raise ParameterError(f"{k} must be a positive integer, got {getattr(self, k)!r}")
        if not 0.0 < self.ema_rate < 1.0:
            raise ParameterError(f"ema_rate must be in (0, 1), got {self.ema_rate!r}")
        if not self.lr > 0:
            raise ParameterError(f"lr must be positive, got {self.lr!r}")
        mult = 2 ** (len(self.ch_mult) - 1)
        if self.crop % mult:
            raise ParameterError(f"crop ({self.crop}) must be a multiple of {mult} "
                                 f"(2^(len(ch_mult)-1) for ch_mult={list(self.ch_mult)})")
        self.model_config()   # validates the architecture fields


def find_images(folders, max_images: int | None = None) -> list[str]:
    """Image files under ``folders`` (recursive, sorted by path)."""
    files = []
    for d in folders:
        if not os.path.isdir(d):
            raise InputError(f"training data folder '{d}' does not exist or is not a folder")
        for root, _, names in os.walk(d):
            files += [os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_SUFFIXES)]
    files.sort()
    if max_images is not None:
        files = files[:max_images]
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under "
                         f"{', '.join(map(str, folders))}")
    return files


class CropSampler:
    """Random crops (with horizontal flips) of images held in memory as uint8 (H, W, 3)."""

    def __init__(self, files, crop: int):
        from PIL import Image

        self.crop = crop
        self.images = []
        for f in files:
            with Image.open(f) as im:
                a = np.asarray(im.convert("RGB"))
            if min(a.shape[:2]) < crop:   # too small: upscale the short side to the crop size
                s = crop / min(a.shape[:2])
                with Image.open(f) as im:
                    im = im.convert("RGB").resize((max(crop, round(a.shape[1] * s)),
                                                   max(crop, round(a.shape[0] * s))),
                                                  Image.BICUBIC)
                    a = np.asarray(im)
            self.images.append(torch.from_numpy(np.array(a, dtype=np.uint8)))
        # sample images proportionally to their area so every pixel is equally likely
        areas = torch.tensor([float(a.shape[0] * a.shape[1]) for a in self.images])
        self.weights = areas / areas.sum()

    def __len__(self):
        return len(self.images)

    def batch(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, 3, crop, crop) float32 in [-1, 1]."""
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        out = torch.empty(n, 3, self.crop, self.crop)
        for j, i in enumerate(idx.tolist()):
            a = self.images[i]
            H, W = a.shape[:2]
            r = int(torch.randint(0, H - self.crop + 1, (1,), generator=generator))
            c = int(torch.randint(0, W - self.crop + 1, (1,), generator=generator))
            p = a[r:r + self.crop, c:c + self.crop].permute(2, 0, 1).float()
            if torch.rand((), generator=generator) < 0.5:
                p = p.flip(-1)
            out[j] = p
        return out / 127.5 - 1.0


def _atomic_save(obj, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def export_model(ema_state: dict, cfg: TrainConfig, out: str, step: int, loss: float | None):
    """Write the EMA weights as a dmir model folder (``config.json`` + ``model.safetensors``)."""
    os.makedirs(out, exist_ok=True)
    write_safetensors({k: v.float() for k, v in ema_state.items()},
                      os.path.join(out, "model.safetensors"),
                      metadata={"format": "ddpm", "step": str(step)})
    meta = {"format": "ddpm", "config": cfg.model_config(),
            "training": {**dataclasses.asdict(cfg), "step": step, "final_loss": loss}}
    tmp = os.path.join(out, "config.json.tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, os.path.join(out, "config.json"))


def train(cfg: TrainConfig, progress: bool = True, log=print) -> str:
    """Run (or resume) training; returns the path of the exported model folder."""
    from tqdm import tqdm

    from .plot import line_plot

    cfg.validate()
    os.makedirs(cfg.out_dir, exist_ok=True)
    device = torch.device(cfg.device)
    mcfg = cfg.model_config()
    with torch.random.fork_rng(devices=[]):     # seeded initialisation, global RNG untouched
        torch.manual_seed(cfg.seed)
        net = ddpm_unet.build(mcfg).to(device)
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    ab = ddpm_unet.schedule(mcfg).to(device=device, dtype=torch.float32)
    T = ab.shape[0]
    gen = torch.Generator().manual_seed(cfg.seed)
    step, history = 0, []    # history: (step, mean loss over the last log_every steps)
    ckpt_path = os.path.join(cfg.out_dir, "checkpoint.pt")
    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ck["model_config"] != mcfg:
            raise ParameterError(f"{ckpt_path} was trained with another architecture; use a "
                                 f"new output folder or the same settings")
        net.load_state_dict(ck["model"])
        ema = {k: v.to(device) for k, v in ck["ema"].items()}
        opt.load_state_dict(ck["optimizer"])
        step, history = ck["step"], ck["history"]
        gen.set_state(ck["generator"])
        log(f"resuming from step {step} ({ckpt_path})")
    files = find_images(cfg.data, cfg.max_images)
    data = CropSampler(files, cfg.crop)
    log(f"training on {len(data)} images, {cfg.crop}x{cfg.crop} crops, batch {cfg.batch}, "
        f"{sum(p.numel() for p in net.parameters()):,} parameters, device {device}")
    amp = cfg.amp and device.type == "cuda"

    def save():
        _atomic_save({"model": net.state_dict(), "ema": {k: v.cpu() for k, v in ema.items()},
                      "optimizer": opt.state_dict(), "step": step, "history": history,
                      "generator": gen.get_state(), "model_config": mcfg,
                      "train_config": dataclasses.asdict(cfg)}, ckpt_path)
        last = history[-1][1] if history else None
        export_model(ema, cfg, os.path.join(cfg.out_dir, "model"), step, last)
        if history:
            with open(os.path.join(cfg.out_dir, "loss.json"), "w") as f:
                json.dump(history, f)
            line_plot({"loss": history}, os.path.join(cfg.out_dir, "loss.png"),
                      xlabel="step", ylabel="mean ε-MSE", logy=True,
                      title=f"dmir train: {cfg.crop}px crops, batch {cfg.batch}")

    net.train()
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, dynamic_ncols=True,
               desc="train")
    acc, n_acc, running = 0.0, 0, None
    t0 = time.time()
    while step < cfg.steps:
        x0 = data.batch(cfg.batch, gen).to(device)
        t = torch.randint(0, T, (cfg.batch,), generator=gen).to(device)
        eps = torch.randn(x0.shape, generator=gen).to(device)
        a = ab[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = net(xt, t.float())
        loss = (pred.float() - eps).pow(2).mean()
        if not torch.isfinite(loss):
            raise RuntimeError(f"training diverged at step {step} (loss {loss.item()}); "
                               f"lower the learning rate (now {cfg.lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
        opt.step()
        step += 1
        # EMA with the usual warm-up min(rate, (1+n)/(10+n)) so early averages are not stuck at init
        rate = min(cfg.ema_rate, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in net.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[k].mul_(rate).add_(v, alpha=1 - rate)
                else:
                    ema[k].copy_(v)
        li = loss.item()
        acc, n_acc = acc + li, n_acc + 1
        running = li if running is None else 0.98 * running + 0.02 * li
        bar.update(1)
        bar.set_postfix(loss=f"{running:.4f}")
        if n_acc == cfg.log_every:
            history.append((step, acc / n_acc))
            acc, n_acc = 0.0, 0
        if step % cfg.save_every == 0 or step == cfg.steps:
            save()
    bar.close()
    if not os.path.exists(os.path.join(cfg.out_dir, "model", "model.safetensors")):
        save()
    log(f"done: {step} steps ({time.time() - t0:.0f} s this run); model in "
        f"{os.path.join(cfg.out_dir, 'model')}")
    return os.path.join(cfg.out_dir, "model")


def ema_loss_at(model_dir: str, images: torch.Tensor, ts=(50, 200, 500, 800), seed: int = 0) -> dict:
    """ε-MSE of a model folder on images (B, 3, H, W) in [-1, 1] at the given timesteps."""
    from .models import load

    m = load(model_dir)
    g = torch.Generator().manual_seed(seed)
    out = {}
    with torch.no_grad():
        for t in ts:
            e = torch.randn(images.shape, generator=g)
            a = m.alphas_cumprod[t].float()
            xt = a.sqrt() * images + (1 - a).sqrt() * e
            out[int(t)] = float((m.eps(xt, torch.full((images.shape[0],), t)) - e).pow(2).mean())
    return out


__all__ = ["TrainConfig", "train", "find_images", "CropSampler", "export_model", "ema_loss_at"]
