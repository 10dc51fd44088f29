"""``dmir bench`` command-line options → a plan (:class:`~dmir.bench.spec.Preset`) and
:class:`~dmir.bench.runner.RunOptions`; ``dmir metrics fid DIR1 DIR2``.

Two ways to say what to run:

* ``--preset NAME`` — a paper table from :mod:`dmir.bench.presets` (``--tasks`` / ``--methods``
  choose among its task and method labels; ``--data NAME=FOLDER`` gives each dataset's images).
* ad hoc — ``--data [NAME=]FOLDER`` with ``--task SPEC`` and ``--method SPEC`` (repeatable).
  A SPEC is ``name[,key=value,...]``: ``sr_bicubic,scale=4``, ``inpainting,mask=m.png``,
  ``deblur,kernel=gauss:2``, ``colorization,weights=0.299:0.587:0.114``,
  ``ddnm,steps=20,eta=0.5``; ``label=`` names a row, ``sigma_y=`` sets a task's noise. A⁺y
  (``apy``) is always added as the baseline.
"""
from __future__ import annotations

import dataclasses
import os

from .. import operators
from ..errors import DmirError, InputError, ParameterError
from ..log import get_logger
from .spec import DatasetSpec, MethodSpec, Preset, TaskSpec

__all__ = ["load_preset", "preset_names", "parse_spec", "adhoc_preset", "main", "fid_main"]

_TASK_KEYS = ("sigma_y", "label", "note")
_METHOD_KEYS = ("steps", "eta", "label")


# ----------------------------------------------------------------------------- presets
def _presets_module():
    try:
        from . import presets
    except ModuleNotFoundError as e:
        if e.name in ("dmir.bench.presets", __package__ + ".presets"):
            return None
        raise
    return presets


def preset_names() -> dict:
    """{name: title} of the available presets ({} when none are installed)."""
    p = _presets_module()
    if p is None:
        return {}
    if hasattr(p, "names") and hasattr(p, "get"):
        return {n: getattr(p.get(n), "title", "") for n in p.names()}
    reg = getattr(p, "PRESETS", {}) or {}
    out = {}
    for n, v in reg.items():
        v = v() if callable(v) else v
        out[n] = getattr(v, "title", "")
    return out


def load_preset(name: str) -> Preset:
    p = _presets_module()
    if p is None:
        raise ParameterError("no paper presets are installed (dmir.bench.presets is missing); "
                             "run an ad-hoc plan with --data, --task and --method")
    preset = None
    if hasattr(p, "get"):
        try:
            preset = p.get(name)
        except (KeyError, DmirError):
            preset = None
    else:
        v = (getattr(p, "PRESETS", {}) or {}).get(name)
        preset = v() if callable(v) else v
    if preset is None:
        raise ParameterError(f"unknown preset {name!r}; available: "
                             f"{', '.join(preset_names()) or 'none'}")
    return preset


# ----------------------------------------------------------------------------- specs
def _value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def parse_spec(text: str, what: str) -> tuple[str, dict]:
    """``name,key=value,...`` → (name, {key: value}); numbers are converted, ``weights``
    takes ``:``-separated numbers."""
    parts = [p.strip() for p in text.split(",")]
    name, kv = parts[0], {}
    if not name:
        raise ParameterError(f"--{what} {text!r}: the name is missing (form: "
                             f"name[,key=value,...])")
    for p in parts[1:]:
        if "=" not in p:
            raise ParameterError(f"--{what} {text!r}: {p!r} is not key=value (form: "
                                 f"name[,key=value,...])")
        k, v = (s.strip() for s in p.split("=", 1))
        if k == "weights":
            try:
                kv[k] = [float(w) for w in v.split(":")]
            except ValueError:
                raise ParameterError(f"--{what} {text!r}: weights must be numbers separated by "
                                     f"':' (e.g. weights=0.299:0.587:0.114)") from None
        else:
            kv[k] = _value(v)
    return name, kv


def _unique(label, used):
    base, i = label, 2
    while label in used:
        label = f"{base}_{i}"
        i += 1
    used.add(label)
    return label


