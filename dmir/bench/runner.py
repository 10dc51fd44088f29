"""The ``dmir bench`` runner: datasets × tasks × methods (× each dataset's model) → per-image
results (JSON lines), restored PNGs, summaries and plots.

``run(preset, RunOptions(out=...))`` executes a plan (a :class:`~dmir.bench.spec.Preset`: a
paper preset or an ad-hoc one built by the CLI):

1. For each dataset (a folder or a DDNM list, centre-cropped/resized to its size), each task
   and each image of this process's shard, the clean image is degraded once (seeded by the run
   seed, dataset, task and image id — :mod:`dmir.bench.pipeline`), then restored by every
   method (``apy`` = A⁺y) and measured: PSNR, SSIM (Gaussian σ = 1.5 and uniform 7×7), Cons,
   the LPIPS variants the plan names (None with a note when their weights are not set up),
   NFE and wall time. One JSON line per (dataset, task, method, image) is appended to this
   process's results file (:mod:`dmir.bench.results`: one write + fsync per complete line).
2. Resuming: keys already present in any results file of ``out`` are skipped, so a run killed
   at any moment (SIGKILL included) and restarted loses at most the image in flight.
   A key that was computed with different settings (model, steps, seed, size, task or method
   parameters) stops the run with an error instead of mixing results.
3. Processes: ``shard=(i, n)`` takes the images whose dataset position ≡ i (mod n). Under
   ``torchrun`` (``WORLD_SIZE`` > 1) each rank takes its share of that (gloo on the CPU, NCCL on
   GPUs: rank r uses ``cuda:LOCAL_RANK``), writes ``results.part-R-of-N.jsonl``, and rank 0
   merges all files into ``results.jsonl`` after a barrier and writes the summaries
   (:mod:`dmir.bench.summary`).

Methods that dmir does not implement (yet) are never silently skipped: they appear in the
summary as "missing" with the reason; a method that cannot run on a task (e.g. DDRM without an
SVD) records the error on every image and appears as "error: …".
"""
from __future__ import annotations

import copy
import datetime
import json
import os
import sys
from dataclasses import asdict, dataclass, field

import torch

from .. import io as dio
from .. import pipeline, solvers
from ..data import ImageDataset, shard as shard_items
from ..errors import DmirError, InputError, ParameterError
from ..log import get_logger
from ..models.builtin import DEFAULT_MODEL
from . import results as res
from .results import PLAN_FILE, grid_dir, image_file, image_path, safe_name
from .pipeline import (LPIPS_METRICS, PIXEL_METRICS, LpipsBank, check_finite, degrade, measure,
                       on_device, restore, seed_for, task_operator)
from .settings import _param_id, differs, fingerprint, settings  # noqa: F401 - _param_id: old home
from .spec import DatasetSpec, MethodSpec, Preset, TaskSpec

_log = get_logger("dmir.bench")

__all__ = ["RunOptions", "Plan", "make_plan", "run", "safe_name", "image_file", "dist_env",
           "record_order", "DEFAULT_METRICS", "PLAN_FILE"]

#: per-image metrics of an ad-hoc run (a preset names its own; PIXEL_METRICS are always in)
DEFAULT_METRICS = ["psnr", "ssim", "ssim_uniform", "lpips_alex", "cons", "nfe", "time"]
SUMMARY_METRICS = ("fid", "kid")


