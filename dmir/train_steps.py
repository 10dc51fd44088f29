"""The mechanics of one training step that :mod:`dmir.train` shares between one process and
many: the loss weighting over noise levels, the per-sample random streams that make a run
independent of the number of processes, torch.distributed set-up, and stopping at a step
boundary on SIGINT/SIGTERM; the training state file (tensors + JSON, no pickle).

Per-sample streams: sample ``i`` of the global batch of step ``s`` draws its image, crop, flip,
timestep and noise from its own generator seeded by a hash of (seed, s, i). Under ``torchrun``
with P processes, rank r draws the samples r·B/P … (r+1)·B/P − 1 of the global batch B, so the
data of every step, and hence the model, do not depend on P (beyond float rounding of the
gradient all-reduce), and a run can resume with another number of processes.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time

import torch

from .checkpoints.reading import write_safetensors
from .errors import DmirError, ParameterError

STATE_VERSION = 1

#: loss weightings (see :func:`loss_weight`); ``name:value`` sets the parameter
WEIGHTINGS = {"uniform": None, "min-snr": 5.0, "trunc-snr": 10.0}


class TrainingError(DmirError):
    """Training cannot go on (diverged, or its stored state is unusable)."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped training at a step boundary; the state of that step was saved
    (``str(e)`` says where), so rerunning the same command continues it bit-exactly."""


def parse_weighting(spec: str) -> tuple[str, float | None]:
    """``"uniform"``, ``"min-snr[:γ]"`` or ``"trunc-snr[:cap]"`` → (name, parameter)."""
    name, _, val = str(spec).partition(":")
    if name not in WEIGHTINGS or (name == "uniform" and val):
        raise ParameterError(f"weighting must be uniform, min-snr[:GAMMA] or trunc-snr[:CAP], "
                             f"got {spec!r}")
    if not val:
        return name, WEIGHTINGS[name]
    try:
        v = float(val)
    except ValueError:
        v = float("nan")
    if not (math.isfinite(v) and 0 < v <= 1e6):
        raise ParameterError(f"the parameter of weighting {name} must be a number in (0, 1e6], "
                             f"got {val!r}")
    return name, v


def loss_weight(spec: str, alphas_cumprod: torch.Tensor, prediction: str) -> torch.Tensor:
    """Per-timestep multiplier (T,) of the native loss (ε- or v-MSE).

    With SNR_t = ᾱ_t / (1 − ᾱ_t), the ε-MSE is SNR·‖x₀ − x̂₀‖² and the v-MSE (SNR + 1)·‖x₀ − x̂₀‖²
    (Salimans & Ho 2022, §4). The weightings set the weight λ_t of the x₀ error:

    - ``uniform``: the native loss (λ = SNR for ε, SNR + 1 for v);
    - ``min-snr:γ`` (Hang et al. 2023, eq. 10): λ = min(SNR, γ); for ε the low-noise steps,
      which a restoration's range space already fixes, count less;
    - ``trunc-snr:c`` (Salimans & Ho's "truncated SNR", λ = max(SNR, 1)), the multiplier capped
      at ``c``: for ε the high-noise steps, whose x̂₀ = (x_t − √(1−ᾱ) ε̂)/√ᾱ amplifies every
      ε error by 1/√SNR, count up to ``c`` times more. This is what colorization and
      deterministic (η = 0) sampling need: their null-space content is decided at high noise.
    """
    name, val = parse_weighting(spec)
    ab = alphas_cumprod.double()
    snr = ab / (1 - ab)
    native = snr if prediction == "epsilon" else snr + 1
    if name == "uniform":
        w = torch.ones_like(snr)
    elif name == "min-snr":
        w = snr.clamp(max=val) / native
    else:
        w = (snr.clamp(min=1.0) / native).clamp(max=val)
    return w.float()


class _StopAtStepEnd:
    """While active, SIGINT and SIGTERM only set :attr:`signum`; the training loop checks it
    between steps, saves and stops, so a stop never splits a step. A second signal raises
    KeyboardInterrupt at once (the last periodic save is then what remains). Outside the main
    thread, where Python cannot install handlers, signals keep their default behaviour."""

    def __init__(self):
        self.signum = None
        self._old: dict = {}

    def _handler(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        import signal

        for s, h in self._old.items():
            signal.signal(s, h)
        return False


#: seconds of wall time between two plain progress lines (:class:`ProgressLines`)
PROGRESS_EVERY_S = 300.0


class ProgressLines:
    """Progress of a run whose stderr is no terminal (a background job writing a log file): in
    place of a bar, one line ``step N/M: loss L, R steps/min over the last X min`` through
    ``log`` at most every ``every_s`` seconds (the rate counts wall time, validation and saves
    included), so the step rate and loss of a background run can be read in its log. It has
    the interface of the tqdm bar it replaces (``update``, ``set_postfix(loss=…)``, ``close``)."""

    def __init__(self, log, total: int, initial: int, every_s: float | None = None,
                 clock=time.monotonic):
        self.log, self.total, self.step, self.clock = log, total, initial, clock
        self.every = PROGRESS_EVERY_S if every_s is None else every_s
        self._t, self._step = clock(), initial

    def update(self, n: int = 1) -> None:
        self.step += n

    def set_postfix(self, loss=None, **_) -> None:
        now = self.clock()
        dt = now - self._t
        if dt >= self.every and dt > 0 and self.step > self._step:
            self.log(f"step {self.step:,}/{self.total:,}: loss {loss}, "
                     f"{(self.step - self._step) * 60 / dt:.1f} steps/min over the last "
                     f"{dt / 60:.1f} min")
            self._t, self._step = now, self.step

    def close(self) -> None:
        pass


def progress_bar(total: int, initial: int, terminal: bool, log, main: bool = True):
    """A tqdm bar when ``terminal``, :class:`ProgressLines` through ``log`` otherwise; nothing
    on the processes other than rank 0."""
    from tqdm import tqdm

    if main and not terminal:
        return ProgressLines(log, total, initial)
    return tqdm(total=total, initial=initial, disable=not main, dynamic_ncols=True, desc="train")


def sample_generator(seed: int, step: int, index: int) -> torch.Generator:
    """The generator of sample ``index`` (global, 0-based) of optimizer step ``step`` (1-based)."""
    h = hashlib.blake2b(f"dmir-train/{seed}/{step}/{index}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(h, "little") & (2 ** 63 - 1))


def draw_samples(data, num_timesteps: int, seed: int, step: int, indices,
                 timesteps: tuple[int, int] | None = None) -> tuple:
    """(x₀, t, ε) for the given global sample indices of step ``step``: x₀ (n, 3, c, c) in
    [-1, 1] from ``data.sample(generator)``, t (n,) int64 uniform in 0..T−1 (or in the
    half-open range ``timesteps`` = (start, stop) of a timestep expert), ε (n, 3, c, c)."""
    lo, hi = timesteps if timesteps is not None else (0, num_timesteps)
    xs, ts, es = [], [], []
    for i in indices:
        g = sample_generator(seed, step, i)
        x = data.sample(g)
        xs.append(x)
        ts.append(int(torch.randint(lo, hi, (1,), generator=g)))
        es.append(torch.randn(x.shape, generator=g))
    return torch.stack(xs), torch.tensor(ts, dtype=torch.int64), torch.stack(es)


class Distributed:
    """torch.distributed for ``dmir train`` under ``torchrun`` (``WORLD_SIZE`` > 1): NCCL on CUDA,
    gloo on the CPU; one process (rank 0, :attr:`main`) writes state, EMA and validation. With
    one process every method is a no-op."""

    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        self.rank, self.local_rank, self.owned = 0, 0, False
        self.coll = torch.device("cpu")        # where collective tensors live (gloo: CPU)
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_available():
                raise ParameterError("this torch build has no torch.distributed; run one process")
            if not dist.is_initialized():
                dist.init_process_group("nccl" if device == "cuda" else "gloo")
                self.owned = True
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            self.local_rank = int(os.environ.get("LOCAL_RANK", self.rank))
            if dist.get_backend() == "nccl":
                self.coll = torch.device("cuda", self.local_rank)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, device: str) -> torch.device:
        if device == "cuda" and self.world > 1:
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return torch.device(device)

    def local_indices(self, batch: int) -> range:
        if batch % self.world:
            raise ParameterError(f"the global batch ({batch}) must be a multiple of the number of "
                                 f"processes ({self.world})")
        n = batch // self.world
        return range(self.rank * n, (self.rank + 1) * n)

    def wrap(self, net: torch.nn.Module) -> torch.nn.Module:
        if self.world == 1:
            return net
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if next(net.parameters()).is_cuda else None
        return DistributedDataParallel(net, device_ids=ids)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the processes (the values themselves with one process)."""
        if self.world == 1:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.coll)
        dist.all_reduce(t)
        return t.tolist()

    def agree(self, ok: bool) -> bool:
        """True when ``ok`` holds on every process (collective)."""
        return self.sum([0.0 if ok else 1.0])[0] == 0.0

    def close(self) -> None:
        if self.owned:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owned = False