def _task(text, sigma_default, used) -> TaskSpec:
    name, kv = parse_spec(text, "task")
    if name not in operators.names():
        raise ParameterError(f"--task {text!r}: unknown task {name!r}; available: "
                             f"{', '.join(operators.names())}")
    allowed, _ = operators.params(name)
    bad = [k for k in kv if k not in allowed and k not in _TASK_KEYS]
    if bad:
        raise ParameterError(f"--task {text!r}: unknown parameter(s) {', '.join(bad)}; "
                             f"{name} takes: {', '.join(allowed) or 'none'} (and sigma_y, label)")
    sigma = kv.pop("sigma_y", sigma_default)
    try:
        sigma = float(sigma)
    except (TypeError, ValueError):
        raise ParameterError(f"--task {text!r}: sigma_y must be a number") from None
    if not 0 <= sigma <= 1:
        raise ParameterError(f"--task {text!r}: sigma_y must be in [0, 1] (pixel units), got "
                             f"{sigma}")
    label = _unique(str(kv.pop("label", name)), used)
    note = str(kv.pop("note", ""))
    return TaskSpec(label, name, kv, sigma, note)


def _method(text, used) -> MethodSpec:
    name, kv = parse_spec(text, "method")
    steps, eta = kv.pop("steps", None), kv.pop("eta", None)
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise ParameterError(f"--method {text!r}: steps must be a positive integer")
    if eta is not None and not isinstance(eta, (int, float)):
        raise ParameterError(f"--method {text!r}: eta must be a number")
    label = _unique(str(kv.pop("label", name)), used)
    return MethodSpec(label, name, steps, None if eta is None else float(eta), kv)


def _named(spec, opt, what, preset, ds_names):
    """``NAME=PATH`` (or a bare PATH when the plan has a single dataset) → (name, path)."""
    name, path = _data_arg(spec)
    if name is None:
        if len(ds_names) != 1:
            raise ParameterError(f"{opt} {spec!r}: {preset or 'the run'} has datasets "
                                 f"{', '.join(ds_names)}; use {opt} NAME={what}")
        name = ds_names[0]
    return name, path


def _data_arg(text):
    if "=" in text:
        name, path = text.split("=", 1)
        if name and os.sep not in name:
            return name, path
    return None, text


def adhoc_preset(a) -> Preset:
    """The plan of an ad-hoc run (no --preset)."""
    if not a.data:
        raise ParameterError("dmir bench needs --preset NAME or --data FOLDER (with --task and "
                             "--method)")
    if not a.task:
        raise ParameterError("an ad-hoc run (no --preset) needs at least one --task SPEC, e.g. "
                             "--task sr_bicubic,scale=4")
    datasets, names = [], set()
    for d in a.data:
        name, path = _data_arg(d)
        name = name or os.path.basename(os.path.normpath(path)) or "data"
        if name in names:
            raise ParameterError(f"--data: two datasets are named {name!r}; name them with "
                                 f"--data NAME=FOLDER")
        names.add(name)
        datasets.append(DatasetSpec(name, path, size=a.size or 256, crop=a.crop or "center"))
    used_t: set = set()
    used_m: set = set()
    tasks = [_task(t, a.sigma_y or 0.0, used_t) for t in a.task]
    methods = [MethodSpec("A+y", "apy")]
    used_m.add("A+y")
    methods += [_method(m, used_m) for m in (a.method or ["ddnm"]) if m != "apy"]
    from .runner import DEFAULT_METRICS
    return Preset(name="adhoc", title="dmir bench", protocol="", datasets=datasets, tasks=tasks,
                  methods=methods, metrics=list(a.metrics or DEFAULT_METRICS),
                  seed=a.seed or 0)