@dataclass
class RunOptions:
    """How to run a plan (everything that is not the protocol itself)."""

    out: str
    data: dict = field(default_factory=dict)     # dataset name → folder (fills DatasetSpec.path)
    lists: dict = field(default_factory=dict)    # dataset name → DDNM list file
    model: str | None = None      # every dataset's model (else DatasetSpec.model, else
                                  # dmir.models.DEFAULT_MODEL, the prior dmir restore uses)
    models: dict = field(default_factory=dict)   # dataset name → model (wins over `model`)
    steps: int | None = None      # overrides every method's steps
    seed: int | None = None       # None = the preset's seed
    size: int | None = None       # overrides every dataset's size
    crop: str | None = None       # overrides every dataset's crop rule
    limit: int | None = None      # first N images of each dataset
    device: str = "cpu"
    dtype: str | None = None
    batch: int | None = None      # images per sampler call (None: default_batch(device))
    tile: int | None = None       # network priors: tile images larger than this (None: only
    #                               when memory requires it, dmir.models.tiled.plan_tiling)
    fast: bool = True             # network priors: the fast path (dmir.models.fast)
    save_images: bool = False     # restored PNGs under out/images/
    fid: bool = False             # FID per (dataset, task, method) in the summary (saves PNGs)
    kid: bool = False
    grid: int = 4                 # images shown in the comparison grids
    shard: tuple = (0, 1)
    metrics: list | None = None   # per-image metrics (None: the preset's)
    progress: bool | None = None  # progress bars (None: when stderr is a terminal)
    log: object = None            # callable(str) for notes (default: stderr)


@dataclass
class DatasetPlan:
    spec: DatasetSpec
    dataset: ImageDataset | None
    model: str
    missing: str | None = None


@dataclass
class Plan:
    preset: Preset
    datasets: list
    tasks: list
    methods: list                 # [(MethodSpec, None | "missing: reason")]
    metrics: list                 # per-image metrics measured
    seed: int
    steps: int | None
    wanted: list = field(default_factory=list)   # every metric asked for (fid, kid included)


def record_order(plan: dict):
    """Sort key of result records for a stored plan (``plan.json``): plan order of dataset,
    task and method, then the image's dataset position."""
    pos = {k: {x["name"]: i for i, x in enumerate(plan[k])}
           for k in ("datasets", "tasks", "methods")}

    def key(r):
        return (pos["datasets"].get(r.get("dataset"), 1 << 30),
                pos["tasks"].get(r.get("task"), 1 << 30),
                pos["methods"].get(r.get("method"), 1 << 30),
                r.get("index") if isinstance(r.get("index"), int) else 1 << 62,
                str(r.get("image")))
    return key


def _note(opts, msg):
    if opts.log is not None:
        opts.log(msg)
    else:
        _log.info("%s", msg)


# ----------------------------------------------------------------------------- planning
def _method_status(m: MethodSpec) -> str | None:
    if m.method == "apy" or m.method in solvers.names():
        return None
    return (f"missing: method {m.method!r} is not implemented in dmir (available: apy, "
            f"{', '.join(solvers.names())})")


def make_plan(preset: Preset, opts: RunOptions) -> Plan:
    """Resolve a preset against the run options: dataset folders, sizes, models, metrics."""
    names = [d.name for d in preset.datasets]
    for what, mapping in (("--data", opts.data), ("--list", opts.lists),
                          ("--model", opts.models)):
        unknown = sorted(set(mapping) - set(names))
        if unknown:
            raise ParameterError(f"{what}: unknown dataset name(s) {', '.join(unknown)}; the "
                                 f"plan's datasets: {', '.join(names) or 'none'}")
    datasets = []
    for spec in preset.datasets:
        spec = copy.deepcopy(spec)
        if spec.name in opts.data:
            spec.path = opts.data[spec.name]
        if spec.name in opts.lists:
            spec.list_file = opts.lists[spec.name]
        if opts.size is not None:
            spec.size = int(opts.size)
        if opts.crop is not None:
            spec.crop = opts.crop
        if opts.limit is not None:
            spec.limit = min(opts.limit, spec.limit) if spec.limit else opts.limit
        model = opts.models.get(spec.name) or opts.model or spec.model or DEFAULT_MODEL
        spec.model = model
        if spec.path is None:
            datasets.append(DatasetPlan(spec, None, model, f"missing: no images given (--data "
                                                           f"{spec.name}=FOLDER)"))
            continue
        datasets.append(DatasetPlan(spec, ImageDataset.from_spec(spec), model))
    if not any(d.dataset is not None for d in datasets):
        raise InputError(f"no dataset to run: give the images of "
                         f"{' / '.join(names) or 'a dataset'} with --data NAME=FOLDER")
    for what, labels in (("dataset name", names), ("task label", [t.name for t in preset.tasks]),
                         ("method label", [m.name for m in preset.methods])):
        folders: dict[str, str] = {}     # safe_name(label) → label: labels name output folders
        for label in labels:
            other = folders.setdefault(safe_name(label), label)
            if other == label and labels.count(label) > 1:
                raise ParameterError(f"{what} {label!r} is used twice")
            if other != label:
                raise ParameterError(f"{what}s {other!r} and {label!r} would share the folder "
                                     f"{safe_name(label)!r}; rename one (label=...)")
    wanted = list(opts.metrics) if opts.metrics is not None else list(preset.metrics)
    known = set(PIXEL_METRICS) | set(LPIPS_METRICS) | {"nfe", "time"} | set(SUMMARY_METRICS)
    bad = [m for m in wanted if m not in known]
    if bad:
        raise ParameterError(f"unknown metric(s) {', '.join(bad)}; available: "
                             f"{', '.join(sorted(known))}")
    per_image = list(PIXEL_METRICS) + [m for m in LPIPS_METRICS if m in wanted]
    return Plan(preset, datasets, list(preset.tasks),
                [(m, _method_status(m)) for m in preset.methods],
                per_image, int(preset.seed if opts.seed is None else opts.seed), opts.steps,
                wanted)


