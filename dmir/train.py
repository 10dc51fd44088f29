"""Train a DDPM UNet prior on random crops of an image folder (``dmir train``).

The network is the DDPM "simple" UNet of :mod:`dmir.models.nets.ddpm_unet` (the architecture of the
SDEdit/DDIM/DDRM/DDNM CelebA-HQ and LSUN checkpoints), so the result loads through
:func:`dmir.models.load` like any published checkpoint, and every solver sees ε(x_t, t) on the
linear 1000-step DDPM schedule whatever the network predicts.

Recipe (Ho et al. 2020, Algorithm 1, with the parametrisation of Salimans & Ho 2022, §4):

- data: random ``crop``×``crop`` crops of every readable image under the folders (sampled in
  proportion to image area), random horizontal flips; images in [-1, 1];
- t uniform in 0..T-1 on the linear schedule β = 1e-4..0.02, x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε;
- ``prediction="v_prediction"`` (default): the network predicts v = √ᾱ ε − √(1−ᾱ) x₀ and the
  loss is ‖v − v_θ‖² (equivalently an x₀ loss weighted by SNR+1): unlike ε-prediction its x̂₀
  stays well conditioned at high noise, which deterministic (η = 0) sampling and colorization
  depend on. ``"epsilon"`` is the DDPM loss ‖ε − ε_θ‖²;
- Adam (β₁ 0.9, β₂ 0.999), linear warm-up, gradient-norm clipping at 1, EMA of the weights;
- bf16 autocast (``amp=True``; float32 master weights) on CUDA and on the CPU, where it is about
  2× faster than float32 (measured in docs/prior.md).

State and outputs:

- the full training state (weights, EMA, optimizer, step, RNG, loss history, validation
  history, the CPU-seconds spent by all processes, which each validation records) is one
  ``state.safetensors`` in ``state_dir`` (default: dmir's cache directory,
  ``<cache>/train/<name of out_dir>-<hash of its path>``), written atomically every
  ``save_every`` steps and on Ctrl-C. It holds tensors only (plain data as JSON in a uint8
  tensor), so resuming never unpickles anything. A later call with the same settings resumes
  from it bit-exactly; a call with different data/crop/batch/lr/seed/architecture is refused.
  When there is no state and ``init`` names a model (e.g. the shipped ``dmir-ddpm``), training
  starts from its weights (a warm start).
- ``out_dir/model/``: the latest EMA weights as ``model.safetensors`` + ``config.json``
  (``{"format": "ddpm", "config": …, "training": …}``), loadable with ``models.load``;
- ``out_dir/best/``: the EMA weights with the best held-out restoration score so far (when
  ``val`` folders are given): every ``val_every`` steps, ``val_size``² centre crops of the first
  ``val_images`` images of each folder are restored (DDNM, ``val_steps`` steps) for SR×4
  (average pooling), inpainting with the DDNM paper mask and colorization, plus SR×4 with
  deterministic DDIM (η = 0); the score is the mean PSNR gain over A⁺y of the first three.
  Resuming with another validation protocol restarts the best (the old one: ``best-step<N>``);
- ``loss.json``/``loss.png`` and ``val.json``/``val.png``.

Nothing here parses options: the CLI builds a :class:`TrainConfig`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import DmirError, InputError, ParameterError
from .models import ddpm_unet
from .checkpoints.reading import write_safetensors
from .log import get_logger
from .train_steps import (STATE_VERSION, Distributed, TrainingError,  # noqa: F401
                          TrainingInterrupted, _StopAtStepEnd, _pack_optimizer,
                          _unpack_optimizer, draw_samples, load_state, loss_weight,
                          parse_weighting, progress_bar, resume_validation, save_state,
                          validation_protocol)
from .prior_eval import (SCORED_TASKS, evaluate_prior, load_validation_set,  # noqa: F401
                         read_rgb_uint8, validation_tasks)

_log = get_logger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
PREDICTIONS = ("epsilon", "v_prediction")
STATE_FILE = "state.safetensors"
#: settings a resumed run must share with the stored state (anything else may change)
RESUME_FIXED = ("data", "crop", "batch", "lr", "warmup", "ema_rate", "grad_clip", "dropout",
                "seed", "max_images", "prediction", "init", "weighting", "timesteps",
                "ema_warmup")


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored in the state and the model's config)."""

    data: list = field(default_factory=list)   # image folders (searched recursively)
    out_dir: str = "dmir-train"
    crop: int = 64                 # training crop size (pixels); multiple of 2^(len(ch_mult)-1)
    batch: int = 16
    steps: int = 20000             # optimizer steps in total (a resumed run continues to this)
    lr: float = 2e-4
    warmup: int = 200
    ema_rate: float = 0.999
    # the usual EMA warm-up, rate min(ema_rate, (1+n)/(10+n)): right from a random start; from a
    # trained network (--init) it makes the EMA a ~n/10-step average of fresh Adam steps for
    # thousands of steps (rate 0.999 only at n ≈ 9,000), so warm starts may turn it off
    ema_warmup: bool = True
    grad_clip: float = 1.0
    ch: int = 32
    ch_mult: list = field(default_factory=lambda: [1, 2, 2, 4])
    num_res_blocks: int = 2
    attn_resolutions: list = field(default_factory=list)
    dropout: float = 0.0
    prediction: str = "v_prediction"   # what the network outputs: "v_prediction" or "epsilon"
    weighting: str = "uniform"     # loss weighting over t (see loss_weight)
    seed: int = 0
    save_every: int = 250
    log_every: int = 25
    device: str = "cpu"
    amp: bool = True               # bf16 autocast (CUDA and CPU); float32 master weights
    max_images: int | None = None  # use only the first N images (sorted), e.g. for smoke tests
    init: str | None = None        # warm start from this model (folder or built-in name)
    state_dir: str | None = None   # where the training state lives (default: the cache)
    val: list = field(default_factory=list)   # held-out folders for validation (never trained on)
    val_every: int = 500
    val_images: int = 2            # first N images of each validation folder
    val_size: int = 128            # centre crop size of the validation images
    val_steps: int = 20
    # a timestep expert (eDiff-I; dmir.models.experts): train only on t in [start, stop) and
    # validate together with ``val_base``, the model serving the other timesteps
    timesteps: list | None = None
    val_base: str | None = None

    def model_config(self) -> dict:
        return ddpm_unet.full_config({
            "ch": self.ch, "ch_mult": list(self.ch_mult), "num_res_blocks": self.num_res_blocks,
            "attn_resolutions": list(self.attn_resolutions), "dropout": self.dropout,
            "image_size": self.crop, "ema_rate": self.ema_rate, "resamp_with_conv": True,
            "prediction": self.prediction})

    def resolved_state_dir(self) -> str:
        """``state_dir``, or ``<cache>/train/<name>-<hash of the absolute out_dir>``."""
        if self.state_dir:
            return os.fspath(self.state_dir)
        from .checkpoints.registry import download_dir

        out = os.path.abspath(os.fspath(self.out_dir))
        tag = hashlib.sha256(out.encode("utf-8", "surrogateescape")).hexdigest()[:10]
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in os.path.basename(out))
        return os.path.join(download_dir(), "train", f"{name or 'run'}-{tag}")

    def fixed_settings(self) -> dict:
        """The settings a resume must keep (folders as absolute paths)."""
        d = {k: getattr(self, k) for k in RESUME_FIXED}
        d["data"] = [os.path.abspath(os.fspath(p)) for p in self.data]
        return d

    def validate(self) -> None:
        if not self.data:
            raise ParameterError("training needs at least one image folder")
        for k in ("crop", "batch", "steps", "save_every", "log_every", "warmup", "val_every",
                  "val_images", "val_size", "val_steps"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if k == "warmup" else 1):
                raise ParameterError(f"{k} must be a {'non-negative' if k == 'warmup' else 'positive'}"
                                     f" integer, got {v!r}")
        if self.batch > 4096 or self.crop > 4096:
            raise ParameterError(f"batch ({self.batch}) and crop ({self.crop}) must be ≤ 4096")
        for k in ("lr", "ema_rate", "grad_clip", "dropout"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ParameterError(f"{k} must be a finite number, got {v!r}")
        if not 0.0 < self.ema_rate < 1.0:
            raise ParameterError(f"ema_rate must be in (0, 1), got {self.ema_rate!r}")
        if not 0 < self.lr <= 1.0:
            raise ParameterError(f"lr must be in (0, 1], got {self.lr!r}")
        if not self.grad_clip > 0:
            raise ParameterError(f"grad_clip must be positive, got {self.grad_clip!r}")
        if self.prediction not in PREDICTIONS:
            raise ParameterError(f"prediction must be one of {', '.join(PREDICTIONS)}, "
                                 f"got {self.prediction!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or \
                not 0 <= self.seed < 2 ** 63:
            raise ParameterError(f"seed must be an integer in [0, 2^63), got {self.seed!r}")
        parse_weighting(self.weighting)
        mult = 2 ** (len(self.ch_mult) - 1)
        if self.crop % mult:
            raise ParameterError(f"crop ({self.crop}) must be a multiple of {mult} "
                                 f"(2^(len(ch_mult)-1) for ch_mult={list(self.ch_mult)})")
        levels = [self.crop // 2 ** i for i in range(len(self.ch_mult))]
        bad = [r for r in self.attn_resolutions if r not in levels]
        if bad:
            raise ParameterError(f"attention resolution(s) {bad} never occur: with crop "
                                 f"{self.crop} and {len(self.ch_mult)} levels the feature maps "
                                 f"are {levels}")
        if self.val_size % mult:
            raise ParameterError(f"val_size ({self.val_size}) must be a multiple of {mult}")
        if self.timesteps is not None:
            ts = self.timesteps
            if not isinstance(ts, (list, tuple)) or len(ts) != 2 or \
                    any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in ts) \
                    or not 0 <= ts[0] < ts[1] <= 1000:
                raise ParameterError(f"timesteps must be START:STOP with 0 <= START < STOP <= "
                                     f"1000 (a half-open range of the schedule), got {ts!r}")
            self.timesteps = [int(ts[0]), int(ts[1])]
            if self.val and not self.val_base and tuple(self.timesteps) != (0, 1000):
                raise ParameterError("validating a timestep expert (--timesteps) needs "
                                     "--val-base MODEL, the prior that serves the other "
                                     "timesteps")
        elif self.val_base:
            raise ParameterError("--val-base applies to timestep experts (--timesteps) only")
        self.model_config()   # validates the architecture fields


def find_images(folders, max_images: int | None = None) -> list[str]:
    """Image files under ``folders`` (recursive, sorted by path, each real file once), listed
    by :func:`dmir.data.datasets.find_images` (links followed, every folder entered once)."""
    from .data.datasets import find_images as listing

    files, seen = [], set()
    for d in folders:
        if not os.path.isdir(d):
            raise InputError(f"training data folder '{d}' does not exist or is not a folder")
        for rel in listing(d, IMAGE_SUFFIXES):
            p = os.path.join(d, rel)
            key = os.path.realpath(p)
            if key not in seen:
                seen.add(key)
                files.append(p)
    files.sort()
    if max_images is not None:
        files = files[:max_images]
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under "
                         f"{', '.join(map(str, folders))}")
    return files


class CropSampler:
    """Random crops (with horizontal flips) of images held in memory as uint8 (H, W, 3).

    Unreadable files are skipped (listed in :attr:`skipped`); none readable is an error.
    """

    def __init__(self, files, crop: int):
        self.crop = crop
        self.images, self.skipped = [], []
        for f in files:
            try:
                a = read_rgb_uint8(f)
            except DmirError as e:
                self.skipped.append((f, str(e)))
                continue
            if min(a.shape[:2]) < crop:   # too small: upscale the short side to the crop size
                s = crop / min(a.shape[:2])
                size = (max(crop, round(a.shape[0] * s)), max(crop, round(a.shape[1] * s)))
                a = torch.nn.functional.interpolate(
                    a.permute(2, 0, 1)[None].float(), size=size, mode="bicubic",
                    align_corners=False)[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
            self.images.append(a.contiguous())
        if not self.images:
            raise InputError(f"none of the {len(files)} image file(s) could be read; first "
                             f"error: {self.skipped[0][1]}")
        # sample images proportionally to their area so every pixel is equally likely
        areas = torch.tensor([float(a.shape[0] * a.shape[1]) for a in self.images])
        self.weights = areas / areas.sum()

    def __len__(self):
        return len(self.images)

    def sample(self, generator: torch.Generator) -> torch.Tensor:
        """One crop (3, crop, crop) float32 in [-1, 1]: an image drawn in proportion to its
        area, a uniform position, a horizontal flip with probability ½."""
        i = int(torch.multinomial(self.weights, 1, generator=generator))
        a = self.images[i]
        H, W = a.shape[:2]
        r = int(torch.randint(0, H - self.crop + 1, (1,), generator=generator))
        c = int(torch.randint(0, W - self.crop + 1, (1,), generator=generator))
        p = a[r:r + self.crop, c:c + self.crop].permute(2, 0, 1).float()
        if torch.rand((), generator=generator) < 0.5:
            p = p.flip(-1)
        return p / 127.5 - 1.0

    def batch(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, 3, crop, crop) float32 in [-1, 1], n crops from one generator."""
        return torch.stack([self.sample(generator) for _ in range(n)])


# ---------------------------------------------------------------------------------- export
def export_model(ema_state: dict, cfg: TrainConfig, out: str, step: int, loss: float | None,
                 extra: dict | None = None):
    """Write the EMA weights as a dmir model folder (``config.json`` + ``model.safetensors``)."""
    from .io import atomic_write

    os.makedirs(out, exist_ok=True)
    write_safetensors({k: v.float() for k, v in ema_state.items()},
                      os.path.join(out, "model.safetensors"),
                      metadata={"format": "ddpm", "step": str(step)})
    meta = {"format": "ddpm", "config": cfg.model_config(),
            "training": {**dataclasses.asdict(cfg), "step": step, "final_loss": loss,
                         **(extra or {})}}
    atomic_write(os.path.join(out, "config.json"), json.dumps(meta, indent=1).encode())


def _init_weights(init: str, net: torch.nn.Module, mcfg: dict, log) -> None:
    """Copy the weights of model ``init`` (same architecture) into ``net``."""
    from .models import load

    m = load(init)
    src = getattr(m, "net", None)
    icfg = (getattr(m, "info", {}) or {}).get("config") or {}
    arch = ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "in_channels", "out_ch",
            "resamp_with_conv", "type")
    if src is None or (getattr(m, "info", {}) or {}).get("format") != "ddpm" or \
            any(icfg.get(k) != mcfg[k] for k in arch):
        raise ParameterError(f"init model {init!r} is not a DDPM UNet with this architecture "
                             f"({', '.join(f'{k}={mcfg[k]}' for k in arch[:4])})")
    net.load_state_dict(src.state_dict())
    if icfg.get("prediction", "epsilon") != mcfg["prediction"]:
        log(f"warm start from {init} ({icfg.get('prediction', 'epsilon')}) into a "
            f"{mcfg['prediction']} network: the features are reused, the output adapts")
    else:
        log(f"warm start from {init}")


def train(cfg: TrainConfig, progress: bool = True, log=None) -> str:
    """Run (or resume) training; returns the path of the exported (latest EMA) model folder.

    ``log(msg)``: where the progress notes go (default: the ``dmir.train`` logger, INFO).
    ``progress``: a tqdm bar (for a terminal); False: a plain line through ``log`` every few
    minutes instead (step, loss, steps/min: :class:`~dmir.train_steps.ProgressLines`).

    SIGINT (Ctrl-C) and SIGTERM stop the run at the end of the current step, save the state and
    raise :class:`TrainingInterrupted` (a KeyboardInterrupt), so rerunning resumes bit-exactly; a
    second signal stops at once, keeping the last save. A second run on the same state is
    refused with :class:`TrainingError` while the first holds it. Raises :class:`TrainingError` when the loss becomes NaN/Inf (the last saved state is kept).
    """
    if log is None:
        log = _log.info
    cfg.validate()
    mcfg = cfg.model_config()
    dist = Distributed(cfg.device)      # torchrun: one process per device, rank 0 writes
    try:
        return _train(cfg, progress, log, mcfg, dist)
    finally:
        dist.close()


def _train(cfg: TrainConfig, progress: bool, log, mcfg: dict, dist: Distributed) -> str:
    device = dist.device(cfg.device)
    local = dist.local_indices(cfg.batch)
    if not dist.main:
        log = (lambda m: None)
    # read the data before anything is created on disk: an input error leaves nothing behind
    files = find_images(cfg.data, cfg.max_images)
    data = CropSampler(files, cfg.crop)
    val_names: list[str] = []
    val_x = None
    if cfg.val:
        val_names, val_x = load_validation_set(cfg.val, cfg.val_images, cfg.val_size)
    val_base = None
    if val_x is not None and cfg.val_base and dist.main:
        from .models import load

        val_base = load(cfg.val_base)
    state_dir = cfg.resolved_state_dir()
    state_path = os.path.join(state_dir, STATE_FILE)
    # one run per state: a second run on the same state is refused (the OS drops the lock when
    # the process ends, however it ends)
    from .lock import FolderInUse, RunLock

    lock = RunLock(state_dir, STATE_FILE)
    error: Exception | None = None
    if dist.main:
        try:
            lock.acquire()
        except FolderInUse as e:
            error = TrainingError(f"the training state {state_dir} is in use by another dmir "
                                  f"train (pid {e.pid or 'unknown'}); wait for it to stop, or use "
                                  f"another output folder (or --state)")
        except OSError as e:
            error = TrainingError(f"cannot create the training state folder {state_dir} "
                                  f"({e.strerror or e}); set DMIR_HOME to a writable folder or "
                                  f"pass --state")
    if not dist.agree(error is None):
        raise error or TrainingError("training stopped: the main process (rank 0) could not "
                                     "take the training state (see its message)")
    try:
        with _StopAtStepEnd() as stop:      # from here on SIGINT/SIGTERM stop between steps
            return _train_locked(cfg, progress, log, data, val_names, val_x, state_dir,
                                 state_path, mcfg, device, dist, local, stop, val_base)
    finally:
        lock.release()


def _train_locked(cfg, progress, log, data, val_names, val_x, state_dir, state_path,
                  mcfg, device, dist, local, stop, val_base=None) -> str:
    from .plot import line_plot

    stored = load_state(state_path) if os.path.exists(state_path) else None
    if stored is not None:
        old = {"weighting": "uniform", "timesteps": None,       # states from before these
               "ema_warmup": True, **stored[1]["fixed"]}
        new = cfg.fixed_settings()
        diff = [k for k in RESUME_FIXED if old.get(k) != new.get(k)]
        if diff:
            raise ParameterError(
                f"{state_path} was trained with other settings ("
                + ", ".join(f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in diff)
                + "); use the same settings to resume, or a new output folder (or --state)")
        if stored[1]["model_config"] != mcfg:
            raise ParameterError(f"{state_path} was trained with another architecture; use a "
                                 f"new output folder or the same settings")

    with torch.random.fork_rng(devices=[]):     # seeded initialisation, global RNG untouched
        torch.manual_seed(cfg.seed)
        net = ddpm_unet.build(mcfg).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    ab = ddpm_unet.schedule(mcfg).to(device=device, dtype=torch.float32)
    T = ab.shape[0]
    step, history, val_hist, best = 0, [], [], None
    protocol = validation_protocol(dataclasses.asdict(cfg))    # what makes scores comparable
    acc, n_acc, cpu_s = 0.0, 0, 0.0       # cpu_s: CPU-seconds of all processes (and threads)
    if stored is not None:
        tensors, meta = stored
        net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        ema = {k[4:]: v.to(device).clone() for k, v in tensors.items() if k.startswith("ema.")}
        opt.load_state_dict(_unpack_optimizer(tensors, meta["param_groups"]))
        step, history, val_hist, best = meta["step"], meta["history"], meta["val"], meta["best"]
        if dist.main:
            best = resume_validation(val_hist, best, meta.get("train_config", {}), protocol,
                                     cfg.out_dir, log)
        acc, n_acc, cpu_s = meta["acc"], meta["n_acc"], meta.get("cpu_s", 0.0)
        log(f"resuming from step {step} ({state_path})")
    else:
        if cfg.init:
            _init_weights(cfg.init, net, mcfg, log)
        ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    error = None
    if dist.main:
        try:
            os.makedirs(cfg.out_dir, exist_ok=True)
        except OSError as e:
            error = TrainingError(f"cannot create the output folder {cfg.out_dir} "
                                  f"({e.strerror or e})")
    if not dist.agree(error is None):
        raise error or TrainingError("training stopped: the main process (rank 0) could not "
                                     "create the output folder")
    weight = loss_weight(cfg.weighting, ab, cfg.prediction).to(device)
    if data.skipped:
        log(f"skipped {len(data.skipped)} unreadable image(s), e.g. {data.skipped[0][1]}")
    amp = cfg.amp and device.type in ("cuda", "cpu")
    log(f"training on {len(data)} images, {cfg.crop}x{cfg.crop} crops, batch {cfg.batch}, "
        f"{sum(p.numel() for p in net.parameters()):,} parameters, {cfg.prediction}, "
        f"device {device}{', bf16 autocast' if amp else ''}"
        f"{f', {dist.world} processes' if dist.world > 1 else ''}; state in {state_dir}")

    def ema_net():
        m = ddpm_unet.build(mcfg)
        m.load_state_dict({k: v.cpu() for k, v in ema.items()})
        return m.eval()

    def run_validation():
        nonlocal best
        prior = ddpm_unet.prior(ema_net(), mcfg, name="ema")
        if val_base is not None:               # a timestep expert, with the rest from the base
            from .models.experts import around

            prior = around(prior, val_base, cfg.timesteps)
        r = evaluate_prior(prior, val_x, steps=cfg.val_steps, seed=cfg.seed)
        val_hist.append({"step": step, "cpu_hours": round(cpu_s / 3600, 6), **r,
                         "protocol": protocol})
        log(f"step {step} ({cpu_s / 3600:.2f} CPU-h): held-out gain over A⁺y " + ", ".join(
            f"{k} {r[k]['gain']:+.2f} dB" for k in r if k != "score") + f" (score {r['score']:+.3f})")
        if best is None or r["score"] > best["score"]:
            best = {"step": step, "score": r["score"], "protocol": protocol}
            export_model(ema, cfg, os.path.join(cfg.out_dir, "best"), step,
                         history[-1][1] if history else None,
                         extra={"validation": r, "validation_images": val_names})

    def save():
        from .io import atomic_write

        tensors = {f"model.{k}": v.detach().cpu() for k, v in net.state_dict().items()}
        tensors.update({f"ema.{k}": v.detach().cpu() for k, v in ema.items()})
        ot, groups = _pack_optimizer(opt)
        tensors.update({k: v.cpu() for k, v in ot.items()})
        meta = {"version": STATE_VERSION, "step": step, "history": history, "val": val_hist,
                "best": best, "acc": acc, "n_acc": n_acc, "cpu_s": cpu_s,
                "param_groups": groups,
                "model_config": mcfg, "fixed": cfg.fixed_settings(),
                "train_config": dataclasses.asdict(cfg)}
        save_state(state_path, tensors, meta)
        last = history[-1][1] if history else None
        export_model(ema, cfg, os.path.join(cfg.out_dir, "model"), step, last)
        if history:
            atomic_write(os.path.join(cfg.out_dir, "loss.json"), json.dumps(history).encode())
            line_plot({"loss": history}, os.path.join(cfg.out_dir, "loss.png"),
                      xlabel="step", ylabel=f"mean {'v' if cfg.prediction != 'epsilon' else 'ε'}-MSE",
                      logy=True, title=f"dmir train: {cfg.crop}px crops, batch {cfg.batch}")
        if val_hist:
            atomic_write(os.path.join(cfg.out_dir, "val.json"),
                         json.dumps(val_hist, indent=1).encode())
            now = [v for v in val_hist if v["protocol"] == protocol]   # comparable scores
            curves = {k: [(v["step"], v[k]["gain"]) for v in now] for k in now[-1]
                      if isinstance(now[-1][k], dict) and "gain" in now[-1][k]}
            line_plot(curves, os.path.join(cfg.out_dir, "val.png"), xlabel="step",
                      ylabel="held-out PSNR gain over A⁺y (dB)", title="dmir train: validation")

    clock = time.process_time()     # CPU time of this process, validation included
    if val_x is not None and dist.main and (not val_hist or val_hist[-1]["protocol"] != protocol):
        run_validation()            # the starting point of the curve (under this protocol)
    net.train()
    model = dist.wrap(net)          # DistributedDataParallel: gradients averaged over processes
    bar = progress_bar(cfg.steps, step, progress, log, dist.main)
    running = None
    t0 = time.time()
    saved_at = step if stored is not None else None
    if not dist.agree(stop.signum is None):          # signalled while setting up
        bar.close()
        raise TrainingInterrupted(f"stopped before step {step + 1}; nothing new to save"
                                  + (f" (the state of step {step} is in {state_dir})"
                                     if stored is not None else ""))
    try:
        while step < cfg.steps:
            # this process's share of the global batch, each sample from its own stream
            x0, t, eps = draw_samples(data, T, cfg.seed, step + 1, local,
                                      tuple(cfg.timesteps) if cfg.timesteps else None)
            x0, t, eps = x0.to(device), t.to(device), eps.to(device)
            a = ab[t].view(-1, 1, 1, 1)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
            # the regression target: ε, or v = √ᾱ ε − √(1−ᾱ) x₀ (Salimans & Ho 2022, eq. 5 ff.)
            target = eps if cfg.prediction == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                pred = model(xt, t.float())
            per = (pred.float() - target).pow(2).mean(dim=(1, 2, 3))
            loss = (per * weight[t]).mean()
            # one collective per step: the global mean loss and whether any process was
            # signalled, so all processes stop (or fail) at the same step
            # (and this step's CPU-seconds, summed over the processes)
            now = time.process_time()
            li, stopping, used = dist.sum([loss.item(), float(stop.signum is not None),
                                           now - clock])
            li, stopping, clock = li / dist.world, stopping > 0, now
            cpu_s += used
            if not math.isfinite(li):
                kept = (f"the state of step {saved_at} is kept in {state_dir}"
                        if saved_at is not None else "no state was saved")
                raise TrainingError(
                    f"training diverged at step {step + 1} (loss {li}) with lr "
                    f"{cfg.lr}; {kept}; start again with a lower --lr (and a new output folder)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            for g in opt.param_groups:
                g["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
            opt.step()
            step += 1
            # EMA with the usual warm-up min(rate, (1+n)/(10+n)) so early averages move
            rate = min(cfg.ema_rate, (1 + step) / (10 + step)) if cfg.ema_warmup else \
                cfg.ema_rate
            with torch.no_grad():
                for k, v in net.state_dict().items():
                    if v.dtype.is_floating_point:
                        ema[k].mul_(rate).add_(v, alpha=1 - rate)
                    else:
                        ema[k].copy_(v)
            acc, n_acc = acc + li, n_acc + 1
            running = li if running is None else 0.98 * running + 0.02 * li
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}")
            if n_acc == cfg.log_every:
                history.append((step, acc / n_acc))
                acc, n_acc = 0.0, 0
            if val_x is not None and step % cfg.val_every == 0 and dist.main:
                run_validation()
            if step % cfg.save_every == 0 or step == cfg.steps:
                if dist.main:
                    save()
                saved_at = step
            if stopping:                     # SIGINT/SIGTERM arrived (on some process)
                if saved_at != step and dist.main:
                    save()
                bar.close()
                import signal as _signal

                name = _signal.Signals(stop.signum).name if stop.signum else "signal"
                msg = (f"{name}: stopped at step {step}; state saved in {state_dir} "
                       f"(rerun the same command to resume)")
                raise TrainingInterrupted(msg)
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt:
        bar.close()
        kept = (f"the state of step {saved_at} is kept in {state_dir} (rerun to resume)"
                if saved_at is not None else "no state was saved")
        raise TrainingInterrupted(f"interrupted twice: stopped at once in step {step + 1}; "
                                  f"{kept}") from None
    bar.close()
    if dist.main and not os.path.exists(os.path.join(cfg.out_dir, "model", "model.safetensors")):
        save()
    log(f"done: {step} steps ({time.time() - t0:.0f} s this run); model in "
        f"{os.path.join(cfg.out_dir, 'model')}")
    return os.path.join(cfg.out_dir, "model")


__all__ = ["TrainConfig", "TrainingError", "TrainingInterrupted", "loss_weight", "train", "find_images", "CropSampler",
           "export_model", "evaluate_prior", "load_validation_set",
           "save_state", "load_state"]
