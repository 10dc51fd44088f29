"""Exact-posterior accuracy benchmark: every solver against the closed-form posterior.

Gaussian-mixture priors on small gray images (flip-symmetric ``sym`` and non-symmetric
``asym``; 4×4 and 8×8), operators inpainting / ×2 average pooling / Walsh–Hadamard CS / separable
blur, σ_y ∈ {0, 0.05}: the posterior p(x | y) is a Gaussian mixture in closed form. For each
problem × method, N posterior samples are drawn in one batch and scored (see
:mod:`dmir.posterior_eval` for the estimators):

* SW  — sliced Wasserstein-2 to N exact posterior samples (500 directions);
* ME  — ‖mean(samples) − exact posterior mean‖ / √D;
* VR  — total variance ratio tr Cov(samples) / tr Cov(posterior);

next to the reference points ``prior`` (prior samples), ``A⁺y+null`` (A⁺y + (I − A⁺A)x_prior)
and ``floor`` (a second exact sample set: the Monte-Carlo floor of SW at this N).

    python benchmarks/posterior.py                       # default: the 16 4×4 problems
    python benchmarks/posterior.py --problems all        # all 32 (8×8 too; ~30 min on 2 cores)
    python benchmarks/posterior.py --problems sym8-inpainting-0 asym8-blur-0.05 \\
        --methods ddnm ddnm-equs --samples 1000 --steps-override dps=200

Prints markdown tables and writes benchmarks/results/posterior.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from dmir import posterior_eval as pe
from dmir import solvers


def default_problems() -> list[str]:
    return [n for n in pe.all_problem_names() if pe.parse_problem(n)[1] == 4]


def parse_steps(items) -> dict:
    out = {}
    for it in items or []:
        for part in it.split(","):
            if not part:
                continue
            k, _, v = part.partition("=")
            if not v:
                raise SystemExit(f"--steps-override expects METHOD=STEPS, got {part!r}")
            out[k.strip()] = int(v)
    return out


def _f(v, d=3):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.{d}f}"


def _short(name):
    kind, size, op, s = pe.parse_problem(name)
    return f"{kind}{size} {op} {s:g}"


def tables(data, metric="sw") -> str:
    """One table: rows = references + methods, columns = problems."""
    probs = [p["name"] for p in data["problems"]]
    refs = {p["name"]: p["references"] for p in data["problems"]}
    methods = list(dict.fromkeys(r["method"] for r in data["results"]))
    by = {(r["problem"], r["method"]): r for r in data["results"]}
    d = 4 if metric == "mean_err" else (2 if metric == "var_ratio" else 3)
    head = "| method | " + " | ".join(_short(p) for p in probs) + " |"
    lines = [head, "|---|" + "---:|" * len(probs)]
    for label, key in (("*prior*", "prior"), ("*A⁺y+null*", "pinv_null"),
                       ("*floor (exact)*", "floor")):
        lines.append(f"| {label} | " + " | ".join(_f(refs[p][key][metric], d) for p in probs)
                     + " |")
    if metric == "mean_err":
        lines.append("| *MC s.e.* | " + " | ".join(_f(refs[p]["mean_se"], d) for p in probs)
                     + " |")
    for m in methods:
        cells = []
        for p in probs:
            r = by.get((p, m))
            if r is None:
                cells.append("")
            elif r["status"] != "ok":
                cells.append("n/a")
            else:
                v = r[metric]
                mark = ""
                if metric == "sw" and v >= refs[p]["prior"]["sw"]:
                    mark = " ✗"          # does not beat prior-only samples
                cells.append(_f(v, d) + mark)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(data) -> list[dict]:
    """Per method over the problems it ran on: median SW/floor, median SW/prior, median |VR-1|,
    how many problems it beats the prior on, total time."""
    refs = {p["name"]: p["references"] for p in data["problems"]}
    out = {}
    for r in data["results"]:
        s = out.setdefault(r["method"], dict(method=r["method"], sw_floor=[], sw_prior=[],
                                             var_ratio=[], beats_prior=0, ok=0, na=[],
                                             time_s=0.0))
        if r["status"] != "ok":
            s["na"].append(f"{r['problem']}: {r['status']}")
            continue
        ref = refs[r["problem"]]
        s["ok"] += 1
        s["sw_floor"].append(r["sw"] / ref["floor"]["sw"])
        s["sw_prior"].append(r["sw"] / ref["prior"]["sw"])
        s["var_ratio"].append(r["var_ratio"])
        s["beats_prior"] += r["sw"] < ref["prior"]["sw"]
        s["time_s"] += r["time_s"]
    res = []
    for s in out.values():
        med = (lambda v: statistics.median(v) if v else float("nan"))  # noqa: E731
        res.append(dict(method=s["method"], problems_ok=s["ok"], beats_prior=s["beats_prior"],
                        median_sw_over_floor=med(s["sw_floor"]),
                        max_sw_over_floor=max(s["sw_floor"], default=float("nan")),
                        median_sw_over_prior=med(s["sw_prior"]),
                        median_var_ratio=med(s["var_ratio"]), time_s=s["time_s"],
                        not_available=s["na"]))
    return res


def summary_table(rows) -> str:
    lines = ["| method | ok | beats prior | median SW/floor | max SW/floor | median SW/prior | "
             "median VR | time s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['problems_ok']} | {r['beats_prior']} | "
                     f"{_f(r['median_sw_over_floor'], 2)} | {_f(r['max_sw_over_floor'], 2)} | "
                     f"{_f(r['median_sw_over_prior'], 3)} | {_f(r['median_var_ratio'], 2)} | "
                     f"{r['time_s']:.1f} |")
    return "\n".join(lines)


def equs_effect(data) -> list[dict]:
    """Per base method and prior kind: the mean over problems of SW(variant) / SW(base)."""
    by = {(r["problem"], r["method"]): r for r in data["results"] if r["status"] == "ok"}
    kinds = {p["name"]: p["prior"] for p in data["problems"]}
    rows = []
    bases = list(dict.fromkeys(pe.base_method(r["name"]) for r in data["results"]))
    for b in bases:
        for variant in ("-equs", "-equs+", "-equs(eps-back)"):
            m = b + variant
            if not any(k[1] == m for k in by):
                continue
            row = dict(base=b, variant=m)
            for kind in pe.PRIOR_KINDS:
                ratios = [by[(p, m)]["sw"] / by[(p, b)]["sw"] for p in kinds
                          if kinds[p] == kind and (p, m) in by and (p, b) in by]
                row[kind] = statistics.mean(ratios) if ratios else float("nan")
                row[f"{kind}_n"] = len(ratios)
            rows.append(row)
    return rows


def equs_table(rows) -> str:
    lines = ["| variant | SW / SW(base), sym prior | SW / SW(base), asym prior |",
             "|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {_f(r['sym'], 2)} | {_f(r['asym'], 2)} |")
    return "\n".join(lines)


def asymmetry_table(data) -> str:
    seen, lines = set(), []
    for p in data["problems"]:
        key = (p["prior"], p["size"])
        if key in seen:
            continue
        seen.add(key)
        a = p["prior_flip_asymmetry"]
        if not lines:
            ts = list(a["eps_rel"])
            lines = ["| prior | max abs(log p(x) − log p(Fx)) | " +
                     " | ".join(f"rel. ε change t={t}" for t in ts) + " |",
                     "|---|---:|" + "---:|" * len(ts)]
        lines.append(f"| {p['prior']}{p['size']} | {a['logp_max_abs']:.2e} | " +
                     " | ".join(f"{v:.2e}" for v in a["eps_rel"].values()) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=400, help="posterior samples per run (N)")
    ap.add_argument("--methods", nargs="*", default=None,
                    help="registry names (default: all of solvers.names() plus the DDNM "
                         "diagnostics ddnm(eta=0) and ddnm-equs(eps-back))")
    ap.add_argument("--no-extras", action="store_true", help="registry methods only")
    ap.add_argument("--problems", nargs="*", default=None,
                    help="problem names like sym8-inpainting-0.05, or 'all' (default: the "
                         "16 4×4 problems)")
    ap.add_argument("--steps-override", nargs="*", default=None, metavar="METHOD=STEPS",
                    help="e.g. dps=200 (a base name applies to its -equs/-equs+ variants)")
    ap.add_argument("--directions", type=int, default=500, help="SW projection directions")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: these tensors are tiny and extra threads "
                         "only add synchronisation cost)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "posterior.json"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.problems is None:
        probs = default_problems()
    elif a.problems == ["all"]:
        probs = pe.all_problem_names()
    else:
        probs = a.problems
        for p in probs:
            pe.parse_problem(p)
    if a.methods:
        extras = {lbl: spec for spec in pe.default_methods(True) if not isinstance(spec, str)
                  for lbl in [spec[0]]}
        methods = [extras.get(m, m) for m in a.methods]
    else:
        methods = pe.default_methods(not a.no_extras)
    steps = parse_steps(a.steps_override)
    t0 = time.perf_counter()

    def progress(r):
        s = (f"SW {r['sw']:.3f} ME {r['mean_err']:.4f} VR {r['var_ratio']:.2f} "
             f"{r['time_s']:.1f}s" if r["status"] == "ok" else r["status"])
        print(f"  {r['problem']:22s} {r['method']:22s} {s}", flush=True)

    data = pe.evaluate(probs, methods, n=a.samples, seed=a.seed, steps_override=steps,
                       n_dirs=a.directions, progress=progress)
    elapsed = time.perf_counter() - t0
    data["summary"] = summary(data)
    data["equs_effect"] = equs_effect(data)
    env = dict(torch=torch.__version__, threads=torch.get_num_threads(),
               cpu_count=os.cpu_count(), machine=platform.machine(),
               samples=a.samples, directions=a.directions, seed=a.seed, steps_override=steps,
               registered=solvers.names(), elapsed_s=elapsed)
    data["env"] = env
    print()
    print(f"Exact-posterior accuracy: N = {a.samples} samples per run, SW2 over "
          f"{a.directions} directions, seed {a.seed}; steps: method defaults"
          + (f", overrides {steps}" if steps else "") + f"; {len(probs)} problems × "
          f"{len(methods)} methods in {elapsed:.0f} s ({env['threads']} thread(s))")
    print("\n### Sliced W2 to exact posterior samples (lower is better; ✗ = not better than "
          "prior samples)\n")
    print(tables(data, "sw"))
    print("\n### Mean error ‖mean − exact mean‖/√D\n")
    print(tables(data, "mean_err"))
    print("\n### Variance ratio tr Cov(samples) / tr Cov(posterior) (1 = exact)\n")
    print(tables(data, "var_ratio"))
    print("\n### Summary over problems\n")
    print(summary_table(data["summary"]))
    print("\n### EquS: mean SW(variant)/SW(base) on the flip-symmetric vs non-symmetric prior\n")
    print(equs_table(data["equs_effect"]))
    print("\n### Flip asymmetry of the priors (0 = flip invariant)\n")
    print(asymmetry_table(data))
    na = [f"{r['problem']} {r['method']}: {r['status']}" for r in data["results"]
          if r["status"] != "ok"]
    if na:
        print("\nNot available:\n" + "\n".join(f"- {s}" for s in na))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1, default=float))
    print(f"\nwrote {out} ({elapsed:.0f} s)")


if __name__ == "__main__":
    main()