def _plan_settings(plan: Plan, dp: DatasetPlan, task: TaskSpec, method: MethodSpec) -> dict:
    return settings(dp.spec.size, dp.spec.crop, dp.spec.channels, asdict(task),
                    asdict(method), plan.seed, dp.model, plan.steps)


def _fingerprint(plan: Plan, dp: DatasetPlan, task: TaskSpec, method: MethodSpec) -> str:
    """Hash of every setting that changes a (dataset, task, method) result."""
    return fingerprint(_plan_settings(plan, dp, task, method))


def plan_json(plan: Plan, opts: RunOptions) -> dict:
    """The plan as stored in ``out/plan.json`` (what :mod:`dmir.bench.summary` reads)."""
    p = plan.preset
    return {
        "preset": {"name": p.name, "title": p.title, "protocol": p.protocol, "source": p.source,
                   "metrics": list(plan.wanted), "seed": plan.seed,
                   "protocol_limit": {d.name: d.limit for d in p.datasets},
                   "paper": [{"dataset": k[0], "task": k[1], "method": k[2], "values": v}
                             for k, v in p.paper.items()]},
        "datasets": [dict(asdict(d.spec), n=len(d.dataset) if d.dataset else 0,
                          missing=d.missing, path=d.dataset.root if d.dataset else None,
                          list_file=d.dataset.list_file if d.dataset else d.spec.list_file)
                     for d in plan.datasets],
        "tasks": [json.loads(json.dumps(asdict(t), default=str)) for t in plan.tasks],
        "methods": [dict(asdict(m), status=s) for m, s in plan.methods],
        "run": {"seed": plan.seed, "steps": plan.steps, "device": opts.device,
                "dtype": opts.dtype, "save_images": opts.save_images or opts.fid,
                "fid": opts.fid, "kid": opts.kid, "grid": opts.grid,
                "per_image_metrics": plan.metrics},
    }


# ----------------------------------------------------------------------------- processes
def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the torchrun environment (0, 1, 0 without it)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ParameterError("RANK / WORLD_SIZE / LOCAL_RANK must be integers") from None
    return (rank, world, local) if world > 1 else (0, 1, 0)


class _Dist:
    """torch.distributed for the duration of a run (only when launched by torchrun)."""

    def __init__(self, device: str):
        self.rank, self.world, self.local = dist_env()
        self.device = device
        self.active = False
        if self.world > 1:
            import torch.distributed as dist
            cuda = torch.device(device).type == "cuda"
            if cuda:
                torch.cuda.set_device(self.local)
                self.device = f"cuda:{self.local}"
            if not dist.is_initialized():
                # long timeout: ranks wait for the slowest one at the final barrier
                dist.init_process_group("nccl" if cuda else "gloo",
                                        timeout=datetime.timedelta(days=7))
                self.active = True
            self.cuda = cuda

    def barrier(self):
        if self.world > 1:
            import torch.distributed as dist
            if self.cuda:
                dist.barrier(device_ids=[self.local])
            else:
                dist.barrier()

    def close(self):
        if self.active:
            import torch.distributed as dist
            dist.destroy_process_group()
            self.active = False