# ------------------------------------------------------------------------------- validation
def validation_protocol(settings: dict) -> dict:
    """What a held-out score depends on besides the weights (``settings``: a TrainConfig as a
    dict): the folders (absolute), images per folder, crop size (pixels), sampling steps, the
    base prior of a timestep expert and the seed. Scores compare only within one protocol."""
    return {"folders": [os.path.abspath(os.fspath(p)) for p in settings.get("val") or []],
            "images": settings.get("val_images", 2), "size": settings.get("val_size", 128),
            "steps": settings.get("val_steps", 20), "base": settings.get("val_base"),
            "seed": settings.get("seed", 0)}


def resume_validation(val_hist: list, best: dict | None, stored_settings: dict,
                      protocol: dict, out_dir: str, log) -> dict | None:
    """The best validation a resumed run has to beat. Entries and a best from before protocols
    were recorded get the stored run's (``stored_settings``); when ``protocol`` differs from the
    best's (another --val, --val-images, --val-size, --val-base …), scores of the two cannot be
    compared, so the best restarts under the new protocol: the earlier curve stays in val.json
    (each entry with its protocol) and ``out_dir/best`` moves to ``best-step<N>``. Only the main
    process calls this. Returns the best to keep (``None``: none yet)."""
    old = validation_protocol(stored_settings)
    for entry in val_hist:
        entry.setdefault("protocol", old)
    if best is None:
        return None
    best.setdefault("protocol", old)
    if best["protocol"] == protocol or not protocol["folders"]:   # no --val: nothing compared
        return best
    changed = ", ".join(f"{k} {best['protocol'].get(k)!r} → {protocol[k]!r}" for k in protocol
                        if best["protocol"].get(k) != protocol[k])
    kept = ""
    if os.path.isdir(folder := os.path.join(out_dir, "best")):     # keep the earlier best weights
        kept, n = f"{folder}-step{best['step']}", 0
        while os.path.exists(kept):                                 # never over earlier ones
            n += 1
            kept = f"{folder}-step{best['step']}-{n}"
        os.replace(folder, kept)
    log(f"the validation protocol changed ({changed}): earlier scores (best {best['score']:+.3f}"
        f" at step {best['step']}) are not comparable, so the best restarts under the new one"
        + (f"; its weights are now in {kept}" if kept else ""))
    return None