def check_specs(preset: Preset, steps: int | None = None, adhoc: bool = True) -> None:
    """Refuse, before anything runs, method options a solver does not accept (``eta=5``,
    ``steps=0``, an unknown keyword) and ad-hoc task parameters the operator does not accept
    (``scale=0``, a bad kernel spec): each would otherwise turn every row into an error.

    A method is built once with a tiny analytic prior on a probe task (denoising, else SR×2);
    it is refused only when it fails on both with a :class:`DmirError`. Methods dmir does not
    implement are refused in an ad-hoc run (a preset lists them as "missing")."""
    import torch

    from .. import solvers
    from ..models import GaussianPrior
    from ..pipeline import make_operator

    prior = GaussianPrior(torch.zeros(3, 8, 8))
    probes = [operators.build("denoising", shape=(3, 8, 8)),
              operators.build("sr_averagepooling", shape=(3, 8, 8), scale=2)]
    for m in preset.methods:
        if m.method == "apy":
            continue
        if m.method not in solvers.names():
            if adhoc:
                raise ParameterError(f"--method {m.name}: unknown method {m.method!r}; "
                                     f"available: {', '.join(solvers.names())}")
            continue
        err = None
        for op in probes:
            try:
                solvers.build(m.method, prior, op, steps=steps or m.steps, eta=m.eta,
                              **m.kwargs)
                err = None
                break
            except DmirError as e:
                err = err or e
            except Exception:  # noqa: BLE001 - a user's solver may not take the probe
                err = None
                break
        if err is not None:
            with_steps = f" with --steps {steps}" if steps else ""
            raise ParameterError(f"--method {m.name}{with_steps}: {err}") from None
    if not adhoc:
        return
    sizes = sorted({d.size for d in preset.datasets})
    for t in preset.tasks:
        if any(isinstance(v, str) and k == "mask" for k, v in t.params.items()):
            continue              # a mask file or folder: checked with the images it fits
        for size in sizes:
            try:
                make_operator(t.operator, (3, size, size), **t.params)
            except DmirError as e:
                raise ParameterError(f"--task {t.name} at --size {size}: {e}") from None


def _select(items, wanted, what, label=lambda x: x.name, alt=lambda x: None):
    if not wanted:
        return items
    out = []
    for w in wanted:
        hit = [x for x in items if label(x) == w or alt(x) == w]
        if not hit:
            raise ParameterError(f"--{what}: {w!r} is not in the preset; available: "
                                 f"{', '.join(label(x) for x in items)}")
        out += [h for h in hit if h not in out]
    return out