# ----------------------------------------------------------------------------- progress
class _Bar:
    def __init__(self, total, desc, enabled):
        self.bar = None
        if enabled and total:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit="img", file=sys.stderr,
                            dynamic_ncols=True, leave=True)
        self.sums = {}

    def update(self, method, psnr):
        if psnr is not None:
            s, n = self.sums.get(method, (0.0, 0))
            self.sums[method] = (s + psnr, n + 1)
        if self.bar is not None:
            self.bar.set_postfix_str(" ".join(f"{m} {s / n:.2f}" for m, (s, n)
                                              in self.sums.items()) + " dB", refresh=False)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- the run
def _load_model(name, opts, device, cache, shape, batch=1):
    """The prior ``name`` ready for ``batch`` images of ``shape`` on ``device``: refused when
    they cannot fit, tiled and on the fast path as :func:`dmir.pipeline.prepare_prior` decides
    (the same rules as ``dmir restore``)."""
    key = (name, tuple(shape), batch)
    if key not in cache:
        if (name, None) not in cache:
            cache.clear()                 # one model in memory at a time
            cache[(name, None)] = pipeline.load_prior(name, opts.dtype,
                                                      note=lambda m: _note(opts, m))
        cache[key] = pipeline.prepare_prior(cache[(name, None)], shape, device,
                                            tile=opts.tile, fast=True if opts.fast else None,
                                            batch=batch,
                                            note=lambda m: _note(opts, m))
    return cache[key]


def default_batch(device) -> int:
    """Images per sampler call when --batch is not given. Batching changes no result (per-image
    seeds); on the CPU it still saves per-call overhead (benchmarks/bench_batch.py: 1.1-1.2× at 4,
    1.3-1.6× at 8 with the shipped prior at 64×64), on a GPU it fills the device."""
    return 8 if torch.device(device).type == "cuda" else 4


def _check_done(plan, done, fps, out):
    """Stop if a finished key was computed with other settings than the plan's, naming the
    settings that differ (from the folder's plan.json, before it is rewritten)."""
    for key, rec in done.items():
        fp = fps.get(key[:3])
        if fp is not None and rec.get("cfg") not in (None, fp):
            d, t, m, _ = key
            dp = next(x for x in plan.datasets if x.spec.name == d)
            task = next(x for x in plan.tasks if x.name == t)
            meth = next(x for x, _ in plan.methods if x.name == m)
            raise InputError(
                f"'{out}' already holds results for {d}/{t}/{m} computed with other settings "
                f"({differs(out, key, rec, _plan_settings(plan, dp, task, meth))}); use a new "
                f"--out folder, or delete those results")


def _save_png(path, x):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    dio.write_image(path, x)