# ------------------------------------------------------------------------------------ state
def save_state(path: str, tensors: dict, meta: dict) -> None:
    """Tensors plus JSON-able ``meta`` as one safetensors file (atomic; no pickle)."""
    blob = torch.frombuffer(bytearray(json.dumps(meta).encode("utf-8")), dtype=torch.uint8)
    write_safetensors({**tensors, "__json__": blob}, path)


def load_state(path: str) -> tuple[dict, dict]:
    """(tensors, meta) from :func:`save_state`, read without unpickling anything.

    Raises :class:`TrainingError` naming the file when it is truncated, corrupt or not a dmir
    training state.
    """
    from .checkpoints.reading import read_safetensors

    what = (f"training state {path!r} is unusable ({{}}); delete it to start over, or "
            f"point state_dir (--state) elsewhere")
    try:
        t = dict(read_safetensors(path, remedy=None))   # dmir wrote it: nothing to download
        meta = json.loads(bytes(t.pop("__json__").numpy()).decode("utf-8"))
    except DmirError as e:
        raise TrainingError(what.format(e)) from None
    except (KeyError, UnicodeDecodeError, ValueError, TypeError, OSError) as e:
        raise TrainingError(what.format(f"{type(e).__name__}: {e}")) from None
    if not isinstance(meta, dict) or meta.get("version") != STATE_VERSION:
        raise TrainingError(what.format("not a dmir training state of this version"))
    return t, meta


def _pack_optimizer(opt: torch.optim.Optimizer) -> tuple[dict, list]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{idx}.{k}"] = torch.as_tensor(v)
    return tensors, sd["param_groups"]


def _unpack_optimizer(tensors: dict, groups: list) -> dict:
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v.clone()
    return {"state": state, "param_groups": groups}