def _shard(text):
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ParameterError(f"--shard must be I/N (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ParameterError(f"--shard I/N needs 0 ≤ I < N, got {text!r}")
    return i, n


def _log(msg):
    get_logger("dmir.bench").info("%s", " ".join(str(msg).split()))


def main(a) -> int:
    """The ``dmir bench`` handler (``a``: the parsed arguments)."""
    from . import results as res
    from . import runner, summary

    if a.list_presets:
        names = preset_names()
        if not names:
            print("no paper presets are installed")
        for n, title in names.items():
            print(f"{n:<24}{title}")
        return 0
    if a.out is None:
        raise ParameterError("--out DIR is required (results, summaries and plots go there)")
    if a.summarize:
        plan = summary.load_plan(a.out)
        rows = res.merge(a.out, runner.record_order(plan), log=_log)
        path = summary.write(a.out, plan, rows, log=_log, device=a.device)
        print(f"wrote {path} ({len(rows)} results)")
        return 0
    if a.preset:
        if a.task or a.method:
            raise ParameterError("--task/--method define an ad-hoc plan; with --preset choose "
                                 "among its labels with --tasks/--methods")
        preset = load_preset(a.preset)
        preset = dataclasses.replace(
            preset,
            tasks=_select(list(preset.tasks), a.tasks, "tasks", alt=lambda t: t.operator),
            methods=_select(list(preset.methods), a.methods, "methods",
                            alt=lambda m: m.method))
        if a.metrics:
            preset = dataclasses.replace(preset, metrics=list(a.metrics))
        if a.seed is not None:
            preset = dataclasses.replace(preset, seed=a.seed)
    else:
        if a.tasks or a.methods:
            raise ParameterError("--tasks/--methods choose among a preset's labels; without "
                                 "--preset use --task SPEC / --method SPEC")
        preset = adhoc_preset(a)
    check_specs(preset, a.steps, adhoc=not a.preset)
    ds_names = [d.name for d in preset.datasets]
    data, lists, models, model = {}, {}, {}, None
    if a.preset:
        for d in a.data or []:
            name, path = _named(d, "--data", "FOLDER", a.preset, ds_names)
            data[name] = path
    for spec in a.list_file or []:
        name, path = _named(spec, "--list-file", "FILE", a.preset, ds_names)
        lists[name] = path
    for spec in a.model or []:
        name, path = _data_arg(spec)
        if name is not None and name in ds_names:
            models[name] = path
        else:
            model = spec
    if a.steps is not None and a.steps < 1:
        raise ParameterError(f"--steps must be a positive integer, got {a.steps}")
    if a.limit is not None and a.limit < 1:
        raise ParameterError(f"--limit must be a positive integer, got {a.limit}")
    if a.batch is not None and a.batch < 1:
        raise ParameterError(f"--batch must be a positive integer, got {a.batch}")
    if a.tile is not None and a.tile < 32:
        raise ParameterError(f"--tile must be at least 32 pixels, got {a.tile}")
    if a.size is not None and a.size < 8:
        raise ParameterError(f"--size must be an integer ≥ 8, got {a.size}")
    opts = runner.RunOptions(
        out=a.out, data=data, lists=lists, model=model, models=models, steps=a.steps,
        seed=a.seed, size=a.size if a.preset else None, crop=a.crop if a.preset else None,
        limit=a.limit, device=a.device, dtype=a.dtype, batch=a.batch, tile=a.tile,
        fast=a.fast, save_images=a.save_images, fid=a.fid,
        kid=a.kid, grid=a.grid, shard=_shard(a.shard) if a.shard else (0, 1),
        metrics=None, progress=False if a.no_progress else None, log=_log)
    if a.kid:
        opts.fid = True
    try:
        out = runner.run(preset, opts)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_interrupted(a.out)) from None
    if out["summary"]:
        rows = summary.aggregate(runner.plan_json(out["plan"], opts),
                                 list(res.load(a.out)[0].values()))
        stored = runner.plan_json(out["plan"], opts)
        shown = [m for m in stored["preset"]["metrics"] if m in summary.METRIC_ORDER
                 and m not in ("nfe", "time", "fid", "kid")] or ["psnr", "ssim"]
        for r in rows:
            v = (summary.paper_text(stored, r, shown)
                 if r["psnr"] is not None else r["status"])
            # the images the shown means are over (a metric may miss on some of the n)
            k = min((r.get("n_" + m, r["n"]) for m in shown if r.get(m) is not None),
                    default=r["n"])
            print(f"{r['dataset']}/{r['task']}/{r['method']}: {v} "
                  f"({k}/{r['n_expected']} images"
                  + (f"; {r['status']}" if r["status"].startswith("partial") else "") + ")")
        print(f"wrote {out['summary']}")
    else:
        print(f"{out['records']} results written to {a.out}")
    return 0


def _interrupted(out) -> str:
    """What an interrupted run kept (every finished image's line is on disk) and how to go on:
    the message of the KeyboardInterrupt the CLI prints."""
    from . import results as res

    try:
        n = (sum("error" not in r for r in res.load(out)[0].values())
             if os.path.isdir(out) else 0)
    except (OSError, DmirError, ValueError):
        n = 0
    if not n:
        return f"interrupted; no results were written to {out}"
    return (f"interrupted; the {n} results finished so far are kept in {out}: run the same "
            f"command again to resume (finished images are skipped)")


def fid_main(a) -> int:
    """``dmir metrics fid DIR1 DIR2 [--kid]``."""
    from .fid import fid_folders

    if len(a.paths) != 2:
        raise ParameterError("dmir metrics fid needs two folders: dmir metrics fid DIR1 DIR2")
    for p in a.paths:
        if not os.path.isdir(p):
            raise InputError(f"'{p}' is not a folder")
    v = fid_folders(a.paths[0], a.paths[1], with_kid=a.kid, device=a.device)
    fid = v["fid"] if v["fid"] > 0 else 0.0     # rounding can give -0.0000 for equal sets
    print(f"FID {fid:.4f} ({v['n1']} and {v['n2']} images)")
    if a.kid:
        print(f"KID {v['kid']:.6f} ± {v['kid_std']:.6f}")
    return 0