def run(preset: Preset, opts: RunOptions) -> dict:
    """Run ``preset`` with ``opts``; returns {"records": n, "summary": path or None}."""
    si, sn = opts.shard
    if not (sn >= 1 and 0 <= si < sn):
        raise ParameterError(f"--shard must be I/N with 0 ≤ I < N, got {si}/{sn}")
    if opts.device.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError(f"--device {opts.device}: no CUDA device is available here; use "
                             f"--device cpu")
    if opts.grid < 0:
        raise ParameterError(f"--grid must be ≥ 0, got {opts.grid}")
    plan = make_plan(preset, opts)
    out = os.path.abspath(opts.out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output folder '{opts.out}': {e.strerror or e}") from None
    dist = _Dist(opts.device)
    lock = None
    try:
        device = dist.device
        idx, cnt = si * dist.world + dist.rank, sn * dist.world
        # one appender per results file: a second run on this file is refused (holder's pid)
        lock = res.RunLock(out, res.part_name(idx, cnt))
        lock.acquire(wait=2.0)       # (a shard's merge holds results.jsonl for a moment)
        for dp in plan.datasets:
            if dp.missing:
                _note(opts, f"dataset {dp.spec.name}: {dp.missing}")
        for m, status in plan.methods:
            if status:
                _note(opts, f"method {m.name}: {status}")
        fps = {(dp.spec.name, t.name, m.name): _fingerprint(plan, dp, t, m)
               for dp in plan.datasets for t in plan.tasks for m, _ in plan.methods}
        done, bad = res.load(out)
        done = {k: r for k, r in done.items() if "error" not in r}   # errors are retried
        if bad:
            _note(opts, f"ignored {bad} unreadable line(s) in the results files (a write "
                        f"interrupted by a crash)")
        _check_done(plan, done, fps, out)   # before plan.json: a refused resume changes nothing
        if dist.rank == 0:
            res.atomic_write(os.path.join(out, PLAN_FILE),
                             json.dumps(plan_json(plan, opts), indent=1, default=str))
        n = 0
        with res.ResultWriter(os.path.join(out, res.part_name(idx, cnt))) as writer:
            if writer.repaired:
                _note(opts, f"removed a truncated last line ({writer.repaired} bytes) from "
                            f"{os.path.basename(writer.path)}")
            n = _execute(plan, opts, out, device, (idx, cnt), done, fps, writer, dist)
        dist.barrier()
        summary_path = None
        if dist.rank == 0:
            stored = plan_json(plan, opts)
            rows = res.merge(out, record_order(stored), lock=lock,
                             log=lambda m: _note(opts, m))
            from . import summary
            summary_path = summary.write(out, stored, rows, log=opts.log, device=device)
        dist.barrier()
        return {"records": n, "summary": summary_path, "plan": plan}
    finally:
        if lock is not None:
            lock.release()
        dist.close()


def _error_record(base, err):
    r = dict(base)
    r["error"] = " ".join(str(err).split())
    return r


def _execute(plan, opts, out, device, shard, done, fps, writer, dist) -> int:
    runnable = [m for m, s in plan.methods if s is None]
    lpips_bank = LpipsBank(device)
    model_cache: dict = {}
    show = opts.progress if opts.progress is not None else dio.isatty(sys.stderr)
    written = 0
    for dp in plan.datasets:
        ds = dp.dataset
        if ds is None:
            continue
        items = shard_items(ds.items, *shard)
        for task in plan.tasks:
            todo = []
            for it in items:
                ms = [m for m in runnable if (ds.name, task.name, m.name, it.id) not in done]
                if ms:
                    todo.append((it, ms))
            if not todo:
                continue
            desc = f"{ds.name}/{task.name}" + (f" [rank {dist.rank}]" if dist.world > 1 else "")
            bar = _Bar(sum(len(ms) for _, ms in todo), desc, show)
            try:
                written += _run_task(plan, opts, out, device, dp, task, todo, fps, writer,
                                     lpips_bank, model_cache, bar)
            finally:
                bar.close()
    for name, why in lpips_bank.missing.items():
        _note(opts, f"{name} not measured: {why}")
    return written


def _chunks(todo, size):
    """Consecutive groups of at most ``size`` images that need the same methods (resuming can
    leave different methods to do per image)."""
    group = []
    for it, ms in todo:
        if group and (len(group) >= size or [m.name for m in group[0][1]] != [m.name for m in ms]):
            yield group
            group = []
        group.append((it, ms))
    if group:
        yield group


def _run_task(plan, opts, out, device, dp, task, todo, fps, writer, lpips_bank, model_cache,
              bar) -> int:
    ds = dp.dataset
    seed = plan.seed
    op_err = None
    op = per_image = None
    try:
        op, per_image = task_operator(task, ds, None, seed)
    except DmirError as e:
        op_err = e
    op_dev = on_device(op, device) if op is not None else None
    save = opts.save_images or opts.fid
    # a model that cannot be loaded stops the run (it is not a per-image result)
    batch = 1 if per_image else max(1, int(opts.batch or default_batch(device)))
    model = (_load_model(dp.model, opts, device, model_cache, ds.shape, batch)
             if any(m.method != "apy" for _, ms in todo for m in ms) else None)
    written = 0

    def emit(rec, method):
        nonlocal written
        rec = dict(rec, method=method.name, solver=method.method,
                   model=None if method.method == "apy" else dp.model, run_seed=seed,
                   cfg=fps[(ds.name, task.name, method.name)])
        writer.write(rec)
        written += 1
        bar.update(method.name, rec.get("psnr"))

    for group in _chunks(todo, batch):
        ready = []                              # (item, methods, x, y, op, op_dev)
        for it, ms in group:
            base = {"dataset": ds.name, "task": task.name, "image": it.id, "index": it.index}
            err = op_err
            if err is None:
                try:
                    x = ds.load(it)
                    iop, iop_dev = op, op_dev
                    if per_image:
                        iop, _ = task_operator(task, ds, it, seed)
                        iop_dev = on_device(iop, device)
                    y = degrade(iop, x, task.sigma_y,
                                seed_for(seed, ds.name, task.name, it.id, "noise"))
                except DmirError as e:
                    err = e
            if err is not None:
                for m in ms:
                    emit(_error_record(base, err), m)
                continue
            assert iop is not None                  # built above when there was no error
            if it.index < opts.grid:
                gdir = grid_dir(out, ds.name, task.name, it)
                _save_png(os.path.join(gdir, "gt.png"), x)
                _save_png(os.path.join(gdir, "apy.png"), iop.pinv(y))
                # the measurement as an image: y itself, else Aᵀy (inpainting: the kept pixels)
                shown = y if y.dim() == 4 and y.shape[1] in (1, 3) else iop.At(y)
                if shown.dim() == 4 and shown.shape[1] in (1, 3):
                    _save_png(os.path.join(gdir, "input.png"), shown)
            ready.append((it, ms, x, y, iop, iop_dev))
        if not ready:
            continue
        for m in ready[0][1]:
            # images of the same shape go through the sampler together
            by_shape: dict = {}
            for r in ready:
                by_shape.setdefault(tuple(r[3].shape), []).append(r)
            for rows in by_shape.values():
                _restore_rows(plan, opts, out, device, ds, task, m, rows, model, lpips_bank,
                              save, emit)
    return written


def _restore_rows(plan, opts, out, device, ds, task, m, rows, model, lpips_bank, save, emit):
    """Restore the images ``rows`` with method ``m`` in one batch; measure, save, emit."""
    seeds = [seed_for(plan.seed, ds.name, task.name, it.id, "sample") for it, *_ in rows]
    y = torch.cat([r[3] for r in rows])
    recs = [dict({"dataset": ds.name, "task": task.name, "image": it.id, "index": it.index},
                 seed=sd, sigma_y=task.sigma_y, shape=list(x.shape[1:]))
            for (it, _, x, *_), sd in zip(rows, seeds)]
    try:
        xr, info = restore(m, None if m.method == "apy" else model, rows[0][5], y,
                           task.sigma_y, seeds if len(rows) > 1 else seeds[0], device,
                           plan.steps)
    except DmirError as e:
        for rec in recs:
            emit(_error_record(rec, e), m)
        return
    for i, ((it, _, x, yi, iop, _), rec) in enumerate(zip(rows, recs)):
        xi = xr[i:i + 1]
        try:
            check_finite(xi, f"{m.name} on {it.id}")
        except DmirError as e:
            emit(_error_record(rec, e), m)
            continue
        rec.update(measure(xi, x, yi, iop, plan.metrics, lpips_bank))
        rec.update(nfe=info["nfe"], time=info["time"], steps=info["steps"])
        if save:
            _save_png(image_path(out, ds.name, task.name, m.name, it.id), xi)
        if it.index < opts.grid and m.method != "apy":
            _save_png(os.path.join(grid_dir(out, ds.name, task.name, it),
                                   f"m_{safe_name(m.name)}.png"), xi)
        emit(rec, m)
